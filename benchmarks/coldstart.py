"""Cold start of the MiniLM-L6 INT8 ONNX variant against PyTorch FP32, in one run; writes JSON and markdown.

    .venv/bin/python benchmarks/coldstart.py [--runs 5] [--out benchmarks/results/coldstart.json]

Cold start: a fresh process (interpreter start, imports, load, first answer to one real TREC-6 question), timed
from outside, median of --runs (bench.runner.cold_start). The ONNX variant is served without torch or
transformers (onnxruntime, tokenizers, numpy); the script records which heavy modules its process imported.
Model: the default teacher (MiniLM-L6 fine-tuned on TREC-6) when it is in the cache, else MiniLM-L6 with an
untrained classification head (cold start does not depend on the weights' values; `model` says which).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from techniques import TEACHER

from slimformer import hardware, recipes
from slimformer.artifacts import DEFAULT_RUNTIME, open_artifact
from slimformer.bench.runner import Variant, cold_start
from slimformer.cache import cache_dir, dir_size_mb, is_complete, write_json
from slimformer.data import load_dataset
from slimformer.models import load_tokenizer, resolve
from slimformer.techniques import build, context_from_dataset, parse_recipe

PROBE = """
import json, sys
from slimformer.runtimes import load_predictor
load_predictor(sys.argv[1], "onnxruntime").predict([sys.argv[2]])
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & {"torch", "transformers", "onnx"})))
"""


def model(labels: list[str]) -> tuple[Path, str]:
    if is_complete(TEACHER):
        return TEACHER, "minilm-l6 fine-tuned on trec6"
    import torch
    from transformers import AutoModelForSequenceClassification

    out = cache_dir() / "bench-models" / "minilm-l6-untrained-head"
    if not (out / "config.json").is_file():
        torch.manual_seed(0)
        AutoModelForSequenceClassification.from_pretrained(
            resolve("minilm-l6"), num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={lab: i for i, lab in enumerate(labels)}).save_pretrained(out)
        load_tokenizer(resolve("minilm-l6")).save_pretrained(out)
    return out, "minilm-l6 with an untrained classification head (no teacher in the cache)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/coldstart.json"))
    args = parser.parse_args()
    info = hardware.fingerprint()
    dataset = load_dataset("trec6")
    source, what = model(dataset.labels)
    recipe = next(c.recipe for c in recipes.candidates(info["cpu"], info["gpu"]) if c.name == "ort-int8-dynamic")
    int8 = build(source, parse_recipe(recipe), context=context_from_dataset(dataset))
    text = dataset["validation"].texts[0]
    rows = []
    for threads in (int(t) for t in args.threads.split(",")):
        for name, artifact in (("torch-fp32", open_artifact(source)), ("ort-int8-dynamic", int8)):
            runtime = DEFAULT_RUNTIME[artifact.format]
            cold = cold_start(Variant(str(artifact.path), runtime, threads), text, args.runs)
            size = round(sum(dir_size_mb(f) for f in artifact.model_files()), 1)
            rows.append({"variant": name, "threads": threads, "runtime": runtime, "size_mb": size, **cold})
    probe = subprocess.run([sys.executable, "-c", PROBE, str(int8.path), text], capture_output=True, text=True,
                           check=True)
    report = {"machine": info, "model": what, "recipe": recipe, "runs": args.runs, "rows": rows,
              "heavy_modules_imported_by_the_onnx_process": json.loads(probe.stdout.strip().splitlines()[-1])}
    write_json(args.out, report)
    args.out.with_suffix(".md").write_text(render(report))
    print(render(report))


def render(report: dict) -> str:
    cpu = report["machine"]["cpu"]
    lines = [f"# Cold start ({cpu['model']}, {' '.join(cpu['isa'])})", "",
             f"{report['model']}; INT8 recipe `{report['recipe']}`; median of {report['runs']} fresh processes "
             "(interpreter start, imports, load, first answer), timed from outside.", "",
             "| variant | threads | size MB | cold start s | import s | load s | first answer s |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['variant']} | {r['threads']} | {r['size_mb']} | {r['median_s']} | {r['import_s']} | "
              f"{r['load_s']} | {r['first_answer_s']} |" for r in report["rows"]]
    heavy = ", ".join(report["heavy_modules_imported_by_the_onnx_process"]) or "none (no torch, no transformers)"
    lines += ["", f"Heavy modules imported by the ONNX process: {heavy}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
