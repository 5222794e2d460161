"""`slimformer loadtest` against a real server on loopback; the verdict rules on their own."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from slimformer.errors import SlimformerError
from slimformer.loadtest import LoadSettings, run_load, verdict
from slimformer.serve.process import free_port


def test_closed_open_and_find_max_qps_through_the_cli(serve, onnx_bundle, tmp_path, texts):
    s = serve(onnx_bundle, "--target-p99-ms", "50")
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
    closed = run_load(LoadSettings(s.url, concurrency=4, min_duration_s=0.5, min_queries=50), texts)
    assert closed["verdict"] == "VALID" and closed["ok"] == closed["queries"] >= 50 and not closed["errors"]
    assert closed["latency_ms"]["p50"] <= closed["latency_ms"]["p99"]
    open_loop = run_load(LoadSettings(s.url, rate=100, min_duration_s=0.5, min_queries=30, p99_ms=1000), texts)
    assert open_loop["verdict"] == "VALID" and open_loop["scheduled_qps"] > 0 and open_loop["offered_qps"] == 100
    proc = subprocess.run([sys.executable, "-c", "from slimformer.cli import main; main()", "loadtest", s.url,
                           "--input", str(tmp_path / "texts.txt"), "--find-max-qps", "--p99-ms", "200", "--steps",
                           "3", "--duration-s", "0.4", "--min-queries", "20", "--out", str(tmp_path / "lt")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "lt" / "loadtest.json").read_text())
    assert len(result["runs"]) == 3 and result["max_qps"] > 0 and result["best"]["verdict"] == "VALID"
    assert result["machine"]["cpu"]["model"] and (tmp_path / "lt" / "loadtest.png").stat().st_size > 1000
    assert f"max Poisson rate with p99 <= 200 ms: {result['max_qps']} q/s" in proc.stdout


def test_errors_and_a_missed_bound_make_a_run_invalid(serve, onnx_bundle, texts):
    s = serve(onnx_bundle, "--max-texts", "2")
    run = run_load(LoadSettings(s.url, concurrency=2, min_duration_s=0.2, min_queries=10, texts_per_query=3), texts)
    assert run["verdict"] == "INVALID" and run["errors"] == {"422": run["queries"]}
    settings = LoadSettings("http://x", rate=100, min_duration_s=10, min_queries=100, p99_ms=5)
    result = {"duration_s": 9.0, "queries": 90, "errors": {}, "scheduled_qps": 100.0, "achieved_qps": 80.0,
              "latency_ms": {"p99": 6.0}}
    status, reasons = verdict(result, settings)
    assert status == "INVALID" and len(reasons) == 4, reasons
    ok = result | {"duration_s": 10.0, "queries": 100, "achieved_qps": 99.0, "latency_ms": {"p99": 4.0}}
    assert verdict(ok, settings) == ("VALID", [])


def test_a_server_that_is_not_there_is_one_line(tmp_path, texts):
    (tmp_path / "t.txt").write_text("a text\n")
    proc = subprocess.run([sys.executable, "-c", "from slimformer.cli import main; main()", "loadtest",
                           f"http://127.0.0.1:{free_port()}", "--input", str(tmp_path / "t.txt")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "cannot reach" in proc.stderr and "Traceback" not in proc.stderr
    with pytest.raises(SlimformerError, match="takes an http://HOST:PORT URL"):
        run_load(LoadSettings("ftp://x"), texts)
