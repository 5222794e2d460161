#!/bin/sh
# Students that only a GPU affords, in one run of under 9 minutes: `benchmarks/compress.py`'s kdx (kdus with 20
# perturbed copies of every training text: 101,333 teacher-labelled texts on TREC-6) for three seeds, each followed by dynamic
# QAT, distilled on CUDA; then each student and QAT model built as ONNX Runtime dynamic INT8 (the variant QAT trains
# for), so the artifacts, not the checkpoints, travel back to be timed and scored on the CPU that serves them.
#
#   python benchmarks/gpu.py --prepare INPUTS      # here: the teacher in fp16 + TREC-6 as CSV (~46 MB)
#   mkdir INPUTS/assets; cp -r ~/.cache/slimformer/assets/trec6 ~/.cache/slimformer/assets/movie-dialog INPUTS/assets/
#   sh benchmarks/gpu_distill.sh INPUTS            # there; SEEDS and STUDENTS override 42,43,44 and kdx
#
# Writes to $OUT (default runs/gpu-distill): STUDENT-gpu.json (each model's manifest: FP32 and simulated-INT8
# accuracy per split, training time; the machine), train.log.gz, and STUDENT[-qatd]-sSEED.onnx.tar.gz.aa, .ab, ...
# (each INT8 artifact in parts of 16 MB, ~13 MB for a 3-layer student: `cat NAME.onnx.tar.gz.* | tar xz` gives the
# artifact folder, named for `compress.py --artifacts`).
# Needs optuna (carried as wheels where the image lacks it) and a CUDA build of torch.
set -u
INPUTS=$(cd "${1:?the folder made by gpu.py --prepare, with assets/}" && pwd)
OUT=${OUT:-runs/gpu-distill}
SEEDS=${SEEDS:-42,43,44}
STUDENTS=${STUDENTS:-kdx}
PYTHON=${PYTHON:-python3}
WORK=${WORK:-/tmp/gpu-distill}
HERE=$(pwd)
mkdir -p "$OUT" "$WORK"
export PYTHONPATH="$HERE/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export SLIMFORMER_CACHE=${SLIMFORMER_CACHE:-$WORK/cache}
mkdir -p "$SLIMFORMER_CACHE/assets" && cp -r "$INPUTS"/assets/* "$SLIMFORMER_CACHE/assets/" \
    && cp "$INPUTS/trec6.csv" "$WORK/" || exit 1
lscpu | grep -E '^Model name'
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader

# the teacher travels in fp16: distil from its fp32 copy
TEACHER=$(cd benchmarks && "$PYTHON" -c "
from pathlib import Path
from gpu import fp32_copy
print(fp32_copy(Path('$INPUTS/teacher'), Path('$WORK')))") || exit 1

(cd "$WORK" && timeout "${TRAIN_S:-430}" "$PYTHON" "$HERE/benchmarks/compress.py" --data trec6.csv \
    --teacher "$TEACHER" --runs "$WORK/runs" --students "$STUDENTS" --qat "$STUDENTS" --qat-scheme dynamic \
    --seeds "$SEEDS" --stage train) 2>&1 | tr '\r' '\n' | grep -v -E '^\s*$' > "$WORK/train.log"
grep -v -E ' [0-9]+/[0-9]+ ' "$WORK/train.log" | tail -n 40
gzip -c "$WORK/train.log" > "$OUT/train.log.gz"

# collect the figures; build each model as ORT dynamic INT8; pack it in parts that fit the way back
"$PYTHON" - "$WORK" "$OUT" "$STUDENTS" "$SEEDS" <<'EOF'
import json
import subprocess
import sys
from pathlib import Path

from slimformer import hardware, recipes
from slimformer.cache import is_complete, read_manifest
from slimformer.data import load_dataset
from slimformer.techniques import build, context_from_dataset, parse_recipe

work, out, names, seeds = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3].split(","), sys.argv[4].split(",")
runs = work / "runs" / "trec6.csv"
recipe = recipes.qat_candidates("dynamic")[0].recipe
figures = {"machine": hardware.fingerprint(), "int8_weight_type": recipes.int8_weight_type(), "recipe": recipe,
           "models": {}}
context = context_from_dataset(load_dataset(str(work / "trec6.csv")), 256)
for name in names:
    for seed in seeds:
        for variant, model in ((f"{name}-s{seed}", runs / name / f"seed-{seed}" / "model"),
                               (f"{name}-qatd-s{seed}", runs / f"{name}-qatd" / f"seed-{seed}")):
            if not is_complete(model):
                continue
            figures["models"][variant] = {k: v for k, v in read_manifest(model).items() if k != "recipe"}
            target = work / "build" / f"{variant}-ort-int8-dynamic"
            try:
                build(str(model), parse_recipe(recipe), target, context, overwrite=True)
            except Exception as e:  # the figures still come back
                print(f"{variant}: building {recipe} failed: {e}")
                continue
            subprocess.run(f"tar czf - -C {target.parent} {target.name} | split -b 16000000 - "
                           f"{out}/{variant}.onnx.tar.gz.", shell=True, check=True)
(out / f"{names[0]}-gpu.json").write_text(json.dumps(figures, indent=1, default=str))
for variant, m in figures["models"].items():
    print(variant, {split: round(100 * v["accuracy"], 2) for split, v in m["metrics"].items()},
          "simulated INT8:", {split: round(100 * v["accuracy"], 2)
                              for split, v in (m.get("simulated_int8_metrics") or {}).items()},
          f"{m.get('train_seconds', 0):.0f} s")
EOF
ls -la "$OUT"
