"""A tiny ONNX bundle and real `slimformer serve` processes on loopback ports."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import keyword_rows

from slimformer.data import load_dataset
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`slimformer serve` in its own process; `url`, `stop()` (SIGTERM) and its output."""

    def __init__(self, bundle: Path, *args: str, wait_ready: bool = True):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"slimformer-serve-{self.port}.log", "w+")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-c", "from slimformer.cli import main; main()", "serve",
                                      str(bundle), "--port", str(self.port), "--threads", "1", *args],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)
        if wait_ready:
            self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not ready in {timeout} s:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.log.close()


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
