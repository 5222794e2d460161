"""What is measured on a loaded predictor. Runs inside the variant's own process (see worker.py).

A scenario is an object the worker runs from a list (`SCENARIOS`, chosen by `BenchSettings.scenarios`): each takes
the loaded predictor in a `Run` and returns its own part of the variant's result (the keys it owns in results.json,
docs/results-schema.md). Adding one (a server scenario, say) is a class here and its name in the list. A scenario
knows nothing of the runtime behind the Predictor, nor of the task behind its answers (tasks/scoring.py), and the
runtime nothing of timing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..runtimes import Predictor
from .energy import EnergyMeter
from .stats import LatencyStats

Progress = Callable[[str, int, int], None]


def _quiet(stage: str, done: int, total: int) -> None:
    pass


def answers(predictor: Predictor, texts: list[str], batch_size: int, progress: Progress = _quiet,
            stage: str = "answers"):
    """The task's answers to every text, in order, in batches of `batch_size` padded to their longest text.

    Batch 1 is the mode whose latency is reported; padded batches are what offline scoring and a dynamic-batching
    server run. Both are kept: a variant whose answers move between them depends on its batch-mates."""
    chunk = batch_size * max(1, 256 // batch_size)  # whole batches: the same batches one call would make
    parts = []
    for i in range(0, len(texts), chunk):
        parts.append(predictor.answers(texts[i:i + chunk], batch_size))
        progress(stage, min(i + chunk, len(texts)), len(texts))
    return predictor.scoring.join(parts)


def latency(predictor: Predictor, texts: list[str], warmup: int,
            progress: Progress = _quiet) -> tuple[dict, np.ndarray]:
    """Batch-1 latency over real texts, each once, in the given order, after `warmup` untimed calls.

    model: forward on the already-tokenized text; end_to_end: tokenize + forward + the task's answer (a label, a
    vector).
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
               meter: EnergyMeter | None = None, warm_runs: int = 0) -> dict:
    """Offline end-to-end throughput at one batch size: texts/s, `repeats` times, median and spread.

    Each repeat scores batches of real texts (cycling through `texts` in order, each batch padded to its longest)
    until `min_seconds` have passed or `min_texts` texts were scored, whichever comes first, after one untimed
    batch and `warm_runs` untimed repeats (a GPU pays on first use of each padded shape: an H200 ran the first
    repeat at batch 8 in fp16 5.7× slower than the third). One short pass would make a number that does not
    repeat. With a `meter`, the energy of the timed repeats is measured too (joules per 1,000 texts; see
    energy.py)."""
    batches = [texts[i:i + batch_size] for i in range(0, len(texts), batch_size)]
    # one forward pass per batch: predict's own default would split a batch of 256 into passes of 32
    predictor.predict(batches[0], batch_size)  # warm-up for this batch shape
    clock, k = time.perf_counter, 0

    def one_run() -> tuple[int, float]:
        nonlocal k
        done, start = 0, clock()
        while True:
            batch = batches[k % len(batches)]
            predictor.predict(batch, batch_size)
            k += 1
            done += len(batch)
            seconds = clock() - start
            if seconds >= min_seconds or done >= min_texts:
                return done, seconds

    for _ in range(warm_runs):
        one_run()
    rates, scored = [], 0
    reading = meter.start() if meter else None
    for r in range(repeats):
        done, seconds = one_run()
        rates.append(done / seconds)
        scored += done
        progress(f"throughput (batch {batch_size})", r + 1, repeats)
    energy = meter.stop(reading, scored) if meter else None
    median = float(np.median(rates))
    return {"batch_size": batch_size, "texts_per_s": round(median, 2), "runs": [round(x, 2) for x in rates],
            "spread_pct": round(100 * (max(rates) - min(rates)) / median, 1), "texts_per_run": done,
            **({"energy": energy} if meter else {})}


@dataclass
class Run:
    """What every scenario of one variant's process shares: the loaded predictor, the data, the settings (as the
    spec carries them), the worker's spec (where files go) and its progress callback."""

    predictor: Predictor
    dataset: Any
    settings: dict
    spec: dict
    progress: Progress = _quiet
    gpu: bool = False  # NVML's counters are read (a driver is present)
    _timed: list[str] | None = field(default=None, repr=False)

    def timed_texts(self) -> list[str]:
        """The decision split's texts in a fixed shuffled order: nothing is timed on held-out texts."""
        if self._timed is None:
            texts = self.dataset[self.settings["splits"][0]].texts
            order = np.random.default_rng(self.settings["order_seed"]).permutation(len(texts))
            self._timed = [texts[i] for i in order]
        return self._timed


class Scenario:
    name: ClassVar[str]
    owns: ClassVar[tuple[str, ...]]  # the keys of the variant's result it writes

    def run(self, run: Run) -> dict:
        raise NotImplementedError


class Answers(Scenario):
    """The task's answers to every text of every split, at batch 1 and in padded batches, written to the files the
    spec names (answer_paths[split][mode]); the parent scores them (bench.runner.quality)."""

    name, owns = "answers", ("answers",)

    def run(self, run: Run) -> dict:
        scoring = run.predictor.scoring
        for split in run.settings["splits"]:
            texts = run.dataset[split].texts
            for mode, size in (("batch1", 1), ("batched", run.settings["accuracy_batch_size"])):
                scoring.save(run.spec["answer_paths"][split][mode],
                             answers(run.predictor, texts, size, run.progress, f"{split} answers ({mode})"))
        return {"answers": {"task": run.predictor.task.name, "modes": {"batch1": 1,
                                                                       "batched": run.settings["accuracy_batch_size"]}}}


class SingleStream(Scenario):
    """Batch-1 latency over real texts (MLPerf's single stream): model-only and end-to-end; raw times kept."""

    name, owns = "latency", ("latency_ms",)

    def run(self, run: Run) -> dict:
        texts = run.timed_texts()
        stats, e2e_ms = latency(run.predictor, texts[:run.settings["latency_samples"] or len(texts)],
                                run.settings["warmup"], run.progress)
        np.save(run.spec["latencies_path"], e2e_ms.astype(np.float32))
        return {"latency_ms": stats}


class Offline(Scenario):
    """Offline throughput at each batch size (MLPerf's offline), with the energy of the fastest."""

    name, owns = "throughput", ("throughput", "energy")

    def run(self, run: Run) -> dict:
        s = run.settings
        meter = EnergyMeter(gpu=run.gpu)  # joules per 1,000 texts of the throughput runs (RAPL, NVML)
        on_gpu = not str(run.predictor.describe().get("device", "cpu")).startswith("cpu")
        results = [throughput(run.predictor, run.timed_texts(), bs, s["throughput_min_s"], s["throughput_min_texts"],
                              s["throughput_repeats"], run.progress, meter, warm_runs=int(on_gpu))
                   for bs in s["batch_sizes"]]
        best = max(results, key=lambda t: t["texts_per_s"], default=None)  # the batch size worth serving
        return {"throughput": results, "energy": {"batch_size": best["batch_size"], **best["energy"]} if best else None}


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (Answers(), SingleStream(), Offline())}
