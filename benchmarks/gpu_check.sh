#!/bin/sh
# Everything that needs a GPU, in one run of under 8 minutes: the CUDA tests, then the CPU-vs-GPU benchmark.
#
#   sh benchmarks/gpu_check.sh [INPUTS]     # INPUTS: a folder made by `python benchmarks/gpu.py --prepare INPUTS`
#                                           # (the trained teacher in fp16 + TREC-6 as CSV, ~46 MB) for a machine
#                                           # without network; without it: TREC-6 if reachable, else synthetic texts
#
# Needs a Python with slimformer's dependencies, a CUDA build of torch, onnxruntime-gpu and nvidia-ml-py
# (pip install '.[all,gpu,test]' after `pip uninstall -y onnxruntime`). PYTHON picks the interpreter; OUT the folder
# the benchmark JSON goes to (default benchmarks/results).
# On this workplace's H200 image (torch 2.11+cu130, no network) it ran with bitsandbytes 0.50.2 (its cuda130 and
# cpu libraries only, 4.5 MB) and pydantic (typer) unpacked into a carried folder on PYTHONPATH; that image has no
# onnxruntime-gpu, whose wheel is too big to carry, so the CUDA/TensorRT provider tests skip there.
set -u
PYTHON=${PYTHON:-python}
OUT=${OUT:-benchmarks/results}
INPUTS=${1:-}
export PYTHONPATH="$(pwd)/src${PYTHONPATH:+:$PYTHONPATH}"

"$PYTHON" - <<'EOF'
import importlib.util, json
from slimformer import hardware
from slimformer.bench.energy import EnergyMeter
info = hardware.fingerprint()
meter = EnergyMeter(gpu=info["gpu"] is not None)
print(json.dumps({"gpu": info["gpu"], "libraries": info["libraries"],
                  "energy": {**{c.source: "readable" for c in meter.counters}, **meter.not_readable},
                  "bitsandbytes": importlib.util.find_spec("bitsandbytes") is not None}, indent=1))
EOF

# the GPU tests and the CPU tests of the same code (device options, energy counters, throughput batches)
timeout 270 "$PYTHON" -m pytest -q -rs -p no:cacheprovider tests/test_cuda.py tests/runtimes/test_devices.py \
    tests/bench/test_energy.py tests/bench/test_scenarios.py tests/test_doctor.py
tests=$?

if [ -n "$INPUTS" ]; then
    set -- --model "$INPUTS/teacher" --data "$INPUTS/trec6.csv" --max-length 64
else
    set --
fi
timeout 200 "$PYTHON" benchmarks/gpu.py --threads 4 --latency-samples 150 --out "$OUT/gpu.json" "$@"
bench=$?
echo "tests exit $tests, benchmark exit $bench"
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ]
