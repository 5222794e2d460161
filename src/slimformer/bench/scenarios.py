"""What is measured on a loaded predictor. Runs inside the variant's own process (see worker.py).

A scenario knows nothing of the runtime behind the Predictor, and the runtime nothing of timing.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from ..runtimes import Predictor
from .energy import EnergyMeter
from .stats import LatencyStats

Progress = Callable[[str, int, int], None]


def _quiet(stage: str, done: int, total: int) -> None:
    pass


def logits(predictor: Predictor, texts: list[str], batch_size: int, progress: Progress = _quiet,
           stage: str = "accuracy") -> np.ndarray:
    """Logits of every text, in order, in batches of `batch_size` padded to their longest text.

    Batch 1 is the mode whose latency is reported; padded batches are what offline scoring and a dynamic-batching
    server run. Both are kept: a variant whose answers move between them depends on its batch-mates."""
    chunk = batch_size * max(1, 256 // batch_size)  # whole batches: the same batches one call would make
    parts = []
    for i in range(0, len(texts), chunk):
        parts.append(predictor.logits(texts[i:i + chunk], batch_size))
        progress(stage, min(i + chunk, len(texts)), len(texts))
    return np.concatenate(parts) if parts else predictor.logits(texts, batch_size)


def latency(predictor: Predictor, texts: list[str], warmup: int,
            progress: Progress = _quiet) -> tuple[dict, np.ndarray]:
    """Batch-1 latency over real texts, each once, in the given order, after `warmup` untimed calls.

    model: forward on the already-tokenized text; end_to_end: tokenize + forward + label lookup.
    Returns the statistics and the raw end-to-end times in ms (for distribution plots).
    """
    encoded = [predictor.tokenize([t]) for t in texts]
    for i in range(warmup):
        predictor.predict([texts[i % len(texts)]])
    clock = time.perf_counter
    model, e2e = [], []
    for i, enc in enumerate(encoded):
        start = clock()
        predictor.forward(enc)
        model.append(clock() - start)
        progress("latency (model)", i + 1, len(texts))
    for i, text in enumerate(texts):
        start = clock()
        predictor.predict([text])
        e2e.append(clock() - start)
        progress("latency (end-to-end)", i + 1, len(texts))
    return ({"model": LatencyStats.from_seconds(model).to_dict(),
             "end_to_end": LatencyStats.from_seconds(e2e).to_dict()}, np.asarray(e2e) * 1e3)


def throughput(predictor: Predictor, texts: list[str], batch_size: int, min_seconds: float = 2.0,
               min_texts: int = 1024, repeats: int = 3, progress: Progress = _quiet,
               meter: EnergyMeter | None = None) -> dict:
    """Offline end-to-end throughput at one batch size: texts/s, `repeats` times, median and spread.

    Each repeat scores batches of real texts (cycling through `texts` in order, each batch padded to its longest)
    until `min_seconds` have passed or `min_texts` texts were scored, whichever comes first, after one untimed
    batch. One short pass would make a number that does not repeat. With a `meter`, the energy of the timed
    repeats is measured too (joules per 1,000 texts; see energy.py)."""
    batches = [texts[i:i + batch_size] for i in range(0, len(texts), batch_size)]
    # one forward pass per batch: predict's own default would split a batch of 256 into passes of 32
    predictor.predict(batches[0], batch_size)  # warm-up for this batch shape
    rates, clock, k, scored = [], time.perf_counter, 0, 0
    reading = meter.start() if meter else None
    for r in range(repeats):
        done, start = 0, clock()
        while True:
            batch = batches[k % len(batches)]
            predictor.predict(batch, batch_size)
            k += 1
            done += len(batch)
            seconds = clock() - start
            if seconds >= min_seconds or done >= min_texts:
                break
        rates.append(done / seconds)
        scored += done
        progress(f"throughput (batch {batch_size})", r + 1, repeats)
    energy = meter.stop(reading, scored) if meter else None
    median = float(np.median(rates))
    return {"batch_size": batch_size, "texts_per_s": round(median, 2), "runs": [round(x, 2) for x in rates],
            "spread_pct": round(100 * (max(rates) - min(rates)) / median, 1), "texts_per_run": done,
            **({"energy": energy} if meter else {})}
