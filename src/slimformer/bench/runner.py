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

from .. import __version__
from ..cache import read_manifest, write_json
from ..data import load_dataset
from ..errors import DiskFullError, OutputError, SlimformerError
from ..hardware import fingerprint
from ..progress import log_line, progress_bar
from ..runtimes import artifact_labels, check_options, default_runtime
from ..tasks.scoring import Scoring, scoring_for

SCHEMA_VERSION = 3  # 3: answers of any task (answers/ instead of logits/), per-task quality, scenarios listed
ANSWERS_DIR = "answers"  # inside a run: every variant's answers per split and mode, and its raw latencies


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
    scenarios: tuple[str, ...] = ("answers", "latency", "throughput")  # run in this order (bench/scenarios.py)


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


def answer_paths(answers_dir: Path, name: str, splits: tuple[str, ...],
                 suffix: str = ".npy") -> dict[str, dict[str, Path]]:
    """Where a variant's answers are kept: one file per split and mode."""
    return {split: {mode: Path(answers_dir) / f"{name}.{split}.{mode}{suffix}" for mode in MODES} for split in splits}


def quality(answers: dict[str, dict], truth: dict, labels: list[str], scoring: Scoring,
            reference: dict | None = None) -> dict:
    """Per split: the task's metrics in each mode, the worse mode's figures as the variant's own (the budget holds
    whichever way it is served), the budget metric per label in that mode, the batch-invariance figure, and (given
    a reference variant's answers per split) the agreement of the served answers with its batch-1 answers."""
    out = {}
    worse = min if scoring.higher_is_better else max
    for split, modes in answers.items():
        per_mode = {m: scoring.score(modes[m], truth[split]) for m in MODES}
        served = worse(MODES, key=lambda m: per_mode[m][scoring.metric])  # a tie keeps batch 1
        out[split] = {**per_mode[served], "mode": served,
                      **{m: {k: v for k, v in per_mode[m].items() if k != "n"} for m in MODES},
                      "per_class": scoring.per_class(modes[served], truth[split], labels),
                      "batch_invariance": scoring.invariance(modes["batch1"], modes["batched"]),
                      "agreement": scoring.agreement(modes[served], reference[split]) if reference else None}
    return out


def load_answers(entry: dict, answers_dir: Path, scoring: Scoring, served: bool = True) -> dict:
    """A measured variant's answers per split: in the mode its quality figures come from (`served`), else per
    mode."""
    paths = answer_paths(answers_dir, entry["name"], tuple(entry["quality"]), scoring.answer_suffix)
    if served:
        return {split: scoring.load(paths[split][q["mode"]]) for split, q in entry["quality"].items()}
    return {split: {m: scoring.load(p) for m, p in modes.items()} for split, modes in paths.items()}


def run_task(models: list[str]) -> Scoring:
    """The scoring of the task every model is for (refusing a mix: their answers could not be compared)."""
    from ..artifacts import open_artifact

    tasks = {m: open_artifact(m).task.name for m in dict.fromkeys(models)}
    if len(set(tasks.values())) > 1:
        raise SlimformerError("these models are for different tasks and cannot be compared: "
                              + ", ".join(f"{Path(m).name} ({t})" for m, t in tasks.items()))
    return scoring_for(next(iter(tasks.values())))


def run_benchmark(variants: list[Variant], data: DataSpec, settings: BenchSettings = BenchSettings(),
                  out: Path | None = None, resume: bool = False, keep_going: bool = False) -> dict:
    """Measure every variant; the first is the reference the others' agreement is measured against.

    With `out`, `results.json` is rewritten atomically after each variant; answers (per split and mode, as the
    task's scoring writes them) and raw end-to-end latencies are kept in out/answers. With `resume`, variants
    already measured there (same name, model, runtime, threads and options, files present) are taken over instead
    of measured again. With `keep_going`, a variant that fails to load or run is recorded under "failed" and the
    others are still measured. Every model must be of one task (tasks/scoring.py scores its answers).
    """
    if not variants:
        raise SlimformerError("nothing to benchmark: give at least one model")
    variants = [replace(v, options=check_options(v.runtime, v.options)) for v in (v.resolved() for v in variants)]
    dataset = load_dataset(data.source, data.text_column, data.label_column, data.split_column, data.seed)
    for name in settings.splits:
        if len(dataset[name]) == 0:
            raise SlimformerError(f"the {name} split of {dataset.name} is empty")
    decision = settings.splits[0]
    scoring = run_task([v.model for v in variants])
    label_maps = [scoring.label_map(dataset.labels, artifact_labels(v.model), v.model) for v in variants]
    names = [v.label() for v in variants]
    if len(set(names)) != len(names):
        raise SlimformerError(f"two variants share a name ({', '.join(names)}); name them apart")
    answers_dir = Path(out) / ANSWERS_DIR if out else Path(tempfile.mkdtemp(prefix="slimformer-answers-"))
    answers_dir.mkdir(parents=True, exist_ok=True)
    results = {
        "schema_version": SCHEMA_VERSION,
        "task": scoring.task,
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
        paths = answer_paths(answers_dir, names[i], settings.splits, scoring.answer_suffix)
        latencies_path = answers_dir / f"{names[i]}.latency_ms.npy"
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
                    "answer_paths": {s: {m: str(p) for m, p in modes.items()} for s, modes in paths.items()},
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
        answers = {s: {m: scoring.load(p) for m, p in modes.items()} for s, modes in paths.items()}
        if i == 0:
            reference = {s: modes["batch1"] for s, modes in answers.items()}
        entry["quality"] = quality(answers, {s: scoring.truth(dataset[s], label_map) for s in settings.splits},
                                   scoring.label_names(dataset.labels, artifact_labels(variant.model)), scoring,
                                   reference if i else None)
        entry["agreement"] = {"reference": names[0], "split": decision, "mode": "batch1",
                              **scoring.agreement(answers[decision]["batch1"], reference[decision])} if i else None
        results["variants"].append(entry)
        log_line(_summary_line(i, len(variants), entry, decision, scoring))
        if out:
            write_json(Path(out) / "results.json", results)
    return results


def _summary_line(i: int, total: int, entry: dict, decision: str, scoring: Scoring) -> str:
    q = entry["quality"][decision]
    timed = f", p50 {entry['latency_ms']['end_to_end']['p50']:.3f} ms at batch 1" if "latency_ms" in entry else ""
    return f"[{i + 1}/{total}] {entry['name']}: {decision} {scoring.metric_label} {100 * q[scoring.metric]:.2f}% " \
        f"({q['mode']}){timed}"


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
