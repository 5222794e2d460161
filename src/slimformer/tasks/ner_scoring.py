"""The scoring of token classification (NER): per-word answers, entity-level F1 as the budget metric.

Answers are ner.WordAnswers: per sentence, the (words, labels) logits of each word's first sub-token, with the
model's label names; stored as one .npz (the rows of every sentence concatenated, their offsets, the labels).
Truth is per sentence the tag indices in the model's label space.

- score: seqeval's entity-level micro precision / recall / F1 (default mode = conlleval), per entity type, word
  accuracy, words cut by truncation.
- per_text: each sentence's contribution to the split's entity F1 by the delta method (mean == F1 exactly; the
  paired bootstrap of these means approximates the bootstrap of F1). F1 is not a mean over sentences, so the
  sign test is taken instead on the sentences whose entity errors (false positives + false negatives) differ
  (compare_extra: `lost`, `gained`, `mcnemar_p`).
- agreement with a reference's answers: word tags that agree, the entity F1 of this variant scored against the
  reference's predicted entities, the largest logit move.
- batch invariance: word tags that change between batch 1 and padded batches, the largest logit move.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import metrics
from ..ner import WordAnswers, entity_metrics, entity_spans
from .scoring import Scoring, register


def _spans(tags: list[list[str]]) -> list[set[tuple[str, int, int]]]:
    return [set(entity_spans(t)) for t in tags]


def _counts(pred: list[set], true: list[set]) -> np.ndarray:
    """(sentences, 3): true positives, false positives, false negatives of each sentence's entities."""
    return np.array([(len(p & t), len(p - t), len(t - p)) for p, t in zip(pred, true, strict=True)],
                    dtype=np.float64).reshape(-1, 3)


def _f1(counts: np.ndarray) -> float:
    tp, fp, fn = counts.sum(0) if len(counts) else (0.0, 0.0, 0.0)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


class NerScoring(Scoring):
    task = "ner"
    metric = "f1"
    metric_label = "entity F1"
    per_class_label = "F1"
    class_guard = False
    mixed_precision_fallback = False
    answer_suffix = ".npz"
    columns = (("f1", "F1 %", 100.0), ("precision", "P %", 100.0), ("recall", "R %", 100.0))

    # -- answers -----------------------------------------------------------------------------------------------
    def answer_batch(self, predictor, texts: list[str]) -> WordAnswers:
        from ..ner import answer_words

        return answer_words(predictor, [t.split() for t in texts])

    def join(self, parts: list) -> WordAnswers:
        return WordAnswers([r for p in parts for r in p.rows], parts[0].labels if parts else [])

    def save(self, path: Path, answers: WordAnswers) -> None:
        lengths = np.array([len(r) for r in answers.rows], np.int64)
        rows = np.concatenate(answers.rows) if answers.rows else np.zeros((0, len(answers.labels)), np.float32)
        with open(path, "wb") as f:
            np.savez(f, rows=rows.astype(np.float32), offsets=np.concatenate([[0], np.cumsum(lengths)]),
                     labels=np.array(answers.labels))

    def load(self, path: Path) -> WordAnswers:
        with np.load(path) as z:
            rows, offsets = z["rows"], z["offsets"]
            return WordAnswers([rows[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)],
                               [str(x) for x in z["labels"]])

    def present(self, answers: WordAnswers, labels: list[str]) -> list[list[str]]:
        """Per sentence, the tag of each of its (space-separated) words."""
        return answers.tags()

    # -- the data ----------------------------------------------------------------------------------------------
    def label_map(self, data_labels, model_labels, model):
        from ..data import check_label_space

        return check_label_space(data_labels, model_labels, model)

    def label_names(self, data_labels, model_labels):
        return list(model_labels)

    def truth(self, split, label_map) -> list[np.ndarray]:
        mapping = np.asarray(label_map)
        return [mapping[t] for t in split.tags]

    def _true_tags(self, answers: WordAnswers, truth) -> list[list[str]]:
        return [[answers.labels[i] for i in t] for t in truth]

    # -- scores ------------------------------------------------------------------------------------------------
    def score(self, answers: WordAnswers, truth) -> dict:
        figures = entity_metrics(self._true_tags(answers, truth), answers.tags())
        return figures | {"cut_words": answers.cut_words()}

    def per_text(self, answers: WordAnswers, truth) -> np.ndarray:
        counts = _counts(_spans(answers.tags()), _spans(self._true_tags(answers, truth)))
        n = len(counts)
        if not n:
            return np.zeros(0)
        tp, fp, fn = counts.sum(0)
        denominator = 2 * tp + fp + fn
        f1 = 2 * tp / denominator if tp else 0.0
        if not denominator:
            return np.full(n, f1)
        # delta method: F1 + n * dF1 of each sentence's counts; their mean is F1 exactly
        return f1 + n * (2 * counts[:, 0] - f1 * (2 * counts[:, 0] + counts[:, 1] + counts[:, 2])) / denominator

    def per_class(self, answers: WordAnswers, truth, labels) -> dict:
        """Entity F1 of each entity type (None for a type with neither true nor predicted entities)."""
        per_type = entity_metrics(self._true_tags(answers, truth), answers.tags())["per_type"]
        types = sorted({t[2:] for t in labels if t != "O"})
        return {t: per_type[t]["f1"] if t in per_type else None for t in types}

    def agreement(self, answers: WordAnswers, reference: WordAnswers) -> dict:
        mine, theirs = np.concatenate(answers.rows), np.concatenate(reference.rows)
        same = float(np.mean(mine.argmax(-1) == theirs.argmax(-1))) if len(mine) else 1.0
        f1 = _f1(_counts(_spans(answers.tags()), _spans(reference.tags())))
        return {"word_agreement": same, "label_flip_rate": 1.0 - same, "entity_f1_vs_reference": f1,
                "max_abs_logit_diff": float(np.max(np.abs(mine - theirs))) if len(mine) else 0.0}

    def invariance(self, single: WordAnswers, batched: WordAnswers) -> dict:
        figure = metrics.batch_invariance(np.concatenate(single.rows), np.concatenate(batched.rows)) \
            if len(single) else {"label_change_rate": 0.0, "max_abs_logit_diff": 0.0, "flagged": False}
        return figure | {"n": len(single)}

    def invariance_text(self, figure: dict) -> str:
        return f"{100 * figure['label_change_rate']:.2f}% word tags change, max Δlogit " \
            f"{figure['max_abs_logit_diff']:.2g}"

    def compare_extra(self, truth, reference, candidate, per_text_ref, per_text_cand, ref_quality, quality) -> dict:
        true = _spans(self._true_tags(reference, truth))
        ref_counts = _counts(_spans(reference.tags()), true)
        cand_counts = _counts(_spans(candidate.tags()), true)
        errors = (cand_counts[:, 1] + cand_counts[:, 2]) - (ref_counts[:, 1] + ref_counts[:, 2])
        lost, gained = int(np.sum(errors > 0)), int(np.sum(errors < 0))
        ref_pc, pc = ref_quality.get("per_class") or {}, quality.get("per_class") or {}
        class_drop = {t: round(100 * (ref_pc[t] - v), 3) for t, v in pc.items()
                      if v is not None and ref_pc.get(t) is not None}

        def found(answers: WordAnswers, kind: str) -> int:
            return sum(len({s for s in p if s[0] == kind} & t) for p, t in zip(_spans(answers.tags()), true,
                                                                                strict=True))

        class_lost = {t: found(reference, t) - found(candidate, t) for t in class_drop}
        worst = max(class_drop, key=class_drop.get) if class_drop else None
        return {"agreement": self.agreement(candidate, reference), "class_drop": class_drop,
                "class_lost_texts": class_lost,
                "worst_class": {"label": worst, "drop_points": class_drop[worst], "lost_texts": class_lost[worst]}
                if worst else None,
                # the sign test on sentences whose entity errors differ (F1 is not a mean of per-sentence scores)
                "lost": lost, "gained": gained, "mcnemar_p": round(metrics.mcnemar_exact(lost, gained), 4)}


register(NerScoring())
