"""Benchmark variants on one dataset split, each in its own process, and persist results as they come."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from .. import __version__
from ..cache import read_manifest, write_json
from ..data import check_label_space, load_dataset
from ..errors import DiskFullError, OutputError, SlimformerError
from ..hardware import fingerprint
from ..metrics import agreement, batch_invariance, classification_metrics, per_class_recall
from ..progress import log_line, progress_bar
from ..runtimes import artifact_labels, check_options, default_runtime

SCHEMA_VERSION = 2


def absolute(model: str) -> str:
    """A local path made absolute; anything else (a hub id) as given."""
    return os.path.abspath(model) if os.path.exists(model) else model


def artifact_key(model: str) -> str | None:
    """The content key a built artifact's manifest records (None for a plain checkpoint or a hub id): a variant
    rebuilt in place under the same path is measured again on resume."""
    return read_manifest(Path(model)).get("key") if os.path.isdir(model) else None


@dataclass(frozen=True)
class Variant:
    """A model artifact on a runtime with a fixed thread count."""

    model: str
    runtime: str | None = None  # None: the runtime the artifact's format runs on
    threads: int = 1
    options: dict = field(default_factory=dict)
    name: str = ""

    def resolved(self) -> Variant:
        """The runtime filled in, a local model path made absolute (results stay usable from any directory)."""
        return replace(self, model=absolute(self.model), runtime=self.runtime or default_runtime(self.model))

    def label(self) -> str:
        opts = "".join(f"-{v}" for v in self.options.values())
        return self.name or f"{Path(self.model).name}-{self.runtime}{opts}-t{self.threads}"


@dataclass(frozen=True)
class DataSpec:
    source: str
    text_column: str = "text"
    label_column: str = "label"
    split_column: str | None = None
    seed: int = 42


@dataclass(frozen=True)
class BenchSettings:
    # Answers are measured on every split listed; the first is the decision split (selection, budgets, and the
    # texts timed), the others are held out and only reported.
    splits: tuple[str, ...] = ("validation", "test")
    warmup: int = 20
    latency_samples: int | None = 300  # None: every text of the decision split
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    throughput_min_s: float = 2.0  # each throughput repeat: until this long or that many texts, whichever first
    throughput_min_texts: int = 1024
    throughput_repeats: int = 3
    accuracy_batch_size: int = 32  # the batched mode answers are also measured in
    max_length: int | None = None  # None: each model's own
    cold_start_runs: int = 3
    order_seed: int = 0  # the fixed shuffled order of texts for latency and throughput
    settle_s: float = 1.0  # pause between variant processes


def _thread_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env["TOKENIZERS_PARALLELISM"] = "false"  # tokenizers' own pool would add threads
    return env


def _run_worker(spec: dict, title: str) -> dict:
    """Run one variant in a fresh process and relay its progress; return its result."""
    with tempfile.TemporaryFile("w+") as err, progress_bar(title, None) as update:
        proc = subprocess.Popen([sys.executable, "-m", "slimformer.bench.worker", json.dumps(spec)],
                                stdout=subprocess.PIPE, stderr=err, text=True, env=_thread_env(spec["threads"]))
        result = error = error_kind = None
        for line in proc.stdout:
            event = json.loads(line)
            if event["event"] == "progress":
                update(advance=0, status=f"{event['stage']} {event['done']}/{event['total']}")
            elif event["event"] == "result":
                result = event["result"]
            elif event["event"] == "error":
                error, error_kind = event["message"], event.get("kind")
        proc.wait()
        if error:
            raise (DiskFullError(error) if error_kind == "disk_full" else SlimformerError(error))
        if result is None:
            err.seek(0)
            tail = err.read()[-3000:]
            raise RuntimeError(f"benchmark worker for {spec['model']} exited with {proc.returncode}:\n{tail}")
    return result


def cold_start(variant: Variant, text: str, runs: int, max_length: int | None = None) -> dict:
    """Median wall time of fresh processes that import, load and answer one text, timed from outside (at the
    run's `max_length` unless the variant sets its own: OpenVINO compiles one model per length bucket)."""
    spec = json.dumps({"model": variant.model, "runtime": variant.runtime, "threads": variant.threads,
                       "options": variant.options, "text": text, "max_length": max_length})
    walls, inner = [], []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "slimformer.bench.coldstart", spec], capture_output=True,
                              text=True, env=_thread_env(variant.threads))
        walls.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise RuntimeError(f"cold start of {variant.model} failed:\n{proc.stderr[-2000:]}")
        inner.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    median = {k: round(statistics.median(r[k] for r in inner), 3) for k in ("import_s", "load_s", "first_answer_s")}
    return {"median_s": round(statistics.median(walls), 3), "runs_s": [round(w, 3) for w in walls], **median}


MODES = ("batch1", "batched")


def _previous(out: Path | None, dataset_fingerprint: str, settings: BenchSettings) -> dict[str, dict]:
    """Finished variants of an earlier run into the same `out` (for resuming), by name; none from an older schema
    (they were measured differently and are measured again)."""
    path = Path(out) / "results.json" if out else None
    if not path or not path.is_file():
        return {}
    old = json.loads(path.read_text())
    if old.get("schema_version") != SCHEMA_VERSION:
        return {}
    if old["dataset"]["fingerprint"] != dataset_fingerprint or old["settings"] != json.loads(
            json.dumps(asdict(settings))):
        raise SlimformerError(f"{path} was measured on other data or with other settings; cannot resume it")
    return {v["name"]: v for v in old["variants"]}


def logits_paths(logits_dir: Path, name: str, splits: tuple[str, ...]) -> dict[str, dict[str, Path]]:
    """Where a variant's logits are kept: one file per split and mode."""
    return {split: {mode: Path(logits_dir) / f"{name}.{split}.{mode}.npy" for mode in MODES} for split in splits}


def quality(logits: dict[str, dict[str, np.ndarray]], truth: dict[str, np.ndarray], labels: list[str]) -> dict:
    """Per split: accuracy and macro-F1 in each mode, the worse mode's figures as the variant's own (the budget
    holds whichever way it is served), per-class recall of that mode, and the batch-invariance figure."""
    out = {}
    for split, modes in logits.items():
        per_mode = {m: classification_metrics(truth[split], modes[m].argmax(-1)) for m in MODES}
        served = min(MODES, key=lambda m: per_mode[m]["accuracy"])  # a tie keeps batch 1
        recall = per_class_recall(truth[split], modes[served].argmax(-1), len(labels))
        out[split] = {**per_mode[served], "mode": served,
                      **{m: {k: v for k, v in per_mode[m].items() if k != "n"} for m in MODES},
                      "per_class_recall": dict(zip(labels, recall, strict=True)),
                      "batch_invariance": batch_invariance(modes["batch1"], modes["batched"])}
    return out


def served_predictions(entry: dict, logits_dir: Path) -> dict[str, np.ndarray]:
    """A measured variant's predicted label indices per split, in the mode its quality figures come from."""
    paths = logits_paths(logits_dir, entry["name"], tuple(entry["quality"]))
    return {split: np.load(paths[split][q["mode"]]).argmax(-1) for split, q in entry["quality"].items()}


def truth_labels(dataset, splits: tuple[str, ...], label_map: list[int]) -> dict[str, np.ndarray]:
    """The data's labels per split as the model's label indices."""
    mapping = np.asarray(label_map)
    return {s: mapping[dataset[s].labels] for s in splits}


def run_benchmark(variants: list[Variant], data: DataSpec, settings: BenchSettings = BenchSettings(),
                  out: Path | None = None, resume: bool = False, keep_going: bool = False) -> dict:
    """Measure every variant; the first is the reference the others' agreement is measured against.

    With `out`, `results.json` is rewritten atomically after each variant; logits (per split and mode) and raw
    end-to-end latencies are kept as .npy. With `resume`, variants already measured there (same name, model,
    runtime, threads and options, arrays present) are taken over instead of measured again. With `keep_going`, a
    variant that fails to load or run is recorded under "failed" and the others are still measured.
    """
    if not variants:
        raise SlimformerError("nothing to benchmark: give at least one model")
    variants = [replace(v, options=check_options(v.runtime, v.options)) for v in (v.resolved() for v in variants)]
    dataset = load_dataset(data.source, data.text_column, data.label_column, data.split_column, data.seed)
    for name in settings.splits:
        if len(dataset[name]) == 0:
            raise SlimformerError(f"the {name} split of {dataset.name} is empty")
    decision = settings.splits[0]
    label_maps = [check_label_space(dataset.labels, artifact_labels(v.model), v.model) for v in variants]
    names = [v.label() for v in variants]
    if len(set(names)) != len(names):
        raise SlimformerError(f"two variants share a name ({', '.join(names)}); name them apart")
    logits_dir = Path(out) / "logits" if out else Path(tempfile.mkdtemp(prefix="slimformer-logits-"))
    logits_dir.mkdir(parents=True, exist_ok=True)
    results = {
        "schema_version": SCHEMA_VERSION,
        "tool": f"slimformer {__version__}",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "dataset": dataset.summary() | {"decision_split": decision, "held_out": list(settings.splits[1:]),
                                        "n": {s: len(dataset[s]) for s in settings.splits}},
        "settings": asdict(settings),
        "machine": fingerprint(),
        "variants": [],
    }
    previous = _previous(out, dataset.fingerprint, settings) if resume else {}
    reference = None
    for i, (variant, label_map) in enumerate(zip(variants, label_maps, strict=True)):
        paths = logits_paths(logits_dir, names[i], settings.splits)
        latencies_path = logits_dir / f"{names[i]}.latency_ms.npy"
        ident = {"name": names[i], "model": str(variant.model), "runtime": variant.runtime,
                 "threads": variant.threads, "options": variant.options, "artifact": artifact_key(variant.model)}
        old = previous.get(names[i])
        same = old and all((absolute(old[k]) if k == "model" else old.get(k)) == v for k, v in ident.items())
        files = [p for modes in paths.values() for p in modes.values()] + [latencies_path]
        if same and all(p.is_file() for p in files):
            entry = old
        else:
            time.sleep(settings.settle_s)  # the first too: the parent may just have built or written artifacts
            spec = {"model": str(variant.model), "runtime": variant.runtime, "threads": variant.threads,
                    "options": variant.options, "latencies_path": str(latencies_path), "data": asdict(data),
                    "logits_paths": {s: {m: str(p) for m, p in modes.items()} for s, modes in paths.items()},
                    "settings": asdict(settings)}
            started = time.perf_counter()
            try:
                result = _run_worker(spec, f"[{i + 1}/{len(variants)}] {names[i]}")
            except OutputError:
                raise  # disk full: stop; what is in results.json stays
            except (SlimformerError, RuntimeError) as e:
                if not keep_going or i == 0:
                    raise
                results.setdefault("failed", []).append({**ident, "error": str(e).strip().splitlines()[0]})
                if out:
                    write_json(Path(out) / "results.json", results)
                continue
            entry = {**ident, **result}
            if settings.cold_start_runs:
                with progress_bar(f"[{i + 1}/{len(variants)}] {names[i]}: cold start", settings.cold_start_runs):
                    entry["cold_start"] = cold_start(variant, dataset[decision].texts[0], settings.cold_start_runs,
                                                     settings.max_length)
            entry["seconds"] = round(time.perf_counter() - started, 1)
        logits = {s: {m: np.load(p) for m, p in modes.items()} for s, modes in paths.items()}
        entry["quality"] = quality(logits, truth_labels(dataset, settings.splits, label_map),
                                   artifact_labels(variant.model))
        if i == 0:
            reference = logits[decision]["batch1"]
        entry["agreement"] = {"reference": names[0], "split": decision, "mode": "batch1",
                              **agreement(logits[decision]["batch1"], reference)} if i else None
        results["variants"].append(entry)
        log_line(_summary_line(i, len(variants), entry, decision))
        if out:
            write_json(Path(out) / "results.json", results)
    return results


def _summary_line(i: int, total: int, entry: dict, decision: str) -> str:
    q = entry["quality"][decision]
    return (f"[{i + 1}/{total}] {entry['name']}: {decision} accuracy {100 * q['accuracy']:.2f}% "
            f"({q['mode']}), p50 {entry['latency_ms']['end_to_end']['p50']:.3f} ms at batch 1")


def remeasure(results: dict, pairs: list[tuple[str, str]], data: DataSpec, settings: BenchSettings,
              out: Path | None = None, rounds: int = 2) -> list[dict]:
    """Check ratios of a finished run: measure each (baseline, candidate) pair of its variants again,
    alternating, `rounds` times, each in a fresh process as before (no cold starts).

    One slow reading of a baseline (a busy neighbour on a shared VM) flatters every ratio of a run; the
    rounds show whether a ratio holds. Returns per pair the end-to-end p50s and ratios of every round."""
    by_name = {v["name"]: v for v in results["variants"]}
    variants = []
    for r in range(1, rounds + 1):
        for pair in pairs:
            for name in pair:
                v = by_name[name]
                variants.append(Variant(v["model"], v["runtime"], v["threads"], v["options"], name=f"{name}@{r}"))
    again = run_benchmark(variants, data, replace(settings, cold_start_runs=0, splits=settings.splits[:1]), out)
    p50 = {v["name"]: v["latency_ms"]["end_to_end"]["p50"] for v in again["variants"]}
    checks = []
    for base, cand in pairs:
        rows = [{"baseline_p50_ms": p50[f"{base}@{r}"], "candidate_p50_ms": p50[f"{cand}@{r}"],
                 "speedup": round(p50[f"{base}@{r}"] / p50[f"{cand}@{r}"], 2)} for r in range(1, rounds + 1)]
        checks.append({"baseline": base, "candidate": cand, "first_run_speedup": round(
            by_name[base]["latency_ms"]["end_to_end"]["p50"] / by_name[cand]["latency_ms"]["end_to_end"]["p50"], 2),
            "rounds": rows})
    return checks
