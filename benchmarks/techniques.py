"""Every technique/runtime variant against PyTorch FP32 eager, measured in one run; writes JSON.

    .venv/bin/python benchmarks/techniques.py [--threads 1,2] [--out benchmarks/results/techniques.json]

Part 1: the default teacher (MiniLM-L6 fine-tuned on TREC-6) on real TREC-6 texts, batch 1: "best within 1 point"
is chosen on the validation split; the test split is held out and reported beside it.
Part 2: a DistilBERT-base-shaped classifier (random weights, so accuracy is meaningless and not
judged) on inputs of exactly 128 tokens, made by joining real TREC-6 test questions.
Ratios compare end-to-end p50 latency with PyTorch FP32 at the same thread count, in the same run.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
from dataclasses import replace
from pathlib import Path

from slimformer import hardware, recipes
from slimformer.bench.runner import BenchSettings, DataSpec, Variant, remeasure, run_benchmark
from slimformer.cache import cache_dir, write_json
from slimformer.data import load_dataset
from slimformer.models import load_tokenizer, resolve
from slimformer.techniques import build, context_from_dataset, parse_recipe
from slimformer.training import TrainConfig, train_classifier

TEACHER = cache_dir() / "teachers" / "minilm-l6-trec6"


def teacher() -> Path:
    train_classifier("minilm-l6", load_dataset("trec6"), TEACHER, TrainConfig(max_length=64))  # as make demo
    return TEACHER


def distilbert_base(labels: list[str]) -> Path:
    """DistilBERT-base shape (6 layers, dim 768, 12 heads), random weights, the uncased WordPiece vocab."""
    import torch
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    out = cache_dir() / "bench-models" / "distilbert-base-random"
    if (out / "config.json").is_file():
        return out
    torch.manual_seed(0)
    config = DistilBertConfig(num_labels=len(labels), id2label=dict(enumerate(labels)),
                              label2id={lab: i for i, lab in enumerate(labels)})
    DistilBertForSequenceClassification(config).save_pretrained(out)
    load_tokenizer(resolve("minilm-l6")).save_pretrained(out)
    return out


def long_texts_csv(path: Path, tokens: int = 128) -> Path:
    """Real TREC-6 questions joined until each text has at least `tokens` tokens (truncated to exactly 128)."""
    ds = load_dataset("trec6")
    tok = load_tokenizer(resolve("minilm-l6"))
    rows = []
    for split in ("train", "validation", "test"):
        s = ds[split]
        for i in range(0, min(len(s), 400 if split == "train" else 200)):
            parts, j = [], i
            while len(tok(" ".join(parts))["input_ids"]) < tokens:
                parts.append(s.texts[j % len(s)])
                j += 7
            rows.append({"text": " ".join(parts), "label": ds.labels[s.labels[i]], "split": split})
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def run_part(model: Path, data: DataSpec, candidates, threads: list[int], settings: BenchSettings, out: Path) -> dict:
    dataset = load_dataset(data.source, split_column=data.split_column)
    context = context_from_dataset(dataset)
    variants = []
    for c in candidates:
        artifact = build(model, parse_recipe(c.recipe), context=context) if c.recipe else None
        path = str(artifact.path if artifact else model)
        variants += [Variant(path, c.runtime, t, c.options, name=f"{c.name}-t{t}") for t in threads]
    # baseline first: label agreement is measured against PyTorch FP32 at the first thread count
    return run_benchmark(variants, data, settings, out)


def ratios(results: dict, threads: list[int], judge_accuracy: bool) -> dict:
    by_name = {v["name"]: v for v in results["variants"]}
    table = {}
    for t in threads:
        base = by_name[f"torch-fp32-t{t}"]
        rows = []
        for v in results["variants"]:
            if v["threads"] != t:
                continue
            rows.append({
                "variant": v["name"].rsplit("-t", 1)[0],
                "e2e_p50_ms": v["latency_ms"]["end_to_end"]["p50"],
                "model_p50_ms": v["latency_ms"]["model"]["p50"],
                "speedup_e2e_p50": round(base["latency_ms"]["end_to_end"]["p50"] / v["latency_ms"]["end_to_end"]["p50"],
                                         2),
                **{f"accuracy_{split}": round(100 * q["accuracy"], 2) for split, q in v["quality"].items()},
                **{f"accuracy_drop_points_{split}": round(100 * (base["quality"][split]["accuracy"] - q["accuracy"]), 2)
                   for split, q in v["quality"].items()},
                "batch_invariant": not any(q["batch_invariance"]["flagged"] for q in v["quality"].values()),
                "label_flip_rate_vs_fp32": (v["agreement"] or {}).get("label_flip_rate", 0.0),
                "size_mb": v["size_mb"],
                "peak_rss_mb": v["memory"]["peak_rss_mb"],
                "texts_per_s_bs32": v["throughput"][-1]["texts_per_s"],
            })
        eligible = [r for r in rows if not judge_accuracy or r["accuracy_drop_points_validation"] <= 1.0]
        best = max(eligible, key=lambda r: r["speedup_e2e_p50"])
        table[str(t)] = {"rows": rows, "best_within_1pt": best}
    return table


def recheck(results: dict, table: dict, data: DataSpec, settings: BenchSettings, out: Path) -> list[dict]:
    """The best variant against PyTorch FP32 again, twice per thread count, alternating (see remeasure)."""
    pairs = [(f"torch-fp32-t{t}", f"{block['best_within_1pt']['variant']}-t{t}") for t, block in table.items()]
    return remeasure(results, pairs, data, settings, out)


def recheck_line(checks: list[dict], times: str = "×") -> str:
    """One line for a report: each re-measured pair's ratio in the run, then in every round."""
    return "; ".join(f"{c['candidate']} {c['first_run_speedup']:.2f}{times} in the run, then "
                     + " and ".join(f"{r['speedup']:.2f}{times}" for r in c["rounds"]) for c in checks)


def render(report: dict) -> str:
    """Markdown tables of a report (what the README quotes)."""
    cpu = report["machine"]["cpu"]
    lines = [f"Machine: {cpu['model']}, {cpu['cores']} cores, ISA {' '.join(cpu['isa'])}; "
             + ", ".join(f"{k} {v}" for k, v in report["machine"]["libraries"].items()
                         if k in ("torch", "onnxruntime", "openvino", "bitsandbytes")), ""]
    for part in ("teacher", "distilbert_seq128"):
        block = report[part]
        lines += [f"**{block['model']}** — {block['data']}", "",
                  "| variant | threads | e2e p50 ms | model p50 ms | speed-up (e2e p50) | val acc % | val Δ pts | "
                  "test acc % (held out) | test Δ pts | label flips | batch-invariant | size MB | peak RSS MB | "
                  "texts/s @32 |", "|" + "---|" * 14]
        for t, b in block["by_threads"].items():
            for r in b["rows"]:
                lines.append(f"| {r['variant']} | {t} | {r['e2e_p50_ms']:.2f} | {r['model_p50_ms']:.2f} | "
                             f"{r['speedup_e2e_p50']:.2f}× | {r['accuracy_validation']:.2f} | "
                             f"{r['accuracy_drop_points_validation']:.2f} | "
                             f"{r.get('accuracy_test', float('nan')):.2f} | "
                             f"{r.get('accuracy_drop_points_test', float('nan')):.2f} | "
                             f"{100 * r['label_flip_rate_vs_fp32']:.1f}% | "
                             f"{'yes' if r['batch_invariant'] else 'no'} | "
                             f"{r['size_mb']:.1f} | "
                             f"{r['peak_rss_mb']:.0f} | {r['texts_per_s_bs32']:.0f} |")
        lines.append("")
        lines += [f"Re-measured, alternating ({block['model'].split(',')[0]}): {recheck_line(block['recheck'])}", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/techniques.json"))
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--render", action="store_true", help="only render --out's JSON as markdown")
    args = parser.parse_args()
    if args.render:
        args.out.with_suffix(".md").write_text(render(json.loads(args.out.read_text())))
        return
    threads = [int(t) for t in args.threads.split(",")]
    settings = BenchSettings(latency_samples=args.latency_samples, warmup=20, cold_start_runs=1)
    info = hardware.fingerprint()
    cands = recipes.candidates(info["cpu"], info["gpu"], include_slow=True)
    report = {"machine": info, "threads": threads, "settings": vars(settings) | {"batch_sizes": [1, 8, 32]}}
    work = Path(tempfile.mkdtemp(prefix="slimformer-bench-"))

    trec6 = DataSpec("trec6")
    teacher_results = run_part(teacher(), trec6, cands, threads, settings, work / "teacher")
    table = ratios(teacher_results, threads, judge_accuracy=True)
    report["teacher"] = {"model": "minilm-l6 fine-tuned on trec6",
                         "data": "trec6, real texts, batch 1; best chosen on validation, test held out",
                         "by_threads": table,
                         "recheck": recheck(teacher_results, table, trec6, settings, work / "teacher-recheck")}
    report["onnx_fp32_max_abs_logit_diff_vs_pytorch"] = next(
        s["check"]["max_abs_logit_diff"] for v in teacher_results["variants"] if v["name"].startswith("ort-fp32")
        for s in json.loads((Path(v["model"]) / "manifest.json").read_text())["steps"] if s["technique"] == "onnx")

    long_csv = long_texts_csv(work / "trec6-128.csv")
    ds = load_dataset(str(long_csv), split_column="split")
    distil = distilbert_base(ds.labels)
    seq_cands = [c for c in cands if c.name not in ("torch-nf4", "ort-fp16")]
    long_data = DataSpec(str(long_csv), split_column="split")
    # accuracy is not judged on random weights: answers on the validation split only
    distil_results = run_part(distil, long_data, seq_cands, threads, replace(settings, splits=("validation",)),
                              work / "distilbert")
    table = ratios(distil_results, threads, judge_accuracy=False)
    report["distilbert_seq128"] = {"model": "DistilBERT-base shape, random weights (accuracy not judged)",
                                   "data": "real TREC-6 questions joined to 128 tokens, batch 1", "by_threads": table,
                                   "recheck": recheck(distil_results, table, long_data, settings,
                                                      work / "distilbert-recheck")}
    report["raw_results_dir"] = str(work)
    write_json(args.out, report)
    args.out.with_suffix(".md").write_text(render(report))
    for part in ("teacher", "distilbert_seq128"):
        for t, block in report[part]["by_threads"].items():
            print(f"{part} t{t}: best {block['best_within_1pt']['variant']} "
                  f"{block['best_within_1pt']['speedup_e2e_p50']}x")
        for c in report[part]["recheck"]:
            print(f"{part} re-measured {c['candidate']}: {[r['speedup'] for r in c['rounds']]}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
