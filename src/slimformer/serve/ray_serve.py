"""`slimformer serve BUNDLE --ray`: the same classifier as a Ray Serve deployment.

Batching is Ray Serve's own `@serve.batch` (a fixed window, `--max-batch` / `--max-wait-ms`); the model runs on
a thread of its own so the replica's event loop keeps accepting requests while a batch runs (ray#40328).
Replicas (`--replicas N` or `--autoscale MIN:MAX`) are spread over the cluster, each with `num_cpus` equal to its
model threads; `max_queued_requests` (`--max-queue`) makes the proxy answer 503 when they are all busy. The
HTTP API is the plain server's (/v1/classify or /v1/embed, /v1/info, /healthz, /readyz) with the same request schema and
limits; Ray's HTTP proxy sits in front of it. Local Ray unless `--ray-address`.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from ..errors import SlimformerError
from .app import (
    ANSWER_PATHS,
    ServeSettings,
    batch_invariance,
    bundle_task,
    endpoint,
    key_matches,
    read_manifest,
    request_model,
    wrong_endpoint,
)
from .batcher import PaddingSplitter

RAY_WAIT_MS = 5.0


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None
    replicas: int = 1
    autoscale: tuple[int, int] | None = None

    @classmethod
    def parse(cls, address: str | None, replicas: int, autoscale: str | None) -> RayOptions:
        bounds = None
        if autoscale:
            low, sep, high = autoscale.partition(":")
            if not sep or not low.isdigit() or not high.isdigit() or not 0 < int(low) <= int(high):
                raise SlimformerError(f"--autoscale takes MIN:MAX replicas (1 <= MIN <= MAX), got '{autoscale}'")
            bounds = (int(low), int(high))
        return cls(address, replicas, bounds)


class Classifier:
    """One replica: the bundle loaded once, batches from `@serve.batch` run on a model thread."""

    def __init__(self, settings: dict, threads: int):
        from ..runtimes import load_predictor

        self.settings = ServeSettings(**settings)
        # @serve.batch has a fixed window only: --max-wait-ms, else 5 ms (Ray Serve's own default is 10)
        self.wait_ms = RAY_WAIT_MS if self.settings.max_wait_ms is None else self.settings.max_wait_ms
        self.predictor = load_predictor(self.settings.bundle, threads=threads)
        self.threads = threads
        self.manifest = read_manifest(self.settings.bundle)
        self.task = bundle_task(self.settings.bundle)
        self.endpoint = endpoint(self.task)
        self.body_model = request_model(self.settings.max_texts, self.settings.max_chars, self.task)
        self.key = Path(self.settings.api_key_file).read_text().strip().encode() if self.settings.api_key_file \
            else None
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="slimformer-model")
        self.splitter = PaddingSplitter(self.predictor.forward)
        self.classify_batch.set_max_batch_size(self.settings.max_batch)
        self.classify_batch.set_batch_wait_timeout_s(self.wait_ms / 1e3)
        for n in (1, 4, min(16, self.settings.max_batch)):  # warm up, and seed the splitter's cost model
            for words in (3, 12, 40):
                self.run_batch([" ".join(["warm"] * words)] * n)

    def run_batch(self, texts: list[str]) -> np.ndarray:
        return self.endpoint.rows(self.splitter(self.predictor.tokenize(texts)))

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def classify_batch(self, texts: list[str]) -> list[np.ndarray]:
        rows = await asyncio.get_running_loop().run_in_executor(self.executor, self.run_batch, texts)
        return list(rows)

    def info(self) -> dict:
        s = self.settings
        return {"state": "ready", "bundle": str(Path(s.bundle).resolve()), "runtime": self.predictor.runtime,
                "task": self.task, "endpoint": self.endpoint.path,
                "labels": self.predictor.labels, "max_length": self.predictor.max_length,
                "batch_invariance": batch_invariance(self.manifest),
                "batching": {"policy": "ray-serve-batch", "max_batch": s.max_batch, "max_wait_ms": self.wait_ms},
                "limits": {"max_texts": s.max_texts, "max_chars": s.max_chars, "max_body_bytes": s.max_body_bytes,
                           "timeout_s": s.timeout_s, "max_queue": s.max_queue, "api_key": bool(self.key)},
                "threads_per_replica": self.threads}

    async def __call__(self, request: Request) -> JSONResponse:
        path = request.url.path.rstrip("/")
        if path in ("/healthz", "/readyz"):
            return JSONResponse({"status": "ok" if path == "/healthz" else "ready"})
        if path not in (*ANSWER_PATHS, "/v1/info"):
            return JSONResponse({"detail": "Not Found"}, 404)
        if self.key and not key_matches(request.headers.get("x-api-key") or
                                        request.headers.get("authorization", "").removeprefix("Bearer "), self.key):
            return JSONResponse({"detail": "missing or wrong API key"}, 401, {"WWW-Authenticate": "Bearer"})
        if path == "/v1/info":
            return JSONResponse(self.info())
        if request.method != "POST":
            return JSONResponse({"detail": "Method Not Allowed"}, 405)
        if path != self.endpoint.path:
            return JSONResponse({"detail": wrong_endpoint(path, self.task)}, 404)
        raw = await request.body()
        if len(raw) > self.settings.max_body_bytes:
            return JSONResponse({"detail": f"request body over the limit of {self.settings.max_body_bytes} bytes"},
                                413)
        from pydantic import ValidationError

        try:
            body = self.body_model.model_validate_json(raw)
        except ValidationError as e:
            return JSONResponse({"detail": json.loads(e.json(include_url=False))}, 422)
        rows = await asyncio.gather(*(self.classify_batch(t) for t in body.texts))
        return JSONResponse({**self.endpoint.body(rows, self.predictor.labels, body),
                             "model": (self.manifest.get("bundle") or {}).get("variant") or Path(
                                 self.settings.bundle).name})


def application(settings: ServeSettings, options: RayOptions, threads: int):
    """The Ray Serve application: the deployment with its replicas, back-pressure and resources."""
    scaling = ({"autoscaling_config": {"min_replicas": options.autoscale[0], "max_replicas": options.autoscale[1],
                                       "target_ongoing_requests": settings.max_batch}}
               if options.autoscale else {"num_replicas": options.replicas})
    deployment = serve.deployment(Classifier, name="slimformer").options(
        max_ongoing_requests=max(2 * settings.max_batch, 8), max_queued_requests=settings.max_queue,
        ray_actor_options={"num_cpus": threads}, **scaling)
    return deployment.bind(asdict(settings), threads)


def start(settings: ServeSettings, options: RayOptions, on_signal=None) -> None:
    """Connect to (or start) Ray, start Serve's HTTP proxy on host:port, deploy and wait until healthy.

    `on_signal` becomes the SIGTERM/SIGINT handler once Ray is up (ray.init installs its own)."""
    import ray

    from ..hardware import cores_available

    replicas = options.autoscale[1] if options.autoscale else options.replicas
    threads = settings.threads or (1 if options.address else max(1, cores_available() // replicas))
    if not ray.is_initialized():
        ray.init(address=options.address, include_dashboard=False, log_to_driver=False,
                 **({} if options.address else {"num_cpus": cores_available()}))
    if on_signal:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
    serve.start(http_options={"host": settings.host, "port": settings.port,
                              "request_timeout_s": settings.timeout_s})
    serve.run(application(settings, options, threads), name="slimformer", route_prefix="/")


def run_ray_server(settings: ServeSettings, options: RayOptions) -> None:
    """Serve until SIGTERM/SIGINT, then shut Serve (and a local Ray) down; exit 0."""
    import ray

    stop = threading.Event()
    start(settings, options, on_signal=lambda *_: stop.set())  # a signal while deploying stops right after
    print(f"Ray Serve: http://{settings.host}:{settings.port}{endpoint(bundle_task(settings.bundle)).path}",
          flush=True)
    stop.wait()
    serve.shutdown()
    ray.shutdown()
