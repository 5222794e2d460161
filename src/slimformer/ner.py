"""Token classification (NER) answers and scores: per-word logits from any Predictor, entity-level metrics, and
entities with character spans for raw text.

- A word's answer is its first sub-token's logits (the token that carried its tag in training); a word with no
  token (cut by the `max_length` truncation) is answered O and counted (`cut_words`).
- Scored texts are sentences whose words are joined by single spaces (data.TokenSplit.texts): `text.split()` gives
  the dataset's words back. Raw text (the server, `predict`) is cut into words by encoding.split_words, which
  also gives each word's character span.
- Entity-level precision, recall and F1 come from seqeval in its default mode, which is conlleval's (the CoNLL
  shared task's scorer): an I-TYPE that does not continue a TYPE entity starts one. `entity_spans` decodes tags by
  the same rules, so what the server returns is what the score counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .encoding import split_words, word_positions
from .errors import missing_library

OUTSIDE = "O"
CUT_LOGIT = -1e4  # every label but O of a word the model did not see: answered O, with probability ~1


def outside_index(labels: Sequence[str]) -> int:
    if OUTSIDE not in labels:
        raise ValueError(f"a token-classification label set needs '{OUTSIDE}' (labels: {', '.join(labels)})")
    return list(labels).index(OUTSIDE)


def word_logits(token_logits: np.ndarray, word_ids: list[int | None], n_words: int, outside: int) -> np.ndarray:
    """(n_words, labels): each word's first sub-token's logits; a word without a token gets O (CUT_LOGIT rows)."""
    positions = word_positions(word_ids, n_words)
    out = np.full((n_words, token_logits.shape[-1]), CUT_LOGIT, np.float32)
    out[:, outside] = 0.0
    kept = positions >= 0
    out[kept] = token_logits[positions[kept]]
    return out


@dataclass
class WordAnswers:
    """Per-word logits of a model for some sentences (one (words, labels) array each) and its label names: what
    the benchmark stores and scores for a token-classification model."""

    rows: list[np.ndarray]
    labels: list[str]

    def __len__(self) -> int:
        return len(self.rows)

    def tag_indices(self) -> list[np.ndarray]:
        return [r.argmax(-1) for r in self.rows]

    def tags(self) -> list[list[str]]:
        return [[self.labels[i] for i in r] for r in self.tag_indices()]

    def cut_words(self) -> int:
        """Words the model did not see (cut by truncation), answered O: their rows are the CUT_LOGIT pattern."""
        return int(sum(np.sum(np.sum(r == CUT_LOGIT, axis=-1) == r.shape[-1] - 1) for r in self.rows))


def answer_words(predictor, sentences: list[list[str]]) -> WordAnswers:
    """One padded batch of pre-split sentences through `predictor` (any runtime whose model outputs (batch,
    tokens, labels)): each word's first sub-token's logits, O for a word without a token."""
    outside = outside_index(predictor.labels)
    encoded, word_ids = predictor.encoder.encode_words(sentences)
    logits = predictor.forward(encoded) if sentences else np.zeros((0, 0, len(predictor.labels)), np.float32)
    return WordAnswers([word_logits(logits[row], ids, len(words), outside)
                        for row, (words, ids) in enumerate(zip(sentences, word_ids, strict=True))],
                       list(predictor.labels))


def entity_spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """(type, first word, last word) of every entity in a tag sequence, by conlleval's rules (seqeval's default
    mode): B-TYPE starts an entity; I-TYPE continues one of its type or else starts one; O ends it."""
    spans: list[tuple[str, int, int]] = []
    kind, first = None, 0
    for i, tag in enumerate(tags):
        prefix, _, tag_type = tag.partition("-")
        if kind is not None and (prefix != "I" or tag_type != kind):
            spans.append((kind, first, i - 1))
            kind = None
        if prefix in ("B", "I") and kind is None:
            kind, first = tag_type, i
    if kind is not None:
        spans.append((kind, first, len(tags) - 1))
    return spans


def _seqeval():
    try:
        from seqeval.metrics import sequence_labeling
    except ModuleNotFoundError as e:
        raise (missing_library(e) or e) from None
    return sequence_labeling


def entity_metrics(true_tags: list[list[str]], pred_tags: list[list[str]]) -> dict[str, Any]:
    """Entity-level micro precision, recall and F1 (seqeval, default mode = conlleval), the same per entity type
    (with its support: entities in `true_tags`), word accuracy and counts."""
    seq = _seqeval()
    n_words = sum(len(t) for t in true_tags)
    if not n_words:
        return {"f1": float("nan"), "precision": float("nan"), "recall": float("nan"), "word_accuracy": float("nan"),
                "per_type": {}, "entities": 0, "n": 0, "words": 0}
    p, r, f, _ = seq.precision_recall_fscore_support(true_tags, pred_tags, average="micro", zero_division=0)
    names = sorted({e[0] for e in seq.get_entities(true_tags)} | {e[0] for e in seq.get_entities(pred_tags)})
    per_type = {}
    if names:  # seqeval's per-type arrays follow the sorted types found in either
        tp, tr, tf, ts = seq.precision_recall_fscore_support(true_tags, pred_tags, average=None, zero_division=0)
        per_type = {name: {"f1": float(tf[i]), "precision": float(tp[i]), "recall": float(tr[i]),
                           "support": int(ts[i])} for i, name in enumerate(names)}
    correct = sum(a == b for t, q in zip(true_tags, pred_tags, strict=True) for a, b in zip(t, q, strict=True))
    return {"f1": float(f), "precision": float(p), "recall": float(r), "word_accuracy": correct / n_words,
            "per_type": per_type, "entities": sum(len(entity_spans(t)) for t in true_tags), "n": len(true_tags),
            "words": n_words}


def entities(text: str, labels: Sequence[str], logits: np.ndarray,
             words: list[tuple[str, int, int]] | None = None) -> list[dict[str, Any]]:
    """The entities of raw `text` from per-word logits over its words (`words`: split_words(text) unless given):
    type, the text it covers, its character span [start, end) and score (the mean probability of the predicted
    tag over its words)."""
    words = split_words(text) if words is None else words
    shifted = logits - logits.max(-1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(-1, keepdims=True)
    best = probs.argmax(-1)
    found = []
    for kind, first, last in entity_spans([labels[i] for i in best]):
        start, end = words[first][1], words[last][2]
        found.append({"type": kind, "text": text[start:end], "start": start, "end": end,
                      "score": float(probs[np.arange(first, last + 1), best[first:last + 1]].mean())})
    return found


def text_entities(predictor, texts: list[str]) -> list[list[dict[str, Any]]]:
    """Raw texts (one padded batch) -> each text's entities (type, text, character span, score): the words come
    from split_words, the tags from `predictor` (its first sub-token per word), the entities by entity_spans."""
    spans = [split_words(t) for t in texts]
    answers = answer_words(predictor, [[w for w, _, _ in s] for s in spans])
    return [entities(t, answers.labels, rows, s) for t, rows, s in zip(texts, answers.rows, spans, strict=True)]
