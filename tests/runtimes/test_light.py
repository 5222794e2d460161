"""An ONNX model is served with onnxruntime (or openvino), tokenizers and numpy alone: no torch, no transformers."""

import json
import subprocess
import sys


def test_runtimes_do_not_import_techniques():
    code = "import slimformer.runtimes, sys; assert 'slimformer.techniques' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0


def test_onnx_model_loads_and_answers_without_torch_or_transformers(tiny_onnx):
    code = f"""
import json, sys
from slimformer.runtimes import load_predictor
answers = {{r: load_predictor({str(tiny_onnx)!r}, r).predict(["goal match team", "pasta recipe"])
           for r in ("onnxruntime", "openvino")}}
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & {{"torch", "transformers", "slimformer.techniques"}})
print(json.dumps({{"answers": answers, "heavy": heavy, "techniques": "slimformer.techniques" in sys.modules}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["heavy"] == [] and not result["techniques"]
    assert all(len(a) == 2 for a in result["answers"].values())
