"""Shared fixtures: tiny classifiers built from configs (no hub) and small learnable datasets."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest

TOPICS = {
    "sport": ["match", "goal", "team", "coach", "league", "score", "player", "season"],
    "food": ["pasta", "recipe", "bake", "flavor", "kitchen", "spicy", "dinner", "sauce"],
    "tech": ["laptop", "software", "chip", "server", "code", "battery", "network", "app"],
}
FILLER = ["the", "a", "new", "about", "this", "was", "great", "really", "very", "today", "my", "and"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def keyword_rows(n: int = 240, seed: int = 0) -> list[dict]:
    """Texts whose label is given by topic words: a tiny model can learn it in a few epochs."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = list(TOPICS)[i % len(TOPICS)]
        words = rng.sample(TOPICS[label], 3) + rng.sample(FILLER, 4)
        rng.shuffle(words)
        rows.append({"text": " ".join(words) + f" {i}", "label": label})
    return rows


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def make_tiny_classifier(out: Path, labels: list[str], arch: str = "bert", seed: int = 0, hidden: int = 32,
                          layers: int = 2) -> Path:
    """A randomly initialised (default 2-layer) classifier with a word-level vocabulary, saved as an HF checkpoint."""
    import torch
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        BertTokenizer,
        DistilBertConfig,
        DistilBertForSequenceClassification,
    )

    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    vocab = SPECIAL + sorted({w for ws in TOPICS.values() for w in ws} | set(FILLER)) + [str(i) for i in range(400)]
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizer(vocab=str(out / "vocab.txt"), do_lower_case=True)
    common = {"vocab_size": len(vocab), "num_labels": len(labels), "id2label": dict(enumerate(labels)),
              "label2id": {lab: i for i, lab in enumerate(labels)}, "max_position_embeddings": 128}
    if arch == "bert":
        config = BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                            intermediate_size=2 * hidden, **common)
        model = BertForSequenceClassification(config)
    else:
        config = DistilBertConfig(dim=hidden, n_layers=layers, n_heads=2, hidden_dim=2 * hidden, **common)
        model = DistilBertForSequenceClassification(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch, request):
    """Unit tests get an empty cache; tests marked e2e use the real one (wheels downloaded once)."""
    if "e2e" not in request.keywords:
        monkeypatch.setenv("SLIMFORMER_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def keyword_csv(tmp_path_factory) -> Path:
    return write_csv(tmp_path_factory.mktemp("data") / "topics.csv", keyword_rows())


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return make_tiny_classifier(tmp_path_factory.mktemp("models") / "tiny-bert", sorted(TOPICS))


@pytest.fixture(scope="session")
def tiny_distilbert(tmp_path_factory) -> Path:
    return make_tiny_classifier(tmp_path_factory.mktemp("models") / "tiny-distilbert", sorted(TOPICS),
                                arch="distilbert")


@pytest.fixture(scope="session")
def sentiment_model(tmp_path_factory) -> Path:
    """A classifier whose labels are sentiment: scoring it on topic data must be refused."""
    return make_tiny_classifier(tmp_path_factory.mktemp("models") / "tiny-sentiment", ["negative", "positive"])
