"""What leaving SkipLayerNormalization unfused is worth on CPU: the same models with and without it, in one run.

    .venv/bin/python benchmarks/skip_layer_norm.py [--threads 1,2] [--out benchmarks/results/skip_layer_norm.json]

ONNX Runtime fuses Add + LayerNormalization into SkipLayerNormalization (offline in the transformer optimizer,
online at graph level extended). slimformer leaves it unfused by default on CPU (ort-optimize's
skip_layer_norm=false, the runtime's fuse_skip_layer_norm=false). This measures both ways, each variant in
its own process through the ordinary benchmark: the default teacher (ONNX FP32 fused, and dynamic INT8) on
real TREC-6 test texts (~13 tokens), and the DistilBERT-base shape on 128-token texts.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from techniques import distilbert_base, long_texts_csv, teacher

from slimformer import hardware
from slimformer.bench.runner import BenchSettings, DataSpec, Variant, run_benchmark
from slimformer.cache import write_json, write_text
from slimformer.data import load_dataset
from slimformer.techniques import build, context_from_dataset, parse_recipe

FUSED = "onnx,ort-optimize:skip_layer_norm=true:bias_gelu=true"
UNFUSED = "onnx,ort-optimize"
PAIRS = {  # name -> (recipe with SkipLayerNormalization, recipe without)
    "ort-fused": (FUSED, UNFUSED),
    "ort-int8-dynamic": (FUSED + ",int8-dynamic", UNFUSED + ",int8-dynamic"),
}


def measure(model: Path, data: DataSpec, threads: list[int], settings: BenchSettings, out: Path) -> list[dict]:
    dataset = load_dataset(data.source, split_column=data.split_column)
    context = context_from_dataset(dataset)
    variants = []
    for name, (fused, unfused) in PAIRS.items():
        with_sln = build(model, parse_recipe(fused), context=context).path
        without = build(model, parse_recipe(unfused), context=context).path
        for t in threads:  # interleaved: with, without, with, without...
            variants += [Variant(str(with_sln), "onnxruntime", t, {"fuse_skip_layer_norm": "true"},
                                 name=f"{name}-sln-t{t}"),
                         Variant(str(without), "onnxruntime", t, {}, name=f"{name}-t{t}")]
    results = run_benchmark(variants, data, settings, out)
    by_name = {v["name"]: v for v in results["variants"]}
    rows = []
    for name in PAIRS:
        for t in threads:
            a, b = by_name[f"{name}-sln-t{t}"], by_name[f"{name}-t{t}"]
            rows.append({"variant": name, "threads": t,
                         "model_p50_ms_with_sln": a["latency_ms"]["model"]["p50"],
                         "model_p50_ms_without": b["latency_ms"]["model"]["p50"],
                         "e2e_p50_ms_with_sln": a["latency_ms"]["end_to_end"]["p50"],
                         "e2e_p50_ms_without": b["latency_ms"]["end_to_end"]["p50"],
                         "speedup_e2e": round(a["latency_ms"]["end_to_end"]["p50"] /
                                              b["latency_ms"]["end_to_end"]["p50"], 3),
                         "accuracy_with_sln": a["accuracy"], "accuracy_without": b["accuracy"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/skip_layer_norm.json"))
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    settings = BenchSettings(latency_samples=200, warmup=20, batch_sizes=(1,), throughput_samples=32,
                             cold_start_runs=0)
    work = Path(tempfile.mkdtemp(prefix="slimformer-sln-"))
    long_csv = long_texts_csv(work / "trec6-128.csv")
    parts = {
        "teacher (minilm-l6 on trec6, real test texts)": measure(teacher(), DataSpec("trec6"), threads, settings,
                                                                   work / "teacher"),
        "DistilBERT-base shape, 128 tokens": measure(
            distilbert_base(load_dataset(str(long_csv), split_column="split").labels),
            DataSpec(str(long_csv), split_column="split"), threads, settings, work / "distilbert"),
    }
    write_json(args.out, {"machine": hardware.fingerprint(), "parts": parts})
    lines = ["| model | variant | threads | e2e p50 ms with SkipLayerNorm | without | speed-up | model p50 ms "
             "with / without |", "|---|---|---|---|---|---|---|"]
    for part, rows in parts.items():
        for r in rows:
            lines.append(f"| {part} | {r['variant']} | {r['threads']} | {r['e2e_p50_ms_with_sln']:.3f} | "
                         f"{r['e2e_p50_ms_without']:.3f} | {r['speedup_e2e']:.2f}× | "
                         f"{r['model_p50_ms_with_sln']:.3f} / {r['model_p50_ms_without']:.3f} |")
    write_text(args.out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
