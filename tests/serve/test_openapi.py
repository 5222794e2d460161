"""schemathesis (its CLI, every check) against the served OpenAPI spec: documented answers only, never a 5xx."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("schemathesis")


def test_schemathesis_finds_no_5xx_and_nothing_undocumented(serve, onnx_bundle):
    s = serve(onnx_bundle, "--max-texts", "16", "--max-chars", "500", "--max-wait-ms", "1")
    proc = subprocess.run([sys.executable, "-m", "schemathesis.cli", "run", s.url + "/openapi.json", "--checks",
                           "all", "--max-examples", "40", "--generation-deterministic", "--no-color"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "5 passed" in proc.stdout  # all five operations were exercised
    assert s.proc.poll() is None  # still serving
