"""`slimformer optimize`: build the variant matrix, benchmark it, select inside a budget, report.

Stages (each persisted the moment it finishes, so `--resume` after a crash or kill -9 continues):
  1. distil a student (optional; an Optuna study in RUN/distill, itself resumable)
  2. build every candidate recipe for this hardware (recipes.candidates) on the model and the student,
     each into RUN/variants/NAME (temp dir + rename: a half-built artifact is never taken as finished)
  3. benchmark every artifact at every thread count (results.json rewritten after each variant)
  4. assess against the budget on the validation split (the task's budget metric: accuracy for a classifier,
     precision@10 for embeddings; tasks/scoring.py); INT8 classifiers that break it get a mixed-precision fallback
     (sensitive nodes kept in float, decided on validation) which is benchmarked too
  5. select the fastest variant inside the budget, the Pareto front, and write report.md/report.html

Decide on validation, report on test: every choice above is made on the validation split; the test split is
measured once per variant and reported beside it, held out.
"""

from __future__ import annotations

import functools
import json
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..bench.runner import ANSWERS_DIR, BenchSettings, DataSpec, Variant, load_answers, run_benchmark
from ..cache import is_complete, read_manifest, write_json
from ..compress.pipeline import CompressSettings, pruned_config, qat_start
from ..compress.qat import recorded as recorded_qat
from ..distill import DistillConfig, recorded
from ..errors import MissingLibraryError, OutputError, SlimformerError, first_line
from ..progress import console, log_line, progress_bar
from ..tasks.scoring import Scoring, scoring_for
from .select import Budget, assess, miss_text, select

BASELINE = "torch-fp32"
MIXED = "mixed"  # the candidate of a mixed-precision fallback is its INT8 candidate's name plus this


def variant_name(source: str, candidate: str, threads: int | None = None) -> str:
    """The one place a variant's name is made from its identity (source model, candidate, threads measured at);
    built entries keep the parts too (`source`, `candidate`, and `fallback_of` for a mixed-precision fallback)."""
    return f"{source}-{candidate}" + (f"-t{threads}" if threads is not None else "")


@dataclass(frozen=True)
class OptimizeSettings:
    budget: Budget = Budget()
    threads: tuple[int, ...] = (1, 2)
    distill: bool = False
    distill_trials: int = 1
    distill_seeds: int = 1  # students trained from this many seeds; the best on validation (or the slice) is kept
    distill_config: DistillConfig = field(default_factory=DistillConfig)  # its train.seed is replaced per seed
    student_layers: int | None = None
    compress: CompressSettings = field(default_factory=CompressSettings)  # opt-in levers that train (prune, qat)
    include_slow: bool = False  # NF4 and ORT fp16 on a CPU: slower, shown only when asked
    only: tuple[str, ...] = ()  # candidate names to build (empty: all this hardware supports)
    calibration_size: int = 256
    bench: BenchSettings = field(default_factory=lambda: BenchSettings(
        latency_samples=200, cold_start_runs=0, settle_s=0.5))
    cold_start_runs: int = 3  # fresh processes timed for the baselines and the recommended variant


def _stage(number: int, total: int, text: str) -> None:
    console.print(f"[bold]\\[{number}/{total}][/] {text}", highlight=False)


def _prepare(out: Path, recipe: dict, resume: bool) -> None:
    """Refuse to mix runs: --resume only onto the same model and data; never overwrite a finished run."""
    run_file = out / "run.json"
    recipe = json.loads(json.dumps(recipe))  # as it reads back from run.json (tuples become lists)
    if resume:
        if not run_file.is_file():
            raise OutputError(f"nothing to resume in {out} (no run.json); run without --resume")
        previous = json.loads(run_file.read_text())["recipe"]
        for key, what in (("model_key", "model"), ("dataset_fingerprint", "dataset"), ("threads", "thread counts"),
                          ("max_length", "max length"), ("distill", "distillation settings")):
            if previous.get(key) != recipe[key]:
                raise OutputError(f"{out} is a run of another {what} ({previous.get(key)} vs {recipe[key]}); "
                                  "use another --out to start a new run")
    elif out.exists() and any(out.iterdir()):
        raise OutputError(f"{out} exists already; pass --resume to continue that run, or choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise OutputError(f"cannot write to {out}: {e.strerror or e}") from None
    for partial in (out / "variants").glob(".*.partial") if (out / "variants").is_dir() else []:
        shutil.rmtree(partial, ignore_errors=True)  # left by a killed build: never taken as finished
    write_json(run_file, {"recipe": recipe})


def task_recipe(recipe: str, task) -> str:
    """A candidate's recipe without the steps that do not apply to `task` (TechniqueConfig.applies_to: cls-only
    reads the one token a classifier's head reads; an embedding pools every token)."""
    from ..techniques import parse_recipe, recipe_text

    return recipe_text([c for c in parse_recipe(recipe) if c.applies_to(task)]) if recipe else ""


def _build_variants(sources: dict[str, str], candidates, out: Path, context) -> tuple[list[dict], list[dict]]:
    """Build every (source, candidate) artifact into out/variants; a failing candidate is recorded, not fatal."""
    from ..techniques import build, open_artifact, parse_recipe, recipe_key

    @functools.cache
    def source_key(source: str) -> str:  # a content hash of the checkpoint: once per source, not per candidate
        return open_artifact(sources[source]).key

    built, failed = [], []
    todo = [(s, c) for s in sources for c in candidates]
    with progress_bar("building variants", len(todo)) as update:
        for source, candidate in todo:
            name = variant_name(source, candidate.name)
            path = out / "variants" / name
            update(advance=0, status=name)
            recipe = parse_recipe(candidate.recipe) if candidate.recipe else []
            if not recipe:
                path = Path(sources[source])  # the model as it is
            elif not (is_complete(path) and read_manifest(path).get("key") == recipe_key(
                    source_key(source), recipe, context)):  # a finished build of today's recipe is kept
                try:
                    started = time.perf_counter()
                    build(sources[source], recipe, path, context, overwrite=True)
                    log_line(f"  built {name} ({len(built) + len(failed) + 1}/{len(todo)}) in "
                             f"{time.perf_counter() - started:.0f} s")
                except OutputError:
                    raise  # disk full, unwritable: every later candidate would fail the same way
                except SlimformerError as e:
                    failed.append({"name": name, "recipe": candidate.recipe, "error": first_line(e)})
                    console.print(f"  {name}: build failed: {first_line(e)}", highlight=False)
                    update()
                    continue
            built.append({"name": name, "source": source, "candidate": candidate.name, "recipe": candidate.recipe,
                          "path": str(path), "runtime": candidate.runtime, "options": candidate.options,
                          "why": candidate.why})
            update()
    return built, failed


def _variants(built: list[dict], threads: tuple[int, ...]) -> list[Variant]:
    ordered = sorted(built, key=lambda b: (b["name"] != variant_name("teacher", BASELINE),))  # the reference first
    return [Variant(b["path"], b["runtime"], t, b["options"], name=variant_name(b["source"], b["candidate"], t))
            for t in threads for b in ordered]


# what the job imports, from the PyTorch baseline to the report's charts: `pip install 'slimformer[optimize]'`
NEEDS = ("torch", "transformers", "onnx", "onnxruntime", "matplotlib")


def check_installed(modules: tuple[str, ...] = NEEDS, extra: str = "optimize") -> None:
    """Refuse to start, in one line, a job that would stop part-way on a library the install does not have."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingLibraryError(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed; "
                                  f"this needs {'it' if len(missing) == 1 else 'them'}: pip install "
                                  f"'slimformer[{extra}]'")


def optimize(model: str, data: DataSpec, out: Path, settings: OptimizeSettings = OptimizeSettings(),
             resume: bool = False, task: str | None = None) -> dict:
    """Run the whole job into `out`; returns the selection (also in results.json and the report). `task`: the
    task the model must be for (None: whatever it is)."""
    check_installed(NEEDS + (("optuna",) if settings.distill or settings.compress.levers else ()))
    from .. import recipes
    from ..data import in_label_space, load_dataset
    from ..hardware import fingerprint
    from ..techniques import context_from_dataset, open_artifact
    from ..techniques.base import content_key

    out = Path(out)
    decision = settings.bench.splits[0]
    dataset = load_dataset(data.source, data.text_column, data.label_column, data.split_column, data.seed)
    artifact = open_artifact(model)
    if artifact.format != "hf":
        raise SlimformerError(f"optimize starts from a Hugging Face model; {model} is a built "
                              f"{artifact.format} artifact")
    if task is not None and task != artifact.task.name:
        raise SlimformerError(f"{model} is a model for {artifact.task.name}, not {task} (its answers: "
                              f"{artifact.task.description}); pass --task {artifact.task.name} or leave --task out")
    scoring = scoring_for(artifact.task)
    if settings.distill and artifact.task.name != "classification":
        raise SlimformerError(f"--distill distils classifiers; {model} is a model for {artifact.task.name}")
    model = str(artifact.path)
    if artifact.task.labelled:
        dataset = in_label_space(dataset, artifact.labels, model)
    recipe = {"model": model, "model_key": content_key(artifact.path), "task": artifact.task.name,
              "dataset": dataset.name,
              "dataset_fingerprint": dataset.fingerprint, "threads": list(settings.threads),
              "max_length": settings.bench.max_length,
              "distill": {"enabled": settings.distill, "trials": settings.distill_trials,
                          "seeds": settings.distill_seeds, "student_layers": settings.student_layers,
                          "config": recorded(settings.distill_config)}}
    if settings.compress.levers:  # absent otherwise, so runs made before the levers existed still resume
        recipe["distill"]["compress"] = {**asdict(settings.compress), "qat": recorded_qat(
            settings.compress.qat, "qat" in settings.compress.levers)}
    _prepare(out, recipe, resume)
    if note := dataset.source.get("validation"):
        log_line(f"validation split: {note}")
    longer = _truncation(model, dataset[decision].texts, settings.bench.max_length, decision)
    total = 5
    sources = {"teacher": model}
    students = None
    if settings.distill:
        _stage(1, total, f"distilling a student from {model} ({settings.distill_seeds} seed(s), "
                         f"{settings.distill_trials} trial(s) each)")
        students = _distill_seeds(model, data, out, settings)
        sources["student"] = students["model"]
    else:
        _stage(1, total, "distillation skipped (pass --distill to add a smaller student)")
    levers, pruned = settings.compress.levers, None
    if "prune" in levers:
        c = settings.compress
        log_line(f"pruning: a {c.layers or settings.student_layers or 'half-depth'}-layer student with {c.width:g} "
                 f"of its feed-forward neurons, recovered by distillation with intermediate-layer terms")
        pruned = _distill_seeds(model, data, out, replace(
            settings, student_layers=c.layers or settings.student_layers,
            distill_config=pruned_config(settings.distill_config, c)), "pruned", c.width)
        sources["pruned"] = pruned["model"]
    qat_sources = {}
    if "qat" in levers:
        from ..compress.qat import quantization_aware

        start, qat = qat_start(sources), settings.compress.qat
        if qat.scheme == "dynamic":  # simulate the weights this machine's ort-int8-dynamic stores
            qat = replace(qat, weight_type=recipes.int8_weight_type())
        log_line(f"quantization-aware training of the {start} ({qat.epochs} epoch(s), for {qat.scheme} INT8)")
        quantization_aware(sources[start], model, data, out / "qat" / start, qat)
        qat_sources[f"{start}-qat"] = str((out / "qat" / start).resolve())

    machine = fingerprint()
    candidates = recipes.candidates(machine["cpu"], machine["gpu"], settings.include_slow)
    if machine["gpu"] and settings.bench.batch_sizes == recipes.CPU_BATCH_SIZES:  # the default: a GPU's matrix
        settings = replace(settings, bench=replace(settings.bench, batch_sizes=recipes.batch_sizes(machine["gpu"])))
    unknown = set(settings.only) - {c.name for c in candidates}
    if unknown:
        raise SlimformerError(f"unknown candidate(s) {', '.join(sorted(unknown))}; this machine's are: "
                              f"{', '.join(c.name for c in candidates)}")
    chosen = [replace(c, recipe=task_recipe(c.recipe, artifact.task)) for c in candidates
              if not settings.only or c.name in settings.only or c.name == BASELINE]
    _stage(2, total, f"building {len(chosen)} candidate recipes for {len(sources)} model(s): "
                     f"{', '.join(c.name for c in chosen)}")
    context = context_from_dataset(dataset, settings.calibration_size)
    built, failed = _build_variants(sources, chosen, out, context)
    if qat_sources:  # the QAT model is built only as INT8 with its trained scales
        more, more_failed = _build_variants(qat_sources, recipes.qat_candidates(settings.compress.qat.scheme),
                                            out, context)
        built, failed = built + more, failed + more_failed
    if longer:  # what a longer token limit costs and gains, on the baseline itself
        built.append({"name": variant_name("teacher", f"{BASELINE}-len{longer}"), "source": "teacher",
                      "candidate": f"{BASELINE}-len{longer}", "recipe": "", "path": model, "runtime": "torch",
                      "options": {"max_length": longer}, "why": f"the baseline with {longer} tokens per text "
                      "instead of the truncating default: what a longer limit costs and gains"})

    _stage(3, total, f"benchmarking {len(built)} artifacts at {', '.join(map(str, settings.threads))} thread(s) "
                     f"({' and '.join(settings.bench.splits)} answers; decisions on {decision})")
    results = run_benchmark(_variants(built, settings.threads), data, settings.bench, out, resume=True,
                            keep_going=True)
    baseline = {t: variant_name("teacher", BASELINE, t) for t in settings.threads}
    rows = _assess(results, baseline, settings, dataset, out, scoring)

    _stage(4, total, f"checking the budget on {decision}" + ("; mixed-precision fallback where INT8 breaks it"
                                                             if scoring.mixed_precision_fallback else ""))
    fallbacks = _fall_back(rows, built, sources, dataset, context, settings, out) \
        if scoring.mixed_precision_fallback else []
    if fallbacks:
        built += [f["variant"] for f in fallbacks if f.get("variant")]
        results = run_benchmark(_variants(built, settings.threads), data, settings.bench, out, resume=True,
                                keep_going=True)
        rows = _assess(results, baseline, settings, dataset, out, scoring)

    _stage(5, total, "selecting and writing the report")
    selection = select(rows) | {"decision_split": decision, "budget": asdict(settings.budget),
                                "budget_text": settings.budget.describe(scoring), "rows": rows, "built": built,
                                "failed": failed,
                                "fallbacks": [{k: v for k, v in f.items() if k != "variant"} for f in fallbacks]}
    results["selection"] = selection
    if students:
        results["distill"] = {k: v for k, v in students.items() if k != "model"}
    if pruned:
        results["pruned"] = {k: v for k, v in pruned.items() if k != "model"}
    _cold_starts(results, selection, settings, data)
    write_json(out / "results.json", results)
    from .report import write_report

    write_report(results, out)
    return selection


def _truncation(model: str, texts: list[str], max_length: int | None, split: str) -> int | None:
    """Say so when the token limit truncates the decision split's texts; return the longer limit to measure."""
    from ..encoding import truncation_note

    line, longer = truncation_note(model, texts, max_length, f"{split} texts")
    if line:
        log_line(f"note: {line}" + (f"; the baseline is measured at {longer} tokens too, to show what that costs "
                                    "and gains" if longer else ""))
    return longer if line else None


def _assess(results: dict, baseline: dict[int, str], settings: OptimizeSettings, dataset, out: Path,
            scoring: Scoring) -> list[dict]:
    """The budget checked on every measured variant (decision split first), from the answers kept on disk."""
    splits = settings.bench.splits
    truth = {s: dataset[s].labels for s in splits}  # a classifier's: already its label indices (in_label_space)
    answers = {v["name"]: load_answers(v, out / ANSWERS_DIR, scoring) for v in results["variants"]}
    return assess(results["variants"], baseline, settings.budget, truth, answers, splits[0], scoring)


def _distill_seeds(model: str, data: DataSpec, out: Path, settings: OptimizeSettings, directory: str = "distill",
                   width: float = 1.0) -> dict:
    """Students distilled from `distill_seeds` seeds (42, 43, ...); the best on the choosing split (validation, or
    the selection slice of the training texts: DistillConfig.select_fraction) is kept. Every seed's validation and
    held-out test accuracy (FP32) is recorded, so a lucky seed is visible."""
    from ..distill import StudentSpec, distill

    base = settings.distill_config
    seeds = []
    for seed in range(42, 42 + settings.distill_seeds):
        config = replace(base, train=replace(base.train, seed=seed))
        summary = distill(model, data, out / directory / f"seed-{seed}",
                          StudentSpec(layers=settings.student_layers, width=width), settings.distill_trials,
                          config=config, bench=False)
        m, t, chosen_on = summary["metrics"], summary["teacher_metrics"], summary["chosen_on"]
        seeds.append({"seed": seed, "model": str(Path(summary["model"]).resolve()), "chosen_on": chosen_on,
                      "choosing_accuracy": m[chosen_on]["accuracy"],
                      "validation_accuracy": m["validation"]["accuracy"], "test_accuracy": m["test"]["accuracy"],
                      "teacher_validation_accuracy": t["validation"]["accuracy"],
                      "teacher_test_accuracy": t["test"]["accuracy"]})
        chosen = f"selection slice {100 * m['selection']['accuracy']:.2f}%, " if chosen_on == "selection" else ""
        log_line(f"student seed {seed}: {chosen}validation {100 * m['validation']['accuracy']:.2f}% (teacher "
                 f"{100 * t['validation']['accuracy']:.2f}%), held-out test {100 * m['test']['accuracy']:.2f}% "
                 f"(teacher {100 * t['test']['accuracy']:.2f}%), FP32")
    best = max(seeds, key=lambda s: s["choosing_accuracy"])  # the first seed wins a tie
    if len(seeds) > 1:
        log_line(f"kept the student of seed {best['seed']} (best on {best['chosen_on']})")
    return {"model": best["model"], "seeds": seeds, "chosen_seed": best["seed"]}


def _cold_starts(results: dict, selection: dict, settings: OptimizeSettings, data: DataSpec) -> None:
    """Cold start (fresh processes, median) of the baselines and the chosen variant; the matrix skips it."""
    from ..bench.runner import cold_start
    from ..data import load_dataset

    names = {r["baseline"] for r in selection["rows"]} | {selection["recommended"] or selection["closest"]["name"]}
    todo = [v for v in results["variants"] if v["name"] in names and "cold_start" not in v]
    if not settings.cold_start_runs or not todo:
        return
    text = load_dataset(data.source, data.text_column, data.label_column, data.split_column,
                        data.seed)[settings.bench.splits[0]].texts[0]
    with progress_bar("cold start", len(todo)) as update:
        for v in todo:
            variant = Variant(v["model"], v["runtime"], v["threads"], v["options"], v["name"])
            v["cold_start"] = cold_start(variant, text, settings.cold_start_runs, settings.bench.max_length)
            update()


def needs_fallback(row: dict, source_fp32: dict | None) -> bool:
    """Mixed precision can only win back what quantization lost: the variant must miss the budget on quality
    alone, and the FP32 form of its own model (e.g. the student) must be inside the quality budget."""
    if row["within"] or any(m["kind"] != "quality" for m in row["misses"]):
        return False
    return source_fp32 is not None and not any(m["kind"] == "quality" for m in source_fp32["misses"])


def _fall_back(rows, built, sources, dataset, context, settings, out) -> list[dict]:
    """Mixed precision for each INT8 artifact whose only miss is accuracy (once per artifact, not per thread)."""
    from ..runtimes import load_predictor
    from ..techniques import build, parse_recipe, recipe_text
    from .fallback import can_fall_back, mixed_precision

    done, reports, baseline = set(), [], None
    by_variant = {variant_name(b["source"], b["candidate"], t): b for b in built for t in settings.threads}
    by_row = {r["name"]: r for r in rows}
    for row in rows:
        b = by_variant.get(row["name"])
        if not b or b["name"] in done or b.get("fallback_of"):
            continue
        if not needs_fallback(row, by_row.get(variant_name(b["source"], BASELINE, row["threads"]))):
            continue
        steps = parse_recipe(b["recipe"]) if b["recipe"] else []
        if not can_fall_back(steps):
            continue
        done.add(b["name"])
        record_path = out / "fallback" / f"{b['name']}.json"
        target = out / "variants" / variant_name(b["source"], f"{b['candidate']}-{MIXED}")
        if record_path.is_file() and is_complete(target):
            report = json.loads(record_path.read_text())
        else:
            float_artifact = build(sources[b["source"]], steps[:-1], None, context)
            if baseline is None:  # the teacher's validation accuracy, once for all fallbacks
                baseline = load_predictor(sources["teacher"], "torch", threads=None).evaluate(dataset["validation"])
            with progress_bar(f"sensitivity of {b['name']}", None) as update:
                report = mixed_precision(float_artifact, steps[-1], context, dataset["validation"],
                                         baseline["accuracy"], settings.budget.max_drop, target, update)
            report |= {"from": b["name"], "decision_drop_points": row["drop_points"]}
            write_json(record_path, report)
        console.print(f"  {b['name']}: {report['nodes']} quantizable nodes; kept {len(report['excluded'])} in float "
                      f"({', '.join(report['excluded'][:4])}{'…' if len(report['excluded']) > 4 else ''}); "
                      f"validation {'within' if report['within'] else 'still outside'} the budget", highlight=False)
        candidate = f"{b['candidate']}-{MIXED}"
        variant = dict(b, name=variant_name(b["source"], candidate), candidate=candidate, path=str(target),
                       fallback_of=b["name"], recipe=recipe_text([*steps[:-1], replace(
                           steps[-1], exclude=tuple(steps[-1].exclude) + tuple(report["excluded"]))]),
                       why=f"{b['why']}; {len(report['excluded'])} sensitive node(s) kept in float")
        reports.append(report | {"variant": variant if report["within"] and is_complete(target) else None})
    return reports


__all__ = ["Budget", "OptimizeSettings", "miss_text", "needs_fallback", "optimize"]
