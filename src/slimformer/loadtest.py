"""`slimformer loadtest URL`: an async load generator following MLPerf Inference's Server scenario rules.

- Real texts (a dataset's test split or a file) sent in a seeded random order.
- Closed loop: `concurrency` clients, each sending its next query when the last is answered.
- Open loop (the Server scenario): Poisson arrivals at `rate` queries/s, sent at their scheduled times however
  the server is doing; latency counts from the *scheduled* send time, so time spent queueing anywhere (in the
  server, in the generator, in the kernel) is included.
- A run lasts at least `min_duration_s` and `min_queries` queries, never beyond `max_duration_s`; its verdict is
  VALID only when both minimums are met, no query failed, the server kept up
  (completed at least 90% of the scheduled rate) and, with a bound, p99 <= `p99_ms`. How late the generator sent
  (p99) is reported: on a machine shared by client and server it is part of the latency, never subtracted.
- `find_max_qps`: LoadGen's peak-performance mode: a closed-loop run estimates capacity, then a binary search over
  the Poisson rate finds the highest one whose run is VALID under the p99 bound.

The client is raw HTTP/1.1 over keep-alive asyncio connections: a full HTTP library costs the client more CPU
per query than the server spends, and on a shared 2-core machine that would be measured as server latency.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from .bench.stats import LatencyStats
from .errors import SlimformerError

KEPT_UP = 0.9  # completed/scheduled rate under which the server did not keep up


@dataclass(frozen=True)
class LoadSettings:
    url: str
    concurrency: int | None = None  # closed loop
    rate: float | None = None  # open loop (Poisson), queries per second
    min_duration_s: float = 10.0
    min_queries: int = 200
    max_duration_s: float = 60.0
    texts_per_query: int = 1
    p99_ms: float | None = None
    timeout_s: float = 30.0
    max_connections: int = 512
    seed: int = 0
    api_key: str | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "api_key"} | {"api_key": bool(self.api_key)}


def served_path(url: str, api_key: str | None = None) -> str:
    """The endpoint that answers texts on the server at `url`, as its /v1/info names it (/v1/classify, /v1/embed...);
    /v1/classify for a server that does not say."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url.rstrip("/") + "/v1/info",
                                     headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return json.loads(r.read()).get("endpoint") or "/v1/classify"
    except (urllib.error.URLError, OSError, ValueError):
        return "/v1/classify"


class _Client:
    """Keep-alive HTTP/1.1 connections to one host; `post(body) -> status`."""

    def __init__(self, url: str, max_connections: int, api_key: str | None):
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise SlimformerError(f"loadtest takes an http://HOST:PORT URL, got '{url}'")
        self.host, self.port = parts.hostname, parts.port or 80
        self.path = (parts.path.rstrip("/") or "") + served_path(url, api_key)
        auth = f"Authorization: Bearer {api_key}\r\n" if api_key else ""
        self.head = (f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json"
                     f"\r\n{auth}Content-Length: ").encode()
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.open = 0
        self.slots = asyncio.Semaphore(max_connections)

    async def post(self, body: bytes) -> int:
        async with self.slots:
            conn = self.idle.pop() if self.idle else await asyncio.open_connection(self.host, self.port)
            reader, writer = conn
            try:
                writer.write(self.head + str(len(body)).encode() + b"\r\n\r\n" + body)
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                status = int(lines[0].split()[1])
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                await reader.readexactly(int(headers.get("content-length", 0)))
            except BaseException:
                writer.close()
                raise
            if headers.get("connection", "").lower() == "close":
                writer.close()
            else:
                self.idle.append(conn)
            return status

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


def _queries(texts: list[str], per_query: int, seed: int):
    """Request bodies, endlessly, over the texts in a seeded random order (reshuffled every pass)."""
    rng = random.Random(seed)
    order = list(texts)
    while True:
        rng.shuffle(order)
        for i in range(0, len(order) - per_query + 1, per_query):
            yield json.dumps({"texts": order[i:i + per_query]}).encode()


async def _run(settings: LoadSettings, texts: list[str]) -> dict:
    client = _Client(settings.url, settings.max_connections, settings.api_key)
    try:  # one clear error for a server that is not there, rather than a run of failed queries
        _, writer = await asyncio.wait_for(asyncio.open_connection(client.host, client.port), settings.timeout_s)
        writer.close()
    except (OSError, TimeoutError) as e:
        raise SlimformerError(f"cannot reach {settings.url}: {getattr(e, 'strerror', None) or e}") from None
    bodies = _queries(texts, settings.texts_per_query, settings.seed)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    lags: list[float] = []
    clock = time.perf_counter
    start = clock()
    last_done = [start]

    def enough(now: float, issued: int) -> bool:
        elapsed = now - start
        return elapsed >= settings.max_duration_s or (elapsed >= settings.min_duration_s and
                                                      issued >= settings.min_queries)

    async def one(scheduled: float, body: bytes) -> None:
        lags.append(clock() - scheduled)
        try:
            status = await asyncio.wait_for(client.post(body), settings.timeout_s)
        except TimeoutError:
            status = "timeout"
        except (OSError, asyncio.IncompleteReadError, ValueError) as e:
            status = type(e).__name__
        now = clock()
        last_done[0] = now
        if status == 200:
            latencies.append(now - scheduled)
        else:
            errors[str(status)] = errors.get(str(status), 0) + 1

    issued = 0
    if settings.rate:  # open loop: Poisson arrivals at their scheduled times
        rng = np.random.default_rng(settings.seed)
        tasks = set()
        scheduled = start
        while not enough(scheduled, issued):
            scheduled += rng.exponential(1 / settings.rate)
            delay = scheduled - clock()
            await asyncio.sleep(max(delay, 0))  # late or not, let the queries in flight read their answers
            task = asyncio.create_task(one(scheduled, next(bodies)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            issued += 1
        if tasks:
            await asyncio.wait(tasks)
        scheduled_qps = issued / (scheduled - start)
    else:  # closed loop
        async def worker() -> None:
            nonlocal issued
            while not enough(clock(), issued):
                issued += 1
                await one(clock(), next(bodies))

        await asyncio.gather(*(worker() for _ in range(settings.concurrency or 1)))
        scheduled_qps = None
    client.close()
    duration = last_done[0] - start
    done = len(latencies)
    result = {
        "scenario": "server (Poisson)" if settings.rate else f"closed loop x{settings.concurrency or 1}",
        "offered_qps": settings.rate, "scheduled_qps": round(scheduled_qps, 2) if scheduled_qps else None,
        "achieved_qps": round(done / duration, 2) if duration > 0 else 0.0,
        "texts_per_s": round(done * settings.texts_per_query / duration, 2) if duration > 0 else 0.0,
        "queries": issued, "ok": done, "errors": errors, "duration_s": round(duration, 3),
        "latency_ms": LatencyStats.from_seconds(latencies).to_dict() if latencies else None,
        "send_lag_ms_p99": round(float(np.percentile(lags, 99)) * 1e3, 3) if lags else None,
    }
    result["verdict"], result["reasons"] = verdict(result, settings)
    return result


def verdict(result: dict, settings: LoadSettings) -> tuple[str, list[str]]:
    reasons = []
    if result["duration_s"] < settings.min_duration_s:
        reasons.append(f"ran {result['duration_s']:.1f} s < minimum {settings.min_duration_s:g} s")
    if result["queries"] < settings.min_queries:
        reasons.append(f"{result['queries']} queries < minimum {settings.min_queries}")
    if result["errors"]:
        reasons.append(f"{sum(result['errors'].values())} queries failed ({result['errors']})")
    if result["scheduled_qps"] and result["achieved_qps"] < KEPT_UP * result["scheduled_qps"]:
        reasons.append(f"server did not keep up: {result['achieved_qps']} of {result['scheduled_qps']} scheduled q/s")
    p99 = (result["latency_ms"] or {}).get("p99")
    if settings.p99_ms is not None and (p99 is None or p99 > settings.p99_ms):
        reasons.append(f"p99 {p99} ms > bound {settings.p99_ms:g} ms")
    return ("VALID" if not reasons else "INVALID"), reasons


def _loop_factory():
    """uvloop where installed (uvicorn[standard] brings it): less client CPU per query."""
    try:
        import uvloop

        return uvloop.new_event_loop
    except ImportError:
        return None


def run_load(settings: LoadSettings, texts: list[str]) -> dict:
    """One run (closed loop with `concurrency`, or open loop at `rate`)."""
    if not texts:
        raise SlimformerError("loadtest needs at least one text")
    if settings.texts_per_query > len(texts):
        raise SlimformerError(f"--texts-per-request {settings.texts_per_query} > the {len(texts)} texts available")
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(_run(settings, texts))


def find_max_qps(settings: LoadSettings, texts: list[str], steps: int = 7, progress=None) -> dict:
    """The highest Poisson rate whose run is VALID under `settings.p99_ms` (LoadGen's peak-performance search).

    Returns {"max_qps", "best": run, "capacity": closed-loop run, "runs": every run tried}."""
    if settings.p99_ms is None:
        raise SlimformerError("--find-max-qps needs a latency bound: pass --p99-ms")
    progress = progress or (lambda text: None)
    probe = replace(settings, rate=None, concurrency=settings.concurrency or 32,
                    min_duration_s=min(settings.min_duration_s, 3.0), min_queries=min(settings.min_queries, 100))
    capacity = run_load(probe, texts)
    progress(f"capacity (closed loop x{probe.concurrency}): {capacity['achieved_qps']} q/s")
    lo, hi = 0.0, max(capacity["achieved_qps"], 1.0) * 1.2
    runs, best = [], None
    for step in range(steps):
        rate = round((lo + hi) / 2, 2) if step else round(hi / 4, 2)  # first: a rate that should pass
        run = run_load(replace(settings, rate=rate, concurrency=None), texts)
        runs.append(run)
        ok = run["verdict"] == "VALID"
        progress(f"{rate} q/s: p99 {(run['latency_ms'] or {}).get('p99')} ms, {run['verdict']}")
        if ok:
            lo, best = max(lo, rate), run if best is None or rate > best["offered_qps"] else best
        else:
            hi = rate
    return {"max_qps": best["offered_qps"] if best else 0.0, "p99_bound_ms": settings.p99_ms, "best": best,
            "capacity": capacity, "runs": sorted(runs, key=lambda r: r["offered_qps"])}


def plot_runs(runs: list[dict], path: Path, title: str, p99_ms: float | None = None,
              series: dict[str, list[dict]] | None = None) -> Path:
    """Latency percentiles vs offered load (one line per percentile; `series` draws several servers' p99)."""
    from .plotting import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    if series:
        for name, rs in series.items():
            rs = [r for r in rs if r["latency_ms"]]
            ax.plot([r["offered_qps"] for r in rs], [r["latency_ms"]["p99"] for r in rs], marker="o", label=name)
        ax.set_ylabel("p99 latency (ms)")
    else:
        runs = [r for r in runs if r["latency_ms"]]
        for q, style in (("p50", "-"), ("p90", "--"), ("p99", ":")):
            ax.plot([r["offered_qps"] for r in runs], [r["latency_ms"][q] for r in runs], style, marker="o", label=q)
        ax.set_ylabel("latency (ms), from scheduled send")
    if p99_ms:
        ax.axhline(p99_ms, color="red", lw=0.8, label=f"p99 bound {p99_ms:g} ms")
    ax.set_xlabel("offered load (queries/s, Poisson)")
    ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
