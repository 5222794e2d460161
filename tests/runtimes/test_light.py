"""A light install (no torch, no transformers) serves an ONNX model with onnxruntime (or openvino), tokenizers and
numpy alone, and the CLI still starts. Simulated in a subprocess where importing torch or transformers fails as it
does when they are not installed."""

import json
import subprocess
import sys

WITHOUT_TORCH = """
import importlib.abc, sys

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("torch", "transformers"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, NotInstalled())
"""


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT_TORCH + code], capture_output=True, text=True, timeout=300)


def test_runtimes_do_not_import_techniques():
    code = "import slimformer.runtimes, sys; assert 'slimformer.techniques' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0


def test_onnx_model_answers_without_torch_or_transformers(tiny_onnx):
    proc = python(f"""
import json
from slimformer.errors import SlimformerError
from slimformer.runtimes import load_predictor
answers = {{r: load_predictor({str(tiny_onnx)!r}, r).predict(["goal match team", "pasta recipe"])
           for r in ("onnxruntime", "openvino")}}
try:
    load_predictor({str(tiny_onnx)!r}, "torch")
except SlimformerError as e:
    refused = str(e)
print(json.dumps({{"answers": answers, "refused": refused,
                  "techniques": "slimformer.techniques" in sys.modules}}))
""")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert all(len(a) == 2 for a in result["answers"].values()) and not result["techniques"]
    assert result["refused"] == "torch is not installed; this needs it: pip install 'slimformer[torch]'"


def test_cli_starts_without_torch():
    proc = python("import sys; sys.argv = ['slimformer', '--help']\nfrom slimformer.cli import main\nmain()")
    assert proc.returncode == 0 and "bench" in proc.stdout, proc.stderr


def test_what_needs_torch_says_so_in_one_line(tiny_bert, keyword_csv, tmp_path):
    from test_cli import assert_one_line_error

    def cli(*args):
        return python(f"sys.argv = ['slimformer', *{list(args)!r}]\nfrom slimformer.cli import main\nmain()")

    needs = "torch is not installed; this needs it: pip install 'slimformer[torch]'"  # brackets kept, not markup
    assert_one_line_error(cli("train", "--data", str(keyword_csv), "--base", str(tiny_bert), "--out",
                              str(tmp_path / "m")), needs)
    assert_one_line_error(cli("build", "--model", str(tiny_bert), "--recipe", "onnx", "--calib-data",
                              str(keyword_csv), "--out", str(tmp_path / "v")), f"onnx: {needs}")
    assert not (tmp_path / "m").exists() and not (tmp_path / "v").exists()
