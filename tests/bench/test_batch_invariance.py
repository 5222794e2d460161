"""Accuracy in the mode it is served: a variant whose answers depend on their batch-mates is caught."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import TOPICS, keyword_rows, make_tiny_classifier

from slimformer.bench import scenarios
from slimformer.bench.runner import quality
from slimformer.runtimes import load_predictor
from slimformer.tasks.scoring import scoring_for
from slimformer.techniques import build, parse_recipe

OUTLIER = "chip"


@pytest.fixture(scope="module")
def outlier_model(tmp_path_factory):
    """A tiny BERT in which one word's embedding is a single huge component: a text holding it has activations far
    outside every other text's range, which per-tensor dynamic INT8 spreads over the whole batch's scale."""
    import torch
    from transformers import BertForSequenceClassification, BertTokenizer

    root = tmp_path_factory.mktemp("outlier")
    base = make_tiny_classifier(root / "base", sorted(TOPICS), seed=3)
    model = BertForSequenceClassification.from_pretrained(base)
    word = BertTokenizer.from_pretrained(base).convert_tokens_to_ids(OUTLIER)
    with torch.no_grad():
        model.classifier.weight *= 50  # logits of a trained model's size, not a random one's
        embeddings = model.bert.embeddings.word_embeddings.weight
        embeddings[word] = 0.0
        embeddings[word, 0] = 1000.0
    model.save_pretrained(root / "model")
    for f in base.iterdir():
        if f.name.startswith(("vocab", "tokenizer", "special")):
            shutil.copy2(f, root / "model" / f.name)
    return root / "model"


def test_dynamic_int8_with_an_outlier_row_is_flagged_and_fp32_is_not(outlier_model):
    texts = [r["text"] for r in keyword_rows(40) if OUTLIER not in r["text"]][:26]
    with_outlier = texts + [f"{OUTLIER} {OUTLIER} {OUTLIER}"]  # one batch of 27: the outlier is every text's mate
    labels = sorted(TOPICS)
    truth = {"validation": np.zeros(len(with_outlier), dtype=np.int64)}
    figures = {}
    for recipe in ("onnx", "onnx,int8-dynamic"):
        predictor = load_predictor(build(outlier_model, parse_recipe(recipe)).path, threads=1)
        for name, batch in (("alone", texts), ("outlier", with_outlier)):
            logits = {"batch1": scenarios.answers(predictor, batch, 1),
                      "batched": scenarios.answers(predictor, batch, 32)}
            q = quality({"validation": logits}, {"validation": truth["validation"][:len(batch)]}, labels,
                        scoring_for("classification"))
            figures[recipe, name] = q["validation"]["batch_invariance"]
    assert not figures["onnx", "alone"]["flagged"] and not figures["onnx", "outlier"]["flagged"]
    assert figures["onnx", "outlier"]["max_abs_logit_diff"] < 1e-5
    assert figures["onnx,int8-dynamic", "outlier"]["flagged"]  # its batch-mate moved the other texts' logits
    assert figures["onnx,int8-dynamic", "outlier"]["max_abs_logit_diff"] > 10 * max(
        figures["onnx,int8-dynamic", "alone"]["max_abs_logit_diff"], 1e-4)
