"""What is measured on a loaded predictor. Runs inside the variant's own process (see worker.py).

A scenario knows nothing of the runtime behind the Predictor, and the runtime nothing of timing.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from ..data import Split
from ..metrics import classification_metrics
from ..runtimes import Predictor
from .stats import LatencyStats

Progress = Callable[[str, int, int], None]


def _quiet(stage: str, done: int, total: int) -> None:
    pass


def accuracy(predictor: Predictor, split: Split, label_map: np.ndarray, batch_size: int = 32,
             progress: Progress = _quiet) -> tuple[dict, np.ndarray]:
    """Accuracy and macro-F1 over the whole split; `label_map` maps data label -> model label index."""
    parts = []
    for i in range(0, len(split), batch_size):
        parts.append(predictor.forward(predictor.tokenize(split.texts[i:i + batch_size])))
        progress("accuracy", min(i + batch_size, len(split)), len(split))
    logits = np.concatenate(parts)
    return classification_metrics(label_map[split.labels], logits.argmax(-1)), logits


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


def throughput(predictor: Predictor, texts: list[str], batch_size: int, progress: Progress = _quiet) -> dict:
    """Offline end-to-end throughput: texts/s over the texts in batches padded to their longest."""
    batches = [texts[i:i + batch_size] for i in range(0, len(texts), batch_size)]
    predictor.predict(batches[0])  # warm-up for this batch shape
    start = time.perf_counter()
    for i, batch in enumerate(batches):
        predictor.predict(batch)
        progress(f"throughput (batch {batch_size})", i + 1, len(batches))
    seconds = time.perf_counter() - start
    return {"batch_size": batch_size, "texts": len(texts), "seconds": round(seconds, 4),
            "texts_per_s": round(len(texts) / seconds, 2)}
