"""A tiny ONNX bundle and real `slimformer serve` processes on loopback ports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import keyword_rows

from slimformer.data import load_dataset
from slimformer.serve.process import ServerProcess
from slimformer.techniques import BuildContext, build, parse_recipe

INVARIANCE = {"label_change_rate": 0.0, "max_abs_logit_diff": 2e-6, "flagged": False, "n": 64}


@pytest.fixture(scope="session")
def onnx_bundle(tmp_path_factory, tiny_bert, keyword_csv) -> Path:
    """The tiny BERT exported to ONNX, with a bundle manifest that records its measured batch invariance."""
    ds = load_dataset(str(keyword_csv))
    context = BuildContext(check_texts=ds["validation"].texts[:16])
    out = tmp_path_factory.mktemp("bundles") / "tiny-onnx"
    build(tiny_bert, parse_recipe("onnx"), out, context)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["bundle"] = {"variant": "tiny-onnx", "runtime": "onnxruntime", "threads": 1, "options": {},
                          "metrics": {"accuracy": 0.5, "batch_invariance": INVARIANCE}}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


@pytest.fixture(scope="session")
def unmeasured_bundle(onnx_bundle, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "unmeasured"
    shutil.copytree(onnx_bundle, out)
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["bundle"]["metrics"]["batch_invariance"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


@pytest.fixture(scope="session")
def texts() -> list[str]:
    return [r["text"] for r in keyword_rows(60, seed=7)]


class Server(ServerProcess):
    """A server on a loopback port: one worker with one model thread unless told otherwise, ready."""

    def __init__(self, bundle: Path, *args: str, wait_ready: bool = True):
        super().__init__(bundle, "--workers", "1", "--threads", "1", *args)
        if wait_ready:
            self.wait_ready(60)


@pytest.fixture
def serve():
    """Start servers with `serve(bundle, *args)`; every one is stopped after the test."""
    started = []

    def start(bundle, *args, wait_ready=True):
        started.append(Server(bundle, *args, wait_ready=wait_ready))
        return started[-1]

    yield start
    for server in started:
        server.stop()
