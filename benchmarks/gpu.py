"""CPU and GPU variants of one model in one run: latency, throughput at batch 1…256, peak VRAM, energy; writes JSON.

    python benchmarks/gpu.py [--model DIR] [--data CSV] [--threads 4] [--out benchmarks/results/gpu.json]
    python benchmarks/gpu.py --prepare DIR    # on a machine with the cache: DIR/teacher (fp16 weights) + DIR/trec6.csv

The GPU variants are the ones `doctor` lists for this machine (recipes.candidates with hardware.gpu()): PyTorch
fp32/fp16/bf16 and NF4 on the device, ONNX Runtime's CUDA provider (fp32, fp16, dynamic INT8) with IO binding, and
TensorRT where it is there; the PyTorch FP32 and ONNX Runtime dynamic INT8 CPU variants are measured beside them at
the same thread count. Each variant runs in its own process (bench.runner); energy is joules per 1,000 texts over the
throughput runs at the fastest batch size, RAPL (CPU package) and NVML (GPU) where readable.

Model: --model, else the default teacher (MiniLM-L6 fine-tuned on TREC-6) when it is in the cache, else a
MiniLM-L6-shaped classifier with random weights (speed does not depend on the weights' values; accuracy is then
not judged, and `model` says so). A teacher saved by --prepare in fp16 (to travel in 45 MB) is cast back to fp32 here.
Data: --data (a CSV with text, label, split), else TREC-6 when it can be loaded, else synthetic topic texts.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

from slimformer import hardware, recipes
from slimformer.bench.runner import BenchSettings, DataSpec, Variant, run_benchmark
from slimformer.cache import cache_dir, is_complete, write_json
from slimformer.errors import SlimformerError
from slimformer.techniques import build, context_from_dataset, parse_recipe

TEACHER = cache_dir() / "teachers" / "minilm-l6-trec6"
CPU_VARIANTS = ("torch-fp32", "ort-int8-dynamic")


def prepare(out: Path) -> None:
    """What a machine without network or cache needs: the teacher in fp16 safetensors and TREC-6 as one CSV."""
    import torch

    from slimformer.data import load_dataset
    from slimformer.models import load_classifier

    model, tokenizer, _ = load_classifier(str(TEACHER))
    model.to(torch.float16).save_pretrained(out / "teacher")
    tokenizer.save_pretrained(out / "teacher")
    ds = load_dataset("trec6")
    with open(out / "trec6.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "label", "split"])
        writer.writeheader()
        for split in ("train", "validation", "test"):
            writer.writerows({"text": t, "label": ds.labels[y], "split": split}
                             for t, y in zip(ds[split].texts, ds[split].labels, strict=True))


def fp32_copy(model: Path, work: Path) -> Path:
    """The model with float32 weights (a --prepare'd teacher travels in fp16)."""
    config = json.loads((model / "config.json").read_text())
    if config.get("dtype", config.get("torch_dtype")) in (None, "float32"):
        return model
    import torch

    from slimformer.models import load_classifier

    net, tokenizer, _ = load_classifier(str(model))
    net.to(torch.float32).save_pretrained(work / "fp32")
    tokenizer.save_pretrained(work / "fp32")
    return work / "fp32"


def random_minilm(labels: list[str], texts: list[str], work: Path) -> Path:
    """MiniLM-L6's shape (6 layers, hidden 384, 12 heads), random weights, a word-level vocabulary of the texts."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    torch.manual_seed(0)
    out = work / "minilm-shaped-random"
    out.mkdir(parents=True)
    words = sorted({w for t in texts for w in t.lower().split()})
    (out / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    config = BertConfig(vocab_size=len(words) + 5, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                        intermediate_size=1536, num_labels=len(labels), id2label=dict(enumerate(labels)),
                        label2id={lab: i for i, lab in enumerate(labels)})
    BertForSequenceClassification(config).save_pretrained(out)
    BertTokenizer(vocab=str(out / "vocab.txt")).save_pretrained(out)
    return out


def data_spec(path: Path | None, work: Path) -> tuple[DataSpec, str]:
    if path:
        return DataSpec(str(path), split_column="split"), f"{path.name} (real texts)"
    try:
        from slimformer.data import load_dataset

        load_dataset("trec6")
        return DataSpec("trec6"), "trec6 (real texts)"
    except SlimformerError:  # offline and not cached
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from conftest import keyword_rows

        rows = keyword_rows(1200)
        for i, r in enumerate(rows):
            r["split"] = ("train", "validation", "test")[i % 10 // 8 + (i % 10 == 9)]
        synthetic = work / "topics.csv"
        with open(synthetic, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["text", "label", "split"])
            writer.writeheader()
            writer.writerows(rows)
        return DataSpec(str(synthetic), split_column="split"), "synthetic topic texts (TREC-6 not reachable)"


def summary(results: dict) -> list[dict]:
    rows = []
    for v in results["variants"]:
        best = max(v["throughput"], key=lambda t: t["texts_per_s"])
        memory, energy = v["memory"], v["energy"]
        rows.append({"variant": v["name"], "device": v["predictor"].get("device", "cpu"),
                     "e2e_p50_ms": v["latency_ms"]["end_to_end"]["p50"],
                     "model_p50_ms": v["latency_ms"]["model"]["p50"],
                     "texts_per_s": {t["batch_size"]: t["texts_per_s"] for t in v["throughput"]},
                     "best_batch": best["batch_size"], "peak_vram_mb": memory["peak_vram_mb"],
                     "peak_vram_nvml_mb": memory["peak_vram_nvml_mb"], "peak_rss_mb": memory["peak_rss_mb"],
                     "size_mb": v["size_mb"], "energy_j_per_1k_texts": energy["joules_per_1k_texts"],
                     "energy_sources": sorted(energy["sources"]), "energy_not_readable": energy["not_readable"],
                     "validation_accuracy": v["quality"]["validation"]["accuracy"],
                     "label_flips_vs_first": (v["agreement"] or {}).get("label_flip_rate", 0.0)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--max-length", type=int, help="tokens per text (default: the model's; the teacher was "
                        "trained at 64, which a --prepare'd copy no longer records)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu.json"))
    parser.add_argument("--prepare", type=Path, help="write DIR/teacher and DIR/trec6.csv, and stop")
    args = parser.parse_args()
    if args.prepare:
        prepare(args.prepare)
        return
    info = hardware.fingerprint()
    if not info["gpu"]:
        raise SystemExit("no CUDA GPU here (hardware.gpu() found none): nothing to compare")
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="slimformer-gpu-"))
    data, data_note = data_spec(args.data, work)
    from slimformer.data import load_dataset

    dataset = load_dataset(data.source, split_column=data.split_column)
    if args.model:
        model, model_note = fp32_copy(args.model, work), f"{args.model} (given with --model)"
    elif is_complete(TEACHER):
        model, model_note = TEACHER, "minilm-l6 fine-tuned on trec6"
    else:
        model = random_minilm(dataset.labels, dataset["train"].texts, work)
        model_note = "MiniLM-L6 shape, random weights (accuracy not judged)"
    context = context_from_dataset(dataset)
    chosen = [c for c in recipes.candidates(info["cpu"], info["gpu"]) if c.name in CPU_VARIANTS or
              c.options.get("device") in ("cuda", "tensorrt")]
    variants, failed = [], []
    for c in chosen:
        try:
            path = build(model, parse_recipe(c.recipe), context=context).path if c.recipe else model
        except SlimformerError as e:
            failed.append({"variant": c.name, "error": str(e)})
            continue
        variants.append(Variant(str(path), c.runtime, args.threads, c.options, name=c.name))
    # throughput: each repeat until 0.5 s or 1,024 texts, so ten variants fit in about four minutes
    settings = BenchSettings(latency_samples=args.latency_samples, batch_sizes=recipes.GPU_BATCH_SIZES,
                             max_length=args.max_length,
                             throughput_min_s=0.5, throughput_min_texts=1024, cold_start_runs=0, settle_s=0.3)
    results = run_benchmark(variants, data, settings, work / "run", keep_going=True)
    report = {"command": " ".join(sys.argv), "machine": info, "model": model_note, "data": data_note,
              "threads": args.threads, "seconds": round(time.perf_counter() - started, 1),
              "rows": summary(results), "failed_builds": failed, "failed_runs": results.get("failed", []),
              "results": results}
    write_json(args.out, report)
    for r in report["rows"]:
        best = max(r["texts_per_s"].values())
        print(f"{r['variant']:24} {r['device']:7} p50 {r['e2e_p50_ms']:8.3f} ms  best {best:9.0f}"
              f" texts/s @{r['best_batch']:<4} VRAM {r['peak_vram_nvml_mb']} MB  "
              f"energy {r['energy_j_per_1k_texts']} J/1k ({'+'.join(r['energy_sources']) or 'not readable'})")


if __name__ == "__main__":
    main()
