"""`slimformer predict`: streamed, resumable after a real kill, bad rows in a rejects file, never dropped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import keyword_rows

from slimformer.metrics import log_softmax
from slimformer.runtimes import load_predictor


def cli(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "from slimformer.cli import main; main()", "predict", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def run(*args: str) -> subprocess.CompletedProcess:
    proc = cli(*args)
    stdout, stderr = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


BAD = {3: "", 10: "   ", 17: None, 25: 7}  # row -> a value that cannot be scored


def jsonl_input(path, n: int):
    rows = [{"text": r["text"]} for r in keyword_rows(n, seed=11)]
    for row, value in BAD.items():
        rows[row] = {"text": value} if value is not None else {"other": "no text field"}
    lines = [json.dumps(r) for r in rows]
    lines[30] = "{not json"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_every_format_scores_like_the_predictor_and_rejects_bad_rows(onnx_bundle, tmp_path):
    texts = [r["text"] for r in keyword_rows(40, seed=5)]
    predictor = load_predictor(onnx_bundle)
    probs = np.exp(log_softmax(predictor.logits(texts)))
    values = list(texts)
    values[4], values[9] = "", "  "
    pq.write_table(pa.table({"text": values}), tmp_path / "in.parquet")
    (tmp_path / "in.csv").write_text("text,id\n" + "".join(f'"{v}",{i}\n' for i, v in enumerate(values)))
    (tmp_path / "in.txt").write_text("\n".join(values) + "\n")
    for name in ("in.parquet", "in.csv", "in.txt"):
        out = tmp_path / f"{name}.out.jsonl"
        proc = run(str(onnx_bundle), "--input", str(tmp_path / name), "--out", str(out), "--chunk-size", "7")
        assert proc.returncode == 0, proc.stderr
        scored = read_jsonl(out)
        assert [r["row"] for r in scored] == [i for i in range(40) if i not in (4, 9)], name
        for r in scored:
            assert r["text"] == texts[r["row"]] and r["label"] == predictor.labels[int(probs[r["row"]].argmax())]
            assert r["score"] == pytest.approx(float(probs[r["row"]].max()), abs=1e-5)
        rejects = read_jsonl(tmp_path / f"{name}.out.rejects.jsonl")
        assert [(r["row"], r["reason"]) for r in rejects] == [(4, "empty text"), (9, "empty text")], name
        assert "38 predictions" in proc.stdout and "2 rejected rows" in proc.stdout


def test_rejects_name_every_bad_row(onnx_bundle, tmp_path):
    src = jsonl_input(tmp_path / "in.jsonl", 60)
    proc = run(str(onnx_bundle), "--input", str(src), "--out", str(tmp_path / "p.csv"), "--rejects",
               str(tmp_path / "bad.jsonl"))
    assert proc.returncode == 0, proc.stderr
    reasons = {r["row"]: r["reason"] for r in read_jsonl(tmp_path / "bad.jsonl")}
    assert reasons == {3: "empty text", 10: "empty text", 17: "missing text", 25: "text is int, not a string",
                       30: "invalid JSON: Expecting property name enclosed in double quotes"}
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0] == "row,text,label,score" and len(lines) == 1 + 60 - 5
    assert not list(tmp_path.glob("*.partial*"))


def test_resumed_after_a_real_kill_loses_and_repeats_no_row(onnx_bundle, tmp_path):
    n = 3000
    src = jsonl_input(tmp_path / "in.jsonl", n)
    whole = run(str(onnx_bundle), "--input", str(src), "--out", str(tmp_path / "whole.jsonl"), "--chunk-size", "50")
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "killed.jsonl"
    state = tmp_path / "killed.jsonl.partial.json"
    proc = cli(str(onnx_bundle), "--input", str(src), "--out", str(out), "--chunk-size", "50")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if state.is_file() and json.loads(state.read_text())["progress"]["rows_done"] >= 500:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = json.loads(state.read_text())["progress"]["rows_done"]
    assert 0 < done < n and not out.exists()
    with open(tmp_path / "killed.jsonl.partial", "a") as f:  # a chunk half-written when the kill came
        f.write('{"row": 999999, "text": "half a li')
    again = run(str(onnx_bundle), "--input", str(src), "--out", str(out), "--chunk-size", "50")
    assert again.returncode == 0, again.stderr
    assert f"resumed at row {done}" in again.stdout
    assert out.read_text() == (tmp_path / "whole.jsonl").read_text()
    assert (tmp_path / "killed.rejects.jsonl").read_text() == (tmp_path / "whole.rejects.jsonl").read_text()
    assert not state.exists()


def test_one_line_errors(onnx_bundle, tmp_path):
    (tmp_path / "in.csv").write_text("sentence\nhello\n")
    proc = run(str(onnx_bundle), "--input", str(tmp_path / "in.csv"), "--out", str(tmp_path / "o.jsonl"))
    assert proc.returncode == 2 and "no column 'text'" in proc.stderr and "Traceback" not in proc.stderr
    (tmp_path / "o.jsonl").write_text("")
    (tmp_path / "in.txt").write_text("hello\n")
    proc = run(str(onnx_bundle), "--input", str(tmp_path / "in.txt"), "--out", str(tmp_path / "o.jsonl"))
    assert proc.returncode == 2 and "exists already" in proc.stderr
    proc = run(str(onnx_bundle), "--input", str(tmp_path / "in.txt"), "--out", str(tmp_path / "o.xml"))
    assert proc.returncode == 2 and "--out must be .jsonl, .csv or .parquet" in proc.stderr
