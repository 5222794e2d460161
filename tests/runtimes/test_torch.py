import numpy as np
import torch

from slimformer.runtimes import load_predictor


def test_predictor_logits_labels_and_threads(tiny_distilbert):
    predictor = load_predictor(tiny_distilbert, "torch", threads=1)
    assert torch.get_num_threads() == 1
    texts = ["goal match team", "pasta recipe bake now", "laptop chip"]
    logits = predictor.logits(texts, batch_size=2)
    assert logits.shape == (3, 3) and logits.dtype == np.float32
    # batching and padding must not change the answer
    np.testing.assert_allclose(logits, np.concatenate([predictor.logits([t]) for t in texts]), atol=1e-5)
    assert predictor.predict(texts) == [predictor.labels[i] for i in logits.argmax(-1)]
    assert "token_type_ids" not in predictor._inputs  # DistilBERT takes no segment ids
    d = predictor.describe()
    assert d["runtime"] == "torch" and d["threads"] == 1 and d["precision"] == "float32"
    assert [p.name for p in predictor.model_files()] == ["model.safetensors"]


def test_truncation_at_max_length(tiny_bert):
    predictor = load_predictor(tiny_bert, max_length=8)
    assert predictor.tokenize(["goal " * 50])["input_ids"].shape == (1, 8)
