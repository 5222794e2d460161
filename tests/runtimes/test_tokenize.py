"""Runtimes tokenize with the Rust `tokenizers` library set up from the model directory's files (no transformers):
it must give exactly what `tokenizer(texts, padding=True, truncation=True, max_length=...)` gives."""

import json
import shutil

import numpy as np
import pytest

from slimformer.encoding import TextEncoder, load_encoder, truncation, truncation_line
from slimformer.models import load_tokenizer
from slimformer.runtimes import load_predictor

TEXTS = ["goal match team", "Pasta RECIPE bake now, really!", "", "laptop " * 30, "unknownword chip ?"]


def reference(tokenizer, texts, max_length):
    return dict(tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="np"))


def assert_same(ours, theirs):
    assert list(ours) == list(theirs)  # same inputs in the same order
    for name in theirs:
        assert ours[name].dtype == theirs[name].dtype == np.int64
        np.testing.assert_array_equal(ours[name], theirs[name])


@pytest.fixture(scope="module")
def left_sided(tiny_bert, tmp_path_factory):
    """tiny_bert's files with left padding and truncation, and a tokenizer class without token_type_ids."""
    path = tmp_path_factory.mktemp("left") / "model"
    shutil.copytree(tiny_bert, path)
    config = json.loads((path / "tokenizer_config.json").read_text())
    config |= {"padding_side": "left", "truncation_side": "left", "tokenizer_class": "DistilBertTokenizer"}
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    return path


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_distilbert", "left_sided"])
def test_file_encoder_matches_transformers(model, request):
    path = request.getfixturevalue(model)
    encoder = load_encoder(path, 12)
    assert encoder.backend is not None and encoder.tokenizer is None  # built from tokenizer.json, not transformers
    tokenizer = load_tokenizer(str(path))
    for batch in (TEXTS, TEXTS[3:], [TEXTS[1], TEXTS[0]], *([t] for t in TEXTS)):  # one text: encode(), not batch
        assert_same(encoder(batch), reference(tokenizer, batch, 12))
    predictor = load_predictor(path, "torch", max_length=12)
    assert predictor.encoder.backend is not None
    assert_same(predictor.tokenize(TEXTS), reference(tokenizer, TEXTS, 12))
    assert predictor.tokenize([TEXTS[3]])["input_ids"].shape == (1, 12)


class PythonOnlyTokenizer:
    """A tokenizer with no Rust backend (as Python-only tokenizers are): everything else delegated."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer

    def __call__(self, *args, **kwargs):
        return self._tokenizer(*args, **kwargs)

    def __getattr__(self, name):
        if name == "backend_tokenizer":
            raise AttributeError(name)
        return getattr(self._tokenizer, name)


def test_tokenizer_without_backend_goes_through_transformers(tiny_bert):
    from slimformer.runtimes.torch import TorchPredictor

    loaded = load_predictor(tiny_bert, "torch", max_length=8)
    tokenizer = load_tokenizer(str(tiny_bert))
    slow = PythonOnlyTokenizer(tokenizer)
    assert TextEncoder.from_transformers(tokenizer, 8).backend is not None
    predictor = TorchPredictor(loaded.model, slow, loaded.labels, max_length=8)
    assert predictor.encoder.backend is None
    batch = ["goal match team", "pasta " * 20]
    assert_same(predictor.tokenize(batch), reference(tokenizer, batch, 8))
    assert predictor.predict(batch) == loaded.predict(batch)
    assert truncation(slow, batch, 8) == truncation(loaded, batch, 8)


def test_truncation_counts_texts_longer_than_max_length(tiny_bert):
    predictor = load_predictor(tiny_bert, "torch", max_length=8)
    texts = ["goal match", "goal " * 10, "goal " * 20, "pasta"]  # 4, 12, 22 and 3 tokens with [CLS] and [SEP]
    stats = truncation(predictor, texts, 8)
    assert stats == {"truncated": 2, "n": 4, "share": 0.5, "p50_tokens": 12, "p99_tokens": 22, "max_tokens": 22}
    assert truncation(load_tokenizer(str(tiny_bert)), texts, 8) == stats  # a transformers tokenizer says the same
    assert truncation(predictor, texts, 22)["truncated"] == 0
    line = truncation_line(stats, 8, "test texts", limit=128)
    assert line.startswith("50.0% of the test texts are longer than 8 tokens") and "--max-length 22" in line
    assert truncation_line(truncation(predictor, texts, 22), 22, "test texts") is None
