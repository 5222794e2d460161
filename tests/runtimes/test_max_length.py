"""max_length reaches every runtime, and its default comes from the model (never a silent 128)."""

import json
import shutil

import pytest

from slimformer.artifacts import MAX_LENGTH_CAP, check_max_length, default_max_length
from slimformer.errors import ModelError
from slimformer.runtimes import load_predictor

LONG = "goal match team " * 60


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime", "openvino"])
def test_max_length_reaches_every_runtime(runtime, tiny_bert, tiny_onnx):
    model = tiny_bert if runtime == "torch" else tiny_onnx
    predictor = load_predictor(model, runtime, max_length=24)
    assert predictor.max_length == 24 and predictor.describe()["max_length"] == 24
    assert predictor.tokenize([LONG, "goal"])["input_ids"].shape == (2, 24)
    assert predictor.logits([LONG]).shape == (1, 3)
    if runtime == "openvino":
        assert predictor.describe()["static_shapes"] == [16, 24]  # buckets end at max_length
    assert load_predictor(model, runtime).max_length == 128  # the model's: 128 position embeddings


def test_a_length_beyond_the_model_is_refused(tiny_onnx):
    with pytest.raises(ModelError, match="max_length 300 is outside what .* takes .1 to 128."):
        load_predictor(tiny_onnx, "onnxruntime", max_length=300)


def _model_dir(path, positions, tokenizer_limit=None, recorded=None):
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"max_position_embeddings": positions}))
    (path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": tokenizer_limit or int(1e30)}))
    if recorded:
        (path / "manifest.json").write_text(json.dumps({"max_length": recorded}))
    return path


def test_default_max_length_from_the_model(tmp_path, tiny_bert):
    assert default_max_length(_model_dir(tmp_path / "a", 2048)) == MAX_LENGTH_CAP == 512  # capped
    assert default_max_length(_model_dir(tmp_path / "b", 514, tokenizer_limit=512)) == 512  # RoBERTa: the smaller
    assert default_max_length(_model_dir(tmp_path / "c", 512, tokenizer_limit=256)) == 256
    assert check_max_length(tmp_path / "c", 400) == 400  # asked for: up to the position embeddings
    with pytest.raises(ModelError, match="max_length 600 is outside"):
        check_max_length(tmp_path / "c", 600)
    assert default_max_length(_model_dir(tmp_path / "d", 512, recorded=64)) == 64  # what it was trained with
    trained = tmp_path / "trained"
    shutil.copytree(tiny_bert, trained)
    (trained / "manifest.json").write_text(json.dumps({"max_length": 40}))
    assert load_predictor(trained).max_length == 40


def test_train_says_when_texts_get_truncated(tiny_bert, keyword_csv, tmp_path):
    from test_cli import run

    # every keyword text is 7 words and a number: 10 tokens with [CLS] and [SEP]
    proc = run("train", "--data", str(keyword_csv), "--base", str(tiny_bert), "--out", str(tmp_path / "m"),
               "--epochs", "1", "--max-train-samples", "16", "--max-length", "8")
    assert proc.returncode == 0, proc.stderr
    assert "note: 100.0% of the test texts are longer than 8 tokens and get truncated (median 10 tokens, p99 10); " \
           "pass --max-length 10 to keep them all whole" in proc.stderr
    assert json.loads((tmp_path / "m" / "manifest.json").read_text())["max_length"] == 8


def test_bench_says_when_texts_get_truncated_and_passes_max_length_on(tiny_onnx, keyword_csv):
    from test_cli import run

    proc = run("bench", "--variant", str(tiny_onnx), "--data", str(keyword_csv), "--max-length", "9",
               "--latency-samples", "3", "--warmup", "1", "--batch-sizes", "2", "--throughput-seconds", "0.01",
               "--throughput-texts", "4", "--cold-start-runs", "0", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "of the validation texts are longer than 9 tokens" in proc.stderr
    assert json.loads(proc.stdout)["variants"][0]["predictor"]["max_length"] == 9
