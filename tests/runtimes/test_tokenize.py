"""The Predictor's tokenization calls the fast tokenizer's Rust backend directly: it must give exactly what
`tokenizer(texts, padding=True, truncation=True, max_length=...)` gives."""

import numpy as np
import pytest

from slimformer.runtimes import load_predictor
from slimformer.runtimes.base import fast_encoder


def reference(tokenizer, texts, max_length):
    return dict(tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="np"))


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_distilbert"])
def test_backend_tokenization_matches_transformers(model, request):
    predictor = load_predictor(request.getfixturevalue(model), "torch", max_length=12)
    assert predictor._encoder is not None
    texts = ["goal match team", "Pasta RECIPE bake now, really!", "", "laptop " * 30, "unknownword chip ?"]
    for batch in ([texts[0]], texts, texts[3:], [texts[1], texts[0]]):
        ours, theirs = predictor.tokenize(batch), reference(predictor.tokenizer, batch, 12)
        assert list(ours) == list(theirs)  # same inputs in the same order (DistilBERT: no token_type_ids)
        for name in theirs:
            assert ours[name].dtype == theirs[name].dtype == np.int64
            np.testing.assert_array_equal(ours[name], theirs[name])
    assert predictor.tokenize([texts[3]])["input_ids"].shape == (1, 12)


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


def test_tokenizer_without_backend_falls_back_to_transformers(tiny_bert):
    from slimformer.runtimes.torch import TorchPredictor

    loaded = load_predictor(tiny_bert, "torch", max_length=8)
    tokenizer = PythonOnlyTokenizer(loaded.tokenizer)
    assert fast_encoder(tokenizer, 8) is None
    predictor = TorchPredictor(loaded.model, tokenizer, loaded.labels, max_length=8)
    assert predictor._encoder is None
    batch = ["goal match team", "pasta " * 20]
    ours, theirs = predictor.tokenize(batch), reference(loaded.tokenizer, batch, 8)
    for name in theirs:
        np.testing.assert_array_equal(ours[name], theirs[name])
    assert predictor.predict(batch) == loaded.predict(batch)
