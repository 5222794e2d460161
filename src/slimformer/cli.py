"""The `slimformer` command. Thin: parse, call the library, render. Heavy imports happen inside commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from .distill import DistillConfig
from .errors import DiskFullError, SlimformerError, disk_full, missing_library

app = typer.Typer(
    help="Make transformer text classifiers fast and small for inference, and prove it with honest numbers.",
    no_args_is_help=True, pretty_exceptions_show_locals=False, rich_markup_mode="rich")
data_app = typer.Typer(help="Inspect the packaged datasets and your own data files.", no_args_is_help=True)
app.add_typer(data_app, name="data")
out = Console(width=None if sys.stdout.isatty() else 200)

DataOpt = Annotated[str, typer.Option("--data", "-d", help="Packaged dataset (trec6, rotten-tomatoes), a .csv/.tsv/"
                                      ".jsonl/.parquet file, a saved HF dataset directory, or hf:NAME.")]
TextCol = Annotated[str, typer.Option(help="Column holding the text (files and HF datasets).")]
LabelCol = Annotated[str, typer.Option(help="Column holding the label (files and HF datasets).")]
SplitCol = Annotated[str | None, typer.Option(help="Column assigning rows to train/validation/test; "
                                              "without it a seeded stratified 80/10/10 split is made.")]
KD = DistillConfig()  # the distillation defaults, shown by `distill --help`
SelectionOpt = Annotated[float, typer.Option(help="Hold out this fraction of the training texts "
                                             "(stratified, the same for every seed) and choose the student's epochs, "
                                             "trials and seed on it instead of on validation, so the validation "
                                             "budget check is not biased by those choices (the winner's curse). 0: "
                                             "choose on validation. The student trains on the rest.")]


def _selection(fraction: float) -> float:
    if not 0.0 <= fraction < 1.0:
        raise SlimformerError(f"--selection-slice is a fraction of the training texts, 0 (off) up to below 1; "
                              f"not {fraction:g}")
    return fraction


def _ints(value: str, option: str) -> list[int]:
    try:
        items = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise SlimformerError(f"{option} takes comma-separated integers, got '{value}'") from None
    if not items or any(i < 1 for i in items):
        raise SlimformerError(f"{option} takes positive integers, got '{value}'")
    return items


def _fractions(value: str, option: str) -> list[float]:
    try:
        items = [float(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise SlimformerError(f"{option} takes comma-separated fractions, got '{value}'") from None
    if not items or any(not 0 < i <= 1 for i in items):
        raise SlimformerError(f"{option} takes fractions in (0, 1], got '{value}'")
    return items


def _note_truncation(model: str, texts: list[str], max_length: int | None, what: str) -> None:
    """One line on stderr when `texts` are longer than the model's max_length (`max_length`, else the model's)."""
    from .encoding import truncation_note
    from .models import resolve

    line, _ = truncation_note(resolve(model), texts, max_length, what)
    if line:
        Console(stderr=True).print(f"note: {escape(line)}", highlight=False, soft_wrap=True)


def _options(items: list[str]) -> dict[str, str]:
    pairs = [item.partition("=") for item in items]
    if any(not sep or not key for key, sep, _ in pairs):
        raise SlimformerError(f"--option takes KEY=VALUE, got '{next(i for i in items if '=' not in i)}'")
    return {key: value for key, _, value in pairs}


@data_app.command("list")
def data_list() -> None:
    """List the packaged datasets."""
    from rich.table import Table

    from .data.registry import PACKAGED
    from .data.unlabelled import PACKAGED_UNLABELLED

    table = Table("name", "description", "from package", "license")
    for d in PACKAGED.values():
        table.add_row(d.name, d.description, d.asset.requirement, d.license)
    out.print(table)
    table = Table("name", "unlabelled texts (for distill/optimize --unlabelled)", "from package", "license")
    for name, (asset, _, description, licence) in PACKAGED_UNLABELLED.items():
        table.add_row(name, description, asset.requirement, licence)
    out.print(table)


@data_app.command("show")
def data_show(
    name: Annotated[str, typer.Argument(help="Dataset name or path (as for --data).")],
    text_column: TextCol = "text", label_column: LabelCol = "label", split_column: SplitCol = None,
    tokenizer: Annotated[str, typer.Option(help="Tokenizer for token-length percentiles: a base encoder "
                                           "name or a model directory.")] = "minilm-l6",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Sizes, label counts per split and text lengths in tokens (p50/p90/p95/p99/max)."""
    from rich.table import Table

    from .data import describe, load_dataset
    from .models import load_tokenizer, resolve

    dataset = load_dataset(name, text_column, label_column, split_column)
    tok = load_tokenizer(resolve(tokenizer))
    info = describe(dataset, lambda texts: [len(ids) for ids in tok(texts)["input_ids"]])
    if as_json:
        print(json.dumps(info, indent=2))
        return
    out.print(f"[bold]{info['name']}[/] · {len(dataset.labels)} labels · fingerprint {info['fingerprint']}")
    counts = Table("label", *info["label_counts"], title="rows per split")
    for label in dataset.labels:
        counts.add_row(label, *(str(info["label_counts"][s][label]) for s in info["label_counts"]))
    counts.add_row("[bold]total", *(f"[bold]{n}" for n in info["sizes"].values()))
    out.print(counts)
    out.print("tokens per text (" + tokenizer + "): " + ", ".join(f"{k} {v}" for k, v in info["tokens"].items()))


@app.command()
def train(
    data: DataOpt,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Where to write the fine-tuned checkpoint.")],
    base: Annotated[str, typer.Option(help="Base encoder: a packaged name (minilm-l6, mpnet-base), a local HF model "
                                      "directory, or a hub id when online.")] = "minilm-l6",
    task: Annotated[str | None, typer.Option(help="classification (a label per text) or ner (an IOB2 tag per word: "
                                             "a token classifier). Default: what the data is (conll2003 and "
                                             "CoNLL files are ner). NER files: CoNLL columns (token ... tag) or "
                                             "JSONL with 'tokens' and 'tags' (other names: --text-column, "
                                             "--label-column).")] = None,
    epochs: Annotated[int, typer.Option(min=1)] = 4,
    lr: Annotated[float, typer.Option(min=0.0)] = 1e-4,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    max_length: Annotated[int | None, typer.Option(min=8, help="Truncate texts to this many tokens (default: the "
                                                   "base model's maximum, capped at 512).")] = None,
    seed: int = 42,
    max_train_samples: Annotated[int | None, typer.Option(min=1, help="Train on the first N training texts "
                                                          "only (quick trials).")] = None,
    text_column: TextCol = "text", label_column: LabelCol = "label", split_column: SplitCol = None,
    precision: Annotated[str, typer.Option(help="Autocast in training: fp32, bf16 (CPUs with AVX512-BF16/AMX, "
                                           "CUDA), fp16 (CUDA) or auto.")] = "fp32",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing, different model at --out.")] = False,
) -> None:
    """Fine-tune a sequence classifier, or a token classifier with --task ner (AdamW, linear warm-up, best epoch
    on validation kept: accuracy, or entity-level F1 for NER).

    An existing model at --out made from the same base, data and settings is reused, not retrained.
    Example: slimformer train --task ner --data conll2003 --max-length 128 --epochs 2 --out runs/ner
    """
    from .data import load_dataset
    from .training import TrainConfig, train_classifier

    dataset = load_dataset(data, text_column, label_column, split_column, seed, task=task)
    _note_truncation(base, dataset["test"].texts, max_length, "test sentences" if dataset.task == "ner" else
                     "test texts")
    config = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, max_length=max_length, seed=seed,
                         max_train_samples=max_train_samples, precision=precision)
    manifest = train_classifier(base, dataset, out_dir, config, overwrite=overwrite)
    m = manifest["metrics"]
    verb = "reused" if manifest.get("reused") else f"trained in {manifest['train_seconds']:.0f} s"
    if dataset.task == "ner":
        cut = sum(m[s].get("cut_words", 0) for s in m)
        out.print(f"{out_dir}: {verb}; best epoch {manifest['best_epoch']}; entity F1 validation "
                  f"{100 * m['validation']['f1']:.2f}, test {100 * m['test']['f1']:.2f} (precision "
                  f"{100 * m['test']['precision']:.2f}, recall {100 * m['test']['recall']:.2f}; "
                  f"{m['test']['entities']} entities in {m['test']['n']} sentences)"
                  + (f"; {cut} words cut by --max-length were answered O" if cut else ""))
        return
    out.print(f"{out_dir}: {verb}; best epoch {manifest['best_epoch']}; validation accuracy "
              f"{100 * m['validation']['accuracy']:.2f}%; test accuracy {100 * m['test']['accuracy']:.2f}% "
              f"(macro-F1 {m['test']['macro_f1']:.4f}, {m['test']['n']} texts)")


@app.command()
def distill(
    teacher: Annotated[str, typer.Option("--teacher", "-t", help="The fine-tuned classifier to distil.")],
    data: DataOpt,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Run directory: model/, study.db, trials.json, "
                                          "best_params.json, curves.png, results.json. Run again to resume.")],
    student_layers: Annotated[int | None, typer.Option(help="Layers of the student, initialised from the "
                                                       "teacher's (--student-keep; default: half the teacher's).")
                              ] = None,
    student: Annotated[str | None, typer.Option(help="Start the student from this HF checkpoint instead (same "
                                                "tokenizer as the teacher, no more layers).")] = None,
    student_keep: Annotated[str, typer.Option(help="Which teacher layers the student starts from: spread (every "
                                              "k-th, ending with the last: 6 -> 3 keeps 1, 3, 5) or bottom (the "
                                              "first ones: 0, 1, 2).")] = "spread",
    trials: Annotated[int, typer.Option(help="Optuna trials over alpha, T, learning rate and epochs; the first "
                                        "runs the values below. Bad trials are pruned on validation accuracy.")] = 1,
    storage: Annotated[str | None, typer.Option(help="Optuna RDB URL shared by workers, e.g. postgresql://"
                                                "host/db (default: SQLite in --out).")] = None,
    alpha: Annotated[float, typer.Option(min=0.0, max=1.0, help="Weight of the hard-label loss on the labelled "
                                         "texts; augmented copies learn from the teacher alone (1 with --augment 0: "
                                         "no teacher, plain fine-tuning of the student).")] = KD.alpha,
    temperature: Annotated[float, typer.Option(min=0.05, help="Softmax temperature of the soft targets.")] = \
        KD.temperature,
    lr: Annotated[float, typer.Option(min=0.0)] = KD.train.lr,
    epochs: Annotated[int, typer.Option(min=1)] = KD.train.epochs,
    max_epochs: Annotated[int, typer.Option(min=1, help="Most epochs a searched trial may train.")] = 8,
    augment: Annotated[int, typer.Option(min=0, help="Perturbed copies of every training text (words deleted, "
                                         "masked, replaced, swapped) that the teacher labels: a larger transfer "
                                         "set; training takes (1 + N) times as long.")] = KD.augment,
    unlabelled: Annotated[str | None, typer.Option(help="Unlabelled texts from your domain that the teacher "
                                                   "labels for the student: a .txt file (one per line), a CSV/JSONL/"
                                                   "Parquet file (its 'text' column) or a packaged corpus ("
                                                   "movie-questions). Texts also in your data are dropped.")] = None,
    unlabelled_limit: Annotated[int, typer.Option(min=1, help="Use at most this many unlabelled texts (a seeded "
                                                  "sample); training time grows with them.")] = KD.unlabelled_limit,
    selection_slice: SelectionOpt = KD.select_fraction,
    cosine_weight: Annotated[float, typer.Option(min=0.0, help="Weight of a [CLS] hidden-state cosine term "
                                                 "(student and teacher hidden sizes must match).")] = 0.0,
    hidden_weight: Annotated[float, typer.Option(min=0.0, help="Weight of the per-layer hidden-state MSE "
                                                 "(TinyBERT; a learned projection where widths differ). The teacher "
                                                 "runs beside the student: slower training.")] = 0.0,
    attention_weight: Annotated[float, typer.Option(min=0.0, help="Weight of the last layer's attention-"
                                                    "distribution KL (MiniLM).")] = 0.0,
    student_width: Annotated[float, typer.Option(min=0.01, max=1.0, help="Fraction of the feed-forward neurons "
                                                 "the student keeps per layer, least important (Taylor) pruned "
                                                 "first.")] = 1.0,
    search_layers: Annotated[str | None, typer.Option(help="Student depths the study may choose from, e.g. 2,3,4."
                                                      )] = None,
    search_widths: Annotated[str | None, typer.Option(help="Student widths the study may choose from, e.g. "
                                                      "0.5,0.75,1.")] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    max_length: Annotated[int | None, typer.Option(min=8, help="Token limit (default: the teacher's recorded "
                                                   "one, else its configured maximum capped at 512).")] = None,
    precision: Annotated[str, typer.Option(help="Autocast in training: auto (bf16 on CUDA or CPUs with "
                                           "AVX512-BF16/AMX, else fp32), fp32, bf16, fp16 (CUDA).")] = "auto",
    seed: int = 42,
    bench: Annotated[bool, typer.Option(help="Benchmark teacher and student on the test split afterwards.")] = True,
    text_column: TextCol = "text", label_column: LabelCol = "label", split_column: SplitCol = None,
) -> None:
    """Distil a teacher into a smaller student: alpha*CE + (1-alpha)*T^2*KL on the teacher's cached logits.

    Example: slimformer distill --teacher runs/teacher --data trec6 --student-layers 3 --trials 8 --out runs/kd
    """
    from .bench.runner import DataSpec
    from .distill import SearchSpace, StudentSpec
    from .distill import distill as run_distill
    from .training import TrainConfig

    config = DistillConfig(alpha=alpha, temperature=temperature, cosine_weight=cosine_weight, augment=augment,
                           unlabelled=unlabelled, unlabelled_limit=unlabelled_limit,
                           select_fraction=_selection(selection_slice),
                           hidden_weight=hidden_weight, attention_weight=attention_weight,
                           train=TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, max_length=max_length,
                                             seed=seed, precision=precision))
    space = SearchSpace(epochs=(min(2, max_epochs), max_epochs),
                        layers=tuple(_ints(search_layers, "--search-layers")) if search_layers else (),
                        widths=tuple(_fractions(search_widths, "--search-widths")) if search_widths else ())
    summary = run_distill(teacher, DataSpec(data, text_column, label_column, split_column), out_dir,
                          StudentSpec(student_layers, student, student_width, student_keep), trials, storage, config,
                          space, bench)
    params = ", ".join(f"{k} {v:.3g}" for k, v in summary["params"].items())
    chosen_on = summary["chosen_on"]
    out.print(f"best of {summary['trials']} trials on {chosen_on}: trial {summary['trial']} ({params})")
    rows = (("selection", "chosen on; the teacher trained on it"), ("validation", "held out of the choice"),
            ("test", "held out")) if chosen_on == "selection" else (("validation", "chosen on"), ("test", "held out"))
    for split, what in rows:
        t, s = summary["teacher_metrics"][split], summary["metrics"][split]
        out.print(f"{split} accuracy ({what}): student {100 * s['accuracy']:.2f}% vs teacher "
                  f"{100 * t['accuracy']:.2f}% ({100 * (s['accuracy'] - t['accuracy']):+.2f} points; macro-F1 "
                  f"{s['macro_f1']:.4f} vs {t['macro_f1']:.4f}, {s['n']} texts)")
    out.print(f"student: {summary['model']} (an HF checkpoint: `slimformer build --model {summary['model']} ...`)")


@app.command()
def optimize(
    model: Annotated[str, typer.Option("--model", "-m", help="Your Hugging Face model: a fine-tuned classifier, or "
                                       "a sentence-embedding model (minilm-l6: the packaged all-MiniLM-L6-v2).")],
    data: DataOpt,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Run directory: variants/, results.json, "
                                          "report.md, report.html, charts/.")] = Path("runs/optimize"),
    task: Annotated[str | None, typer.Option(help="classification, ner or embedding: the task the model must be "
                                             "for (default: what its config says). NER is judged by entity-level F1 "
                                             "(seqeval, conlleval rules). Embeddings are judged by label-based "
                                             "retrieval precision@10 on the data (labels say only which texts are "
                                             "relevant to each other) and by agreement with the FP32 "
                                             "vectors.")] = None,
    max_drop: Annotated[float, typer.Option("--max-drop", "--max-accuracy-drop", min=0.0, help="Points of the "
                                            "task's budget metric (accuracy; entity F1 for ner; precision@10 for "
                                            "embeddings) a variant may lose against PyTorch FP32, on the validation "
                                            "split (the test split is held out and only reported).")] = 1.0,
    min_cosine: Annotated[float | None, typer.Option(min=0.0, max=1.0, help="Embeddings: the lowest mean cosine "
                                                     "between a variant's vectors and PyTorch FP32's on the same "
                                                     "texts (validation), so an index built with one still serves "
                                                     "the other.")] = 0.99,
    max_class_drop: Annotated[float | None, typer.Option(min=0.0, help="Points of recall any one label may lose "
                                                         "against PyTorch FP32 (validation): a variant that "
                                                         "collapses a minority class fails the budget even when "
                                                         "the mean holds. Counted once the label has lost "
                                                         "--min-class-texts texts (one text of a 9-text label is "
                                                         "11 points: noise, not a collapse).")] = 5.0,
    min_class_texts: Annotated[int, typer.Option(min=1, help="See --max-class-drop.")] = 2,
    confidence: Annotated[bool, typer.Option("--confidence", help="Strict budget: a variant passes only if the "
                                             "upper end of the 95% interval of its drop (paired "
                                             "bootstrap) is within --max-drop.")] = False,
    latency_budget_ms: Annotated[float | None, typer.Option(min=0.0, help="Most end-to-end p50 latency at batch 1 "
                                                            "(ms).")] = None,
    size_budget_mb: Annotated[float | None, typer.Option(min=0.0, help="Most size on disk (MB).")] = None,
    threads: Annotated[str, typer.Option(help="Thread counts to measure every variant at.")] = "1,2",
    distill: Annotated[bool, typer.Option("--distill", help="Also distil a smaller student and build its "
                                          "variants.")] = False,
    distill_trials: Annotated[int, typer.Option(min=1, help="Optuna trials for the student.")] = 1,
    distill_seeds: Annotated[int, typer.Option(min=1, help="Distil the student from this many seeds (42, 43, ...) "
                                               "and keep the best on validation (or --selection-slice); every "
                                               "seed's validation and test accuracy is reported, so a lucky seed "
                                               "shows. Each seed costs a full distillation.")] = 1,
    student_layers: Annotated[int | None, typer.Option(min=1, help="Student layers (default: half the "
                                                       "model's).")] = None,
    unlabelled: Annotated[str | None, typer.Option(help="Unlabelled texts from your domain for the student to "
                                                   "learn the teacher's answers on (see `distill --help`); with "
                                                   "--distill.")] = None,
    selection_slice: SelectionOpt = KD.select_fraction,
    compress: Annotated[str | None, typer.Option(help="Compression levers that train, comma-separated: prune (a "
                                                 "student with half its feed-forward neurons, recovered by "
                                                 "distillation with intermediate-layer terms), qat (quantization-"
                                                 "aware training of the smallest model, then built as INT8: see "
                                                 "--qat-scheme). Each costs training time.")] = None,
    qat_scheme: Annotated[str, typer.Option(help="What QAT trains for: dynamic (ONNX Runtime's dynamic INT8 of the "
                                            "fused graph, simulated exactly: the trained model is built as "
                                            "ort-int8-dynamic and runs at its speed) or static (QDQ with trained "
                                            "activation scales, int8-qat on ONNX Runtime and OpenVINO; unfused, "
                                            "slower).")] = "dynamic",
    only: Annotated[str | None, typer.Option(help="Build only these candidates (comma-separated names from "
                                             "`slimformer doctor`); the baseline is always measured.")] = None,
    include_slow: Annotated[bool, typer.Option(help="Also time variants known to be slow on CPU (NF4, ORT "
                                               "fp16), for their size.")] = False,
    latency_samples: Annotated[int, typer.Option(min=10, help="Texts timed at batch 1 per variant.")] = 200,
    max_length: Annotated[int | None, typer.Option(min=8, help="Token limit for every variant (default: the "
                                                   "model's recorded or configured maximum, capped at 512).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run in --out (same model "
                                         "and data); finished variants are kept.")] = False,
    text_column: TextCol = "text", label_column: LabelCol = "label", split_column: SplitCol = None,
) -> None:
    """The main job: build every variant worth trying on this machine, benchmark them all on your data, and
    recommend the fastest inside your budget, with a report (report.html) and the commands to deploy it.

    Examples: slimformer optimize --model runs/teacher --data trec6 --distill --out runs/trec6
              slimformer optimize --model minilm-l6 --task embedding --data trec6 --out runs/embed
    """
    from .bench.runner import BenchSettings, DataSpec
    from .compress.pipeline import CompressSettings, check_levers
    from .compress.qat import QatConfig, check_scheme
    from .optimize import Budget, OptimizeSettings, miss_text
    from .optimize import optimize as run_optimize
    from .optimize.report import recommendation

    if unlabelled:
        from .data.unlabelled import check_source

        if not distill:
            raise SlimformerError("--unlabelled feeds the student: add --distill")
        check_source(unlabelled)  # before the run directory is made
    if _selection(selection_slice) and not (distill or compress):
        raise SlimformerError("--selection-slice chooses the trained students' epochs and seeds: add --distill or "
                              "--compress")
    settings = OptimizeSettings(
        budget=Budget(max_drop, latency_budget_ms, size_budget_mb, max_class_drop, min_class_texts, min_cosine,
                      confidence),
        threads=tuple(_ints(threads, "--threads")), distill=distill, distill_trials=distill_trials,
        distill_seeds=distill_seeds, student_layers=student_layers, include_slow=include_slow,
        distill_config=DistillConfig(unlabelled=unlabelled, select_fraction=selection_slice),
        compress=CompressSettings(check_levers(tuple(x.strip() for x in (compress or "").split(",") if x.strip())),
                                  qat=QatConfig(scheme=check_scheme(qat_scheme), select_fraction=selection_slice)),
        only=tuple(x.strip() for x in (only or "").split(",") if x.strip()),
        bench=BenchSettings(latency_samples=latency_samples, max_length=max_length, cold_start_runs=0, settle_s=0.5))
    if task is not None:
        from .tasks import get_task

        get_task(task)  # an unknown task is one line naming the tasks
    run_optimize(model, DataSpec(data, text_column, label_column, split_column), out_dir, settings, resume, task)
    results = json.loads((out_dir / "results.json").read_text())
    text, commands = recommendation(results, out_dir)
    out.print(text, highlight=False)
    if not results["selection"]["recommended"]:
        out.print(f"closest: {miss_text(results['selection']['closest']['misses'])}", highlight=False)
    out.print("deploy:\n  " + "\n  ".join(commands), highlight=False)
    out.print(f"report: {out_dir / 'report.html'} and {out_dir / 'report.md'}", highlight=False)


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="An optimize run directory.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Bundle directory to write.")],
    variant: Annotated[str | None, typer.Option(help="Variant name from the report (default: the "
                                                "recommended one).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out.")] = False,
) -> None:
    """Export a variant as a deployable bundle: model files, tokenizer, labels, runtime settings, metrics."""
    from .bundle import export_bundle

    manifest = export_bundle(run_dir, out_dir, variant, overwrite)
    b = manifest["bundle"]
    m = b["metrics"]
    out.print(f"{out_dir}: {b['variant']} ({manifest['format']} on {b['runtime']}, {b['threads']} thread(s)); "
              + ", ".join(f"{split} {m['metric'].replace('_at_', '@')} {100 * q[m['metric']]:.2f}%"
                          for split, q in m["splits"].items())
              + f", p50 {m['latency_ms_end_to_end']['p50']:.3f} ms, {m['size_mb']:.1f} MB", highlight=False)
    out.print(f"score a file: slimformer predict {out_dir} --input texts.txt --out predictions.jsonl", highlight=False)


@app.command()
def predict(
    model: Annotated[str, typer.Argument(help="A bundle from `slimformer export` (or any model/variant "
                                         "directory).")],
    input_file: Annotated[Path, typer.Option("--input", "-i", help=".txt (one text per line) or .csv/.tsv/"
                                             ".jsonl/.parquet with a text column; read as a stream.")],
    out_file: Annotated[Path | None, typer.Option("--out", "-o", help="Write predictions here (.jsonl, .csv or "
                                                  ".parquet; an embedding model's vectors: .jsonl or .parquet): "
                                                  "resumable, run the same command again after a kill. Default: "
                                                  "JSON lines on stdout.")] = None,
    rejects: Annotated[Path | None, typer.Option(help="Rows that cannot be scored (empty, missing, not a string, "
                                                 "bad JSON), as JSON lines (default: OUT's name + .rejects.jsonl; "
                                                 "without --out: stderr).")] = None,
    text_column: TextCol = "text",
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    chunk_size: Annotated[int, typer.Option(min=1, help="Rows per checkpoint.")] = 1024,
    threads: Annotated[int | None, typer.Option(min=1, help="Threads (default: the bundle's; with --engine ray: "
                                                "per actor).")] = None,
    engine: Annotated[str, typer.Option(help="local (this process) or ray (Ray Data, for files larger than one "
                                        "machine should score).")] = "local",
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster to join (default: a local Ray).")] = None,
    actors: Annotated[int, typer.Option(min=1, help="With --engine ray: scoring actors, each loading the bundle "
                                        "once.")] = 2,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out.")] = False,
) -> None:
    """Score a file: one label and its probability per row (a classifier) or one vector per row (an embedding
    model), streamed in chunks with a progress bar; bad rows go to a rejects file, never dropped silently. A killed
    run continues where it stopped when started again.

    Example: slimformer predict runs/demo/bundle --input questions.csv --out predictions.jsonl
    """
    from .bundle import bundle_settings

    threads = threads or bundle_settings(model).get("threads") or 1
    if engine not in ("local", "ray"):
        raise SlimformerError(f"--engine is local or ray, got '{engine}'")
    if engine == "ray":
        if out_file is None:
            raise SlimformerError("--engine ray writes to a file: pass --out")
        from .scale.ray_data import predict_file_ray

        summary = predict_file_ray(model, input_file, out_file, rejects, text_column, batch_size, threads,
                                   actors, ray_address, overwrite)
    else:
        from .scale.predict import predict_file

        summary = predict_file(model, input_file, out_file, rejects, text_column, batch_size, chunk_size, threads,
                               overwrite, write_stdout=sys.stdout.write)
    if out_file is None:
        if summary["rejects_lines"]:
            sys.stderr.write("".join(summary["rejects_lines"]))
        return
    resumed = f" (resumed at row {summary['resumed_at']})" if summary.get("resumed_at") else ""
    out.print(f"{summary['scored']} predictions -> {out_file}; {summary['rejected']} rejected rows -> "
              f"{summary['rejects']}{resumed}", highlight=False)


@app.command()
def serve(
    bundle: Annotated[str, typer.Argument(help="A bundle from `slimformer export` (or any model/variant directory).")],
    host: Annotated[str, typer.Option(help="Address to bind; the default answers this machine only.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8000,
    workers: Annotated[int | None, typer.Option(min=1, help="Server processes, each with its own model and its "
                                                "share of the cores (default: one per core, 1 thread each, or "
                                                "cores / --threads); `slimformer loadtest` tells which is faster "
                                                "for your bundle.")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="Model threads per worker (default: the cores "
                                                "divided among the workers).")] = None,
    max_batch: Annotated[int, typer.Option(min=1, help="Most texts run as one batch.")] = 32,
    target_p99_ms: Annotated[float, typer.Option(min=0.1, help="Latency target of the batcher: it models its own "
                                                 "batch cost, waits for more texts only when batches that size "
                                                 "could not keep up, and only while the oldest text stays inside "
                                                 "half the target.")] = 50.0,
    max_wait_ms: Annotated[float | None, typer.Option(min=0.0, help="A fixed batching window instead (Triton's "
                                                      "max_queue_delay): an idle model always waits this long for "
                                                      "more texts. With --ray: @serve.batch's wait (default 5).")] \
        = None,
    max_queue: Annotated[int, typer.Option(min=1, help="Texts that may wait; beyond: 503 with Retry-After.")] = 512,
    max_texts: Annotated[int, typer.Option(min=1, help="Texts per request; beyond: 413.")] = 64,
    max_chars: Annotated[int, typer.Option(min=1, help="Characters per text; beyond: 413.")] = 2000,
    max_body_bytes: Annotated[int, typer.Option(min=64, help="Request body size; beyond: 413.")] = 1_000_000,
    timeout_s: Annotated[float, typer.Option("--timeout-s", min=0.01, help="Request timeout; beyond: 504.")] = 10.0,
    api_key_file: Annotated[Path | None, typer.Option(help="File holding the API key clients must send "
                                                      "(Authorization: Bearer KEY or X-API-Key); else 401.")] = None,
    ray: Annotated[bool, typer.Option("--ray", help="Serve on Ray Serve instead (local Ray unless "
                                      "--ray-address).")] = False,
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster to join (ray://... or auto).")] = None,
    replicas: Annotated[int, typer.Option(min=1, help="Ray Serve replicas.")] = 1,
    autoscale: Annotated[str | None, typer.Option(help="Ray Serve autoscaling MIN:MAX replicas (instead of "
                                                  "--replicas).")] = None,
) -> None:
    """Serve a bundle over HTTP with dynamic batching: POST /v1/classify {"texts": [...]}; /v1/info, /healthz,
    /readyz, /metrics, and the OpenAPI spec at /docs. SIGTERM finishes the requests in flight, then exits.

    Example: slimformer serve runs/demo/bundle --port 8000
    """
    from .serve import ServeSettings, run_server, startup_lines

    settings = ServeSettings(bundle=bundle, host=host, port=port, threads=threads, workers=workers,
                             max_batch=max_batch, max_wait_ms=max_wait_ms, target_p99_ms=target_p99_ms,
                             max_queue=max_queue, max_texts=max_texts, max_chars=max_chars,
                             max_body_bytes=max_body_bytes, timeout_s=timeout_s,
                             api_key_file=str(api_key_file) if api_key_file else None)
    for line in startup_lines(settings):
        out.print(line, highlight=False)
    if ray:
        from .serve.ray_serve import RayOptions, run_ray_server

        run_ray_server(settings, RayOptions.parse(ray_address, replicas, autoscale))
    else:
        run_server(settings)


@app.command()
def loadtest(
    url: Annotated[str, typer.Argument(help="The server, e.g. http://127.0.0.1:8000 (slimformer serve).")],
    data: Annotated[str, typer.Option("--data", "-d", help="Dataset whose test split supplies the texts (as for "
                                      "--data elsewhere).")] = "trec6",
    input_file: Annotated[Path | None, typer.Option("--input", "-i", help="Or texts from a file (.txt, one per "
                                                    "line, or a .csv/.jsonl/.parquet text column).")] = None,
    text_column: TextCol = "text",
    concurrency: Annotated[int | None, typer.Option(min=1, help="Closed loop: clients each sending when "
                                                    "answered.")] = None,
    rate: Annotated[float | None, typer.Option(min=0.01, help="Open loop (MLPerf Server): Poisson arrivals at this "
                                               "many queries/s.")] = None,
    find_max_qps: Annotated[bool, typer.Option("--find-max-qps", help="Binary-search the highest Poisson rate "
                                               "with p99 under --p99-ms.")] = False,
    p99_ms: Annotated[float | None, typer.Option(min=0.01, help="Latency bound for the verdict.")] = None,
    duration_s: Annotated[float, typer.Option("--duration-s", min=0.1, help="Minimum run duration.")] = 10.0,
    min_queries: Annotated[int, typer.Option(min=1, help="Minimum queries per run.")] = 200,
    max_duration_s: Annotated[float, typer.Option("--max-duration-s", min=0.1, help="Hard stop per run.")] = 60.0,
    texts_per_request: Annotated[int, typer.Option(min=1)] = 1,
    steps: Annotated[int, typer.Option(min=2, help="Runs of the --find-max-qps search.")] = 7,
    api_key_file: Annotated[Path | None, typer.Option(help="File with the server's API key.")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", "-o", help="Write loadtest.json and loadtest.png "
                                                 "(latency percentiles vs offered load) here.")] = None,
    seed: int = 0,
) -> None:
    """Load-test a classification server as MLPerf's Server scenario does: real texts in random order, latency
    from the scheduled send time, p50/p90/p99, achieved vs scheduled throughput, and a VALID/INVALID verdict.

    Examples: slimformer loadtest http://127.0.0.1:8000 --rate 200 --p99-ms 50
              slimformer loadtest http://127.0.0.1:8000 --find-max-qps --p99-ms 50 --out runs/load
    """
    import dataclasses

    from . import loadtest as load
    from .cache import write_json

    if input_file is not None:
        from .data.registry import read_texts

        texts = read_texts(input_file, text_column)
    else:
        from .data import load_dataset

        texts = load_dataset(data)["test"].texts
    key = api_key_file.read_text().strip() if api_key_file else None
    settings = load.LoadSettings(url, concurrency, rate, duration_s, min_queries, max_duration_s, texts_per_request,
                            p99_ms, seed=seed, api_key=key)
    if find_max_qps:
        result = load.find_max_qps(settings, texts, steps, progress=lambda line: out.print(line, highlight=False))
        runs = result["runs"]
        out.print(f"max Poisson rate with p99 <= {p99_ms:g} ms: {result['max_qps']} q/s", highlight=False)
    else:
        if rate is None and concurrency is None:
            settings = dataclasses.replace(settings, concurrency=1)
        result = load.run_load(settings, texts)
        runs = [result] if rate else []
        lat = result["latency_ms"] or {}
        out.print(f"{result['scenario']}: {result['ok']}/{result['queries']} ok in {result['duration_s']} s, "
                  f"{result['achieved_qps']} q/s (scheduled {result['scheduled_qps']}); latency ms p50 "
                  f"{lat.get('p50')}, p90 {lat.get('p90')}, p99 {lat.get('p99')}; {result['verdict']}"
                  + "".join(f"\n  {r}" for r in result["reasons"]), highlight=False)
    if out_dir:
        from .hardware import fingerprint

        write_json(out_dir / "loadtest.json", {"settings": settings.to_dict(), "machine": fingerprint(), **result})
        if runs:
            load.plot_runs(runs, out_dir / "loadtest.png", f"{url}: latency vs offered load", p99_ms)
        out.print(f"results: {out_dir / 'loadtest.json'}" + (f", {out_dir / 'loadtest.png'}" if runs else ""),
                  highlight=False)


@app.command()
def bench(
    model: Annotated[list[str], typer.Option("--model", "--variant", "-m", help="Model or built variant directory; "
                                             "repeat to compare several (the first is the reference for label "
                                             "agreement).")],
    data: DataOpt,
    runtime: Annotated[str | None, typer.Option(help="torch, onnxruntime or openvino (default: the runtime the "
                                                "artifact's format runs on).")] = None,
    option: Annotated[list[str] | None, typer.Option("--option", help="Runtime option KEY=VALUE, e.g. "
                                                     "precision=bf16 (openvino), graph_optimization_level=basic "
                                                     "(onnxruntime), device=cuda.")] = None,
    threads: Annotated[str, typer.Option(help="Thread count(s), comma-separated: each is its own variant.")] = "1",
    out_dir: Annotated[Path | None, typer.Option("--out", "-o", help="Directory for results.json and "
                                                 "results.md.")] = None,
    split: Annotated[str, typer.Option(help="Splits to measure answers on, comma-separated; the first is the "
                                       "decision split (its texts are the ones timed), the others are held out "
                                       "and only reported.")] = "validation,test",
    latency_samples: Annotated[int, typer.Option(min=0, help="Texts timed at batch 1 (0: the whole split).")] = 300,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed calls before timing.")] = 20,
    batch_sizes: Annotated[str, typer.Option(help="Batch sizes for offline throughput.")] = "1,8,32",
    throughput_seconds: Annotated[float, typer.Option(min=0.01, help="Each throughput run lasts this long or "
                                                      "--throughput-texts texts, whichever comes first; 3 runs per "
                                                      "batch size, median and spread reported.")] = 2.0,
    throughput_texts: Annotated[int, typer.Option(min=1, help="See --throughput-seconds.")] = 1024,
    max_length: Annotated[int | None, typer.Option(min=8, help="Token limit for every model (default: each model's "
                                                   "recorded or configured maximum, capped at 512).")] = None,
    cold_start_runs: Annotated[int, typer.Option(min=0, help="Fresh processes timed for cold start "
                                                 "(median; 0 skips).")] = 3,
    text_column: TextCol = "text", label_column: LabelCol = "label", split_column: SplitCol = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
) -> None:
    """Benchmark models on a dataset: accuracy, macro-F1, latency percentiles, throughput, size, memory, cold start.

    Each variant runs in a fresh process with its threads fixed, so thread pools never bleed between variants.
    """
    from .bench.runner import BenchSettings, DataSpec, Variant, run_benchmark
    from .bench.table import to_markdown, to_rich
    from .cache import write_text
    from .data import load_dataset
    from .runtimes import check_options, default_runtime

    options = _options(option or [])
    # a mistyped option or a bad value is refused before anything runs
    lengths = {m: max_length or check_options(runtime or default_runtime(m), options).get("max_length")
               for m in dict.fromkeys(model)}
    variants = [Variant(str(Path(m).expanduser()), runtime, t, options) for m in model
                for t in _ints(threads, "--threads")]
    if len({Path(m).name for m in model}) < len(model):
        variants = [Variant(v.model, v.runtime, v.threads, v.options, name=f"{v.model}-t{v.threads}")
                    for v in variants]
    splits = tuple(x.strip() for x in split.split(",") if x.strip())
    if not splits or len(set(splits)) < len(splits):
        raise SlimformerError(f"--split takes distinct split names, e.g. validation,test; got '{split}'")
    settings = BenchSettings(splits=splits, warmup=warmup, latency_samples=latency_samples or None,
                             batch_sizes=tuple(_ints(batch_sizes, "--batch-sizes")),
                             throughput_min_s=throughput_seconds,
                             throughput_min_texts=throughput_texts, max_length=max_length,
                             cold_start_runs=cold_start_runs)
    spec = DataSpec(data, text_column, label_column, split_column)
    timed = load_dataset(spec.source, spec.text_column, spec.label_column, spec.split_column, spec.seed)[splits[0]]
    for m, length in lengths.items():
        _note_truncation(m, timed.texts, length, f"{splits[0]} texts")
    results = run_benchmark(variants, spec, settings, out_dir)
    if out_dir:
        write_text(out_dir / "results.md", to_markdown(results))
    if as_json:
        print(json.dumps(results, indent=2))
    else:
        out.print(to_rich(results))
        if out_dir:
            out.print(f"results: {out_dir / 'results.json'} (schema: docs/results-schema.md), {out_dir / 'results.md'}")


@app.command()
def build(
    model: Annotated[str, typer.Option("--model", "-m", help="Hugging Face classifier directory (or a built "
                                       "artifact to continue from).")],
    recipe: Annotated[str, typer.Option("--recipe", "-r", help="Comma-separated techniques, each with optional "
                                        ":key=value options, e.g. onnx,ort-optimize,int8-static:method=entropy. "
                                        "See `slimformer techniques`.")],
    calib_data: Annotated[str, typer.Option("--calib-data", help="Dataset whose train split calibrates static "
                                            "INT8 and whose validation split checks every step (as for --data).")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Directory for the built artifact.")],
    calibration_size: Annotated[int, typer.Option(min=1, help="Training texts used for calibration.")] = 256,
    text_column: TextCol = "text", label_column: LabelCol = "label", split_column: SplitCol = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out.")] = False,
) -> None:
    """Build a variant: apply techniques in order. Each step is cached by content hash, checked against its
    input on real validation texts, and recorded (with what it did) in the artifact's manifest.json."""
    from rich.table import Table

    from .data import check_label_space, load_dataset
    from .techniques import build as build_artifact
    from .techniques import context_from_dataset, open_artifact, parse_recipe

    steps = parse_recipe(recipe)
    dataset = load_dataset(calib_data, text_column, label_column, split_column)
    check_label_space(dataset.labels, open_artifact(model).labels, model)
    artifact = build_artifact(model, steps, out_dir, context_from_dataset(dataset, calibration_size), overwrite)
    table = Table("step", "did", "check vs input", "s", title=f"built {out_dir} ({artifact.format})")
    for step in artifact.manifest["steps"]:
        check = step.get("check") or {}
        table.add_row(step["technique"], json.dumps(step["stats"])[:90],
                      f"flips {100 * check.get('label_flip_rate', 0):.1f}%, max Δlogit "
                      f"{check.get('max_abs_logit_diff', 0):.2g}" if check else "-", str(step["seconds"]))
    out.print(table)


@app.command()
def techniques() -> None:
    """List the techniques, the model formats they take, and their options."""
    import dataclasses

    from rich.table import Table

    from .techniques import TECHNIQUES

    table = Table("technique", "takes", "makes", "options (defaults)")
    for name, cls in TECHNIQUES.items():
        opts = ", ".join(f"{f.name}={f.default}" for f in dataclasses.fields(cls))
        table.add_row(name, "/".join(cls.inputs), cls.output or "same", opts or "-")
    out.print(table)


@app.command()
def doctor(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """This machine's fingerprint, what it implies, and the variants worth building here."""
    from rich.table import Table

    from . import hardware, recipes
    from .bench.energy import EnergyMeter

    info = hardware.fingerprint()
    meter = EnergyMeter(gpu=info["gpu"] is not None)
    energy = {**{c.source: "readable" for c in meter.counters}, **meter.not_readable}
    if as_json:
        print(json.dumps({"machine": info, "energy_counters": energy,
                          "advice": recipes.advice(info["cpu"], info["gpu"]),
                          "candidates": [vars(c) for c in recipes.candidates(info["cpu"], info["gpu"])]}, indent=2))
        return
    cpu = info["cpu"]
    out.print(f"[bold]{cpu['model']}[/] · {cpu['arch']} · {cpu['cores']} cores · {info['os']} · "
              f"GPU: {escape(hardware.gpu_text(info['gpu']))}")
    out.print("ISA: " + (" ".join(cpu["isa"]) or "none of AVX2/AVX-512/VNNI/BF16/AMX"))
    out.print("libraries: " + ", ".join(f"{k} {v}" for k, v in info["libraries"].items()))
    out.print("energy counters: " + "; ".join(f"{k} {escape(v)}" for k, v in energy.items()), highlight=False)
    for line in recipes.advice(cpu, info["gpu"]):
        out.print(f"• {escape(line)}")
    table = Table("variant", "recipe", "runtime", "why", title="variants worth building here")
    for c in recipes.candidates(cpu, info["gpu"]):
        table.add_row(c.name, c.recipe or "(as is)", c.runtime + "".join(f" {k}={v}" for k, v in c.options.items()),
                      c.why)
    out.print(table)


def _error(message: object) -> None:
    """The one line a user mistake prints (escaped: `slimformer[onnx]` is text, not rich markup)."""
    Console(stderr=True).print(f"[bold red]error:[/] {escape(str(message))}", highlight=False, soft_wrap=True)


def main() -> None:
    """Entry point: user mistakes print one line and exit 2; bugs keep their traceback."""
    try:
        app()
    except SlimformerError as e:
        _error(e)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted")
        raise SystemExit(130) from None
    except Exception as e:  # a library writing straight to a full disk (torch, onnx, matplotlib), or one not installed
        known = disk_full(e)
        known = DiskFullError(known) if known else missing_library(e)
        if known is None:
            raise
        _error(known)
        raise SystemExit(2) from None
