"""Dynamic micro-batching: concurrent requests are coalesced into batches, run one at a time off the event loop.

Two policies decide how long an idle model waits for company:

- fixed (`max_wait_s`), as Triton's `max_queue_delay` and Ray Serve's `batch_wait_timeout_s`: wait until
  `max_batch` texts are queued or the oldest has waited `max_wait_s`;
- latency target (`target_p99_s`): the batcher fits its own batch time t(n) ≈ a + b·n online (least squares
  over recent batches; warm-up seeds it) and the arrival rate λ, and waits only when batches of the size queued
  could not keep up with λ (n < λ·t(n)); then only as long as the oldest text still finishes within half the
  target, and it caps the batch size so that one batch takes at most half the target. A text that arrives just
  after a batch started waits for it and then runs in the next, hence the halves. At low load nothing waits
  (a fixed timeout adds its whole wait to every lone request); under load the queue fills while the model
  runs, so batches grow by themselves.

While the model runs, texts queue. The next batch takes the oldest text and, when more are queued than fit,
the texts closest to it in length (characters, a free proxy for tokens): similar lengths pad less. Every text
becomes the oldest in time, so none starves.

The model runs on one dedicated thread: the runtimes' sessions are not shared between threads (OpenVINO's
infer request, torch's process-wide thread setting), and a process runs one batch at a time; `--workers`
adds processes.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np


class QueueFull(Exception):
    """The bounded queue cannot take these texts now (HTTP 503 with Retry-After)."""

    def __init__(self, message: str, retry_after_s: float):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class CostModel:
    """Batch seconds ≈ a + b·n (n: texts, or padded tokens), fit by least squares over the last `window` batches."""

    def __init__(self, window: int = 256, unit: str = "text"):
        self.unit = unit
        self.samples: deque[tuple[int, float]] = deque(maxlen=window)
        self.a, self.b = 0.0, 0.0
        self._since_fit = 0

    def add(self, n: int, seconds: float) -> None:
        self.samples.append((n, seconds))
        self._since_fit += 1
        if self._since_fit >= 8 or len(self.samples) <= 16:
            self._fit()

    def _fit(self) -> None:
        self._since_fit = 0
        n = np.array([s[0] for s in self.samples], dtype=np.float64)
        t = np.array([s[1] for s in self.samples], dtype=np.float64)
        if len(set(n.tolist())) < 2:  # one batch size seen: all of it is the fixed cost
            self.a, self.b = float(np.median(t)), 0.0
            return
        b, a = np.polyfit(n, t, 1)
        self.b = max(float(b), 0.0)
        self.a = max(float(a), 0.0) if b >= 0 else float(np.median(t))

    def predict(self, n: int) -> float:
        return self.a + self.b * n

    def to_dict(self) -> dict:
        return {"fixed_ms": round(self.a * 1e3, 4), f"per_{self.unit}_ms": round(self.b * 1e3, 5),
                "batches": len(self.samples)}


class PaddingSplitter:
    """Run one tokenized batch as sub-batches of similar length when that costs less than padding every text to
    the longest.

    Forward time ≈ a + c·(rows × padded length), fit online over this model's own forward calls. Sorted by
    length, the partition into contiguous groups minimising Σ (a + c·rows_i·length_i) is found by dynamic
    programming (O(n²) for n texts, microseconds at n <= 64). Each group keeps only the columns its own texts
    fill (attention mask), so nothing is tokenized twice; the padding left is what the bundle's measured batch
    invariance covers."""

    def __init__(self, forward: Callable[[dict[str, np.ndarray]], np.ndarray]):
        self.forward = forward
        self.cost = CostModel(unit="token")

    def plan(self, lengths: np.ndarray) -> list[np.ndarray]:
        """Groups of row indices, shortest texts first."""
        order = np.argsort(lengths, kind="stable")
        n = len(order)
        a, c = self.cost.a, self.cost.b
        if n < 2 or c <= 0 or len({s[0] for s in self.cost.samples}) < 2:
            return [order]
        sorted_lengths = lengths[order]
        best = [0.0] + [float("inf")] * n  # best[j]: cost of the first j texts
        cut = [0] * (n + 1)
        for j in range(1, n + 1):
            for i in range(j):
                total = best[i] + a + c * (j - i) * sorted_lengths[j - 1]
                if total < best[j]:
                    best[j], cut[j] = total, i
        groups, j = [], n
        while j > 0:
            groups.append(order[cut[j]:j])
            j = cut[j]
        return groups[::-1]

    def _timed(self, encoded: dict[str, np.ndarray]) -> np.ndarray:
        start = time.perf_counter()
        logits = self.forward(encoded)
        self.cost.add(int(encoded["input_ids"].size), time.perf_counter() - start)
        return logits

    def __call__(self, encoded: dict[str, np.ndarray]) -> np.ndarray:
        mask = encoded.get("attention_mask")
        if mask is None or len(mask) < 2:
            return self._timed(encoded)
        groups = self.plan(mask.sum(axis=1))
        if len(groups) == 1:
            return self._timed(encoded)
        out = None
        for rows in groups:
            filled = np.flatnonzero(mask[rows].any(axis=0))
            columns = slice(filled[0], filled[-1] + 1)  # padding is on one side: the filled columns are contiguous
            logits = self._timed({k: v[rows][:, columns] for k, v in encoded.items()})
            if out is None:
                out = np.empty((len(mask), logits.shape[1]), dtype=logits.dtype)
            out[rows] = logits
        return out


class ArrivalRate:
    """Texts per second arriving over the last `window_s` seconds."""

    def __init__(self, window_s: float = 1.0):
        self.window_s = window_s
        self.times: deque[tuple[float, int]] = deque()
        self.count = 0

    def add(self, now: float, n: int) -> None:
        self.times.append((now, n))
        self.count += n

    def rate(self, now: float) -> float:
        while self.times and self.times[0][0] < now - self.window_s:
            self.count -= self.times.popleft()[1]
        return self.count / self.window_s


@dataclass
class Item:
    text: str
    future: asyncio.Future
    arrived: float
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.size = len(self.text)


@dataclass(frozen=True)
class BatchPolicy:
    max_batch: int = 32
    max_wait_s: float = 0.005
    target_p99_s: float | None = None  # set: the latency-target policy replaces the fixed wait
    max_queue: int = 512  # texts waiting (not counting the batch running)

    def describe(self) -> dict:
        mode = {"policy": "latency-target", "target_p99_ms": self.target_p99_s * 1e3} if self.target_p99_s else \
            {"policy": "fixed-wait", "max_wait_ms": self.max_wait_s * 1e3}
        return {**mode, "max_batch": self.max_batch, "max_queue": self.max_queue}


class Batcher:
    """`await submit(texts)` -> one row of `run_batch`'s output per text; `run_batch(texts)` is called on the
    model thread with at most `max_batch` texts."""

    def __init__(self, run_batch: Callable[[list[str]], np.ndarray], policy: BatchPolicy,
                 executor: ThreadPoolExecutor, on_batch: Callable[[int, float], None] | None = None):
        self.run_batch, self.policy, self.executor = run_batch, policy, executor
        self.on_batch = on_batch or (lambda n, seconds: None)
        self.cost = CostModel()
        self.arrivals = ArrivalRate()
        self.queue: list[Item] = []
        self.running = 0  # texts in the batch on the model thread now
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    # -- admission -------------------------------------------------------------------------------------------
    def depth(self) -> int:
        return len(self.queue)

    def expected_wait_s(self, extra: int = 0) -> float:
        """Time until `extra` more texts would be answered: the running batch, then the queue in full batches."""
        cap = self.batch_cap()
        waiting = len(self.queue) + extra
        batches = -(-waiting // cap)
        return (self.cost.predict(self.running) if self.running else 0.0) + batches * self.cost.predict(cap)

    def submit(self, texts: list[str]) -> list[asyncio.Future]:
        """Queue texts; their futures resolve to output rows. Raises QueueFull when the queue cannot take them."""
        if len(self.queue) + len(texts) > self.policy.max_queue:
            raise QueueFull(f"server busy: {len(self.queue)} texts queued (limit {self.policy.max_queue}); "
                            "retry later", self.expected_wait_s())
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        items = [Item(t, loop.create_future(), now) for t in texts]
        self.queue.extend(items)
        self.arrivals.add(now, len(items))
        self._wake.set()
        return [i.future for i in items]

    # -- policy ----------------------------------------------------------------------------------------------
    def batch_cap(self) -> int:
        """max_batch, or under a latency target the largest batch that takes at most half of it."""
        target = self.policy.target_p99_s
        if not target or self.cost.b <= 0:
            return self.policy.max_batch
        fit = int((target / 2 - self.cost.a) / self.cost.b)
        return max(1, min(self.policy.max_batch, fit))

    def wait_s(self, now: float) -> float:
        """How much longer the idle model should wait before running what is queued (<= 0: run now)."""
        n = len(self.queue)
        cap = self.batch_cap()
        if n >= cap:
            return 0.0
        age = now - self.queue[0].arrived
        if not self.policy.target_p99_s:
            return self.policy.max_wait_s - age
        rate = self.arrivals.rate(now)
        a, b = self.cost.a, self.cost.b
        if rate * b >= 1:  # more arrives than any batch keeps up with: run full batches
            needed = cap
        else:
            needed = min(cap, int(np.ceil(rate * a / (1 - rate * b))))
        if n >= needed or rate <= 0:
            return 0.0
        wait = (needed - n) / rate
        slack = self.policy.target_p99_s / 2 - age - self.cost.predict(needed)
        return min(wait, slack)

    def _take(self) -> list[Item]:
        self.queue = [i for i in self.queue if not i.future.done()]  # timed out or cancelled callers
        cap = self.batch_cap()
        if len(self.queue) <= cap:
            batch, self.queue = self.queue, []
            return batch
        anchor = self.queue[0]
        window = self.queue[1:4 * cap]
        chosen = set(sorted(range(len(window)), key=lambda k: (abs(window[k].size - anchor.size), k))[:cap - 1])
        batch = [anchor] + [window[k] for k in sorted(chosen)]
        self.queue = [window[k] for k in range(len(window)) if k not in chosen] + self.queue[4 * cap:]
        return batch

    # -- the loop --------------------------------------------------------------------------------------------
    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            delay = self.wait_s(time.perf_counter())
            if delay > 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                except TimeoutError:
                    pass
                if self.wait_s(time.perf_counter()) > 0:
                    continue
            batch = self._take()
            if not batch:
                continue
            self.running = len(batch)
            start = time.perf_counter()
            try:
                out = await loop.run_in_executor(self.executor, self.run_batch, [i.text for i in batch])
            except Exception as e:  # a failed batch fails its callers, not the server
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(e)
                continue
            finally:
                self.running = 0
            seconds = time.perf_counter() - start
            self.cost.add(len(batch), seconds)
            self.on_batch(len(batch), seconds)
            for item, row in zip(batch, out, strict=True):
                if not item.future.done():
                    item.future.set_result(row)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for item in self.queue:
            if not item.future.done():
                item.future.cancel()
