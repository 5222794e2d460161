"""How a task's answers are scored: the scoring half of a task, keyed by task name (`scoring_for(name)`).

A `Scoring` turns a runtime's raw outputs into the answers stored per split and mode (batch 1, padded batches),
scores them against the data's labels (its metrics, and the one the budget reads), measures their agreement with
a reference variant's answers and their batch invariance, and says what a user gets back (`present`). The bench,
selection, report, bundle, server and `predict` read a task only through this object, so adding a task is one
subclass here (or in its own module) registered with `register`. Everything here needs numpy alone: the benchmark
worker and the server import it.

Answers are whatever `answer_batch` returns per padded batch, joined by `join`, written by `save` and read by
`load`: an array (texts, labels) of logits for classification, (texts, dim) vectors for embeddings; a per-token
task (NER) keeps one row of per-word outputs per text and overrides those four (see /work/notes/seam.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .. import metrics


class Scoring:
    """The scoring half of one task. Subclasses set the class attributes and implement `score` and `per_text`."""

    task: ClassVar[str]  # the Task's name (tasks.TASKS)
    metric: ClassVar[str]  # key in score()'s dict of the metric the budget reads (a share in [0, 1])
    metric_label: ClassVar[str]  # how tables and sentences name it
    higher_is_better: ClassVar[bool] = True
    unit: ClassVar[str] = "points"  # a drop is 100 × (reference − candidate) of the metric, in points
    per_class_label: ClassVar[str] = "recall"  # what the per-label figure is (the budget metric within one label)
    class_guard: ClassVar[bool] = False  # whether --max-class-drop applies (per-text scores are 0/1 answers)
    mixed_precision_fallback: ClassVar[bool] = False  # optimize's per-node fallback understands this task
    answer_suffix: ClassVar[str] = ".npy"
    columns: ClassVar[tuple[tuple[str, str, float], ...]] = ()  # (key, header, scale) of score()'s figures shown

    # -- answers -----------------------------------------------------------------------------------------------
    def answer_batch(self, predictor, texts: list[str]) -> Any:
        """Raw answers of one padded batch: the task head's output per text (a per-token task overrides)."""
        return predictor.forward(predictor.tokenize(texts))

    def join(self, parts: list) -> Any:
        return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)

    def save(self, path: Path, answers) -> None:
        np.save(path, np.asarray(answers, dtype=np.float32))

    def load(self, path: Path):
        return np.load(path)

    def present(self, answers, labels: list[str]) -> list:
        """What a user gets per text (a label, a vector...)."""
        raise NotImplementedError

    # -- the data's labels -------------------------------------------------------------------------------------
    def label_map(self, data_labels: list[str], model_labels: list[str], model: str) -> list[int]:
        """Data label index -> the label index scoring uses (a classifier's own; identity where labels are only
        relevance)."""
        return list(range(len(data_labels)))

    def label_names(self, data_labels: list[str], model_labels: list[str]) -> list[str]:
        """The names of the label indices `truth` gives (per-label figures are keyed by them)."""
        return list(data_labels)

    def truth(self, split, label_map: list[int]):
        """What answers are scored against on one data.Split."""
        return np.asarray(label_map)[split.labels]

    # -- scores ------------------------------------------------------------------------------------------------
    def score(self, answers, truth) -> dict[str, float]:
        """The task's metrics on one split (the budget metric under `metric`, and `n`)."""
        raise NotImplementedError

    def per_text(self, answers, truth) -> np.ndarray:
        """The budget metric per text (its mean is score()[metric]): paired intervals and tests resample these."""
        raise NotImplementedError

    def per_class(self, answers, truth, labels: list[str]) -> dict[str, float | None]:
        """The budget metric within each label (None where a label has no text)."""
        scores, truth = self.per_text(answers, truth), np.asarray(truth)
        return {label: float(np.mean(scores[truth == k])) if np.any(truth == k) else None
                for k, label in enumerate(labels)}

    def agreement(self, answers, reference) -> dict[str, float]:
        """How far these answers are from a reference variant's on the same texts."""
        raise NotImplementedError

    def invariance(self, single, batched) -> dict:
        """Batch invariance: the answers at batch 1 against the same texts in padded batches ({..., flagged, n})."""
        raise NotImplementedError

    def invariance_text(self, figure: dict) -> str:
        return metrics.invariance_text(figure)

    # -- the budget --------------------------------------------------------------------------------------------
    def misses(self, split: dict, budget) -> list[dict]:
        """What of the task's own part of the budget a compared split (select.compare) breaks, beyond the budget
        metric's drop (checked by select for every task)."""
        return []

    def budget_text(self, budget) -> list[str]:
        """The task's own parts of the budget, in words."""
        return []

    def compare_extra(self, truth, reference, candidate, per_text_ref, per_text_cand, ref_quality: dict,
                      quality: dict) -> dict:
        """Task figures of one compared split besides the drop (agreement with the baseline; per-label drops)."""
        out = {"agreement": self.agreement(candidate, reference)}
        ref_pc, pc = ref_quality.get("per_class") or {}, quality.get("per_class") or {}
        class_drop = {label: round(100 * (ref_pc[label] - v), 3) for label, v in pc.items()
                      if v is not None and ref_pc.get(label) is not None}
        lost = per_text_ref - per_text_cand  # > 0: the candidate does worse on that text
        truth = np.asarray(truth)
        class_lost = {label: round(float(lost[truth == k].sum()), 3) for k, label in enumerate(pc)
                      if label in class_drop}
        worst = max(class_drop, key=class_drop.get) if class_drop else None
        return out | {"class_drop": class_drop, "class_lost_texts": class_lost,
                      "worst_class": {"label": worst, "drop_points": class_drop[worst],
                                      "lost_texts": class_lost[worst]} if worst else None}


class ClassificationScoring(Scoring):
    task = "classification"
    metric = "accuracy"
    metric_label = "accuracy"
    class_guard = True
    mixed_precision_fallback = True
    columns = (("accuracy", "acc %", 100.0), ("macro_f1", "macro-F1", 1.0))

    def present(self, answers, labels: list[str]) -> list[str]:
        return [labels[i] for i in np.asarray(answers).argmax(-1)]

    def label_map(self, data_labels, model_labels, model):
        from ..data import check_label_space

        return check_label_space(data_labels, model_labels, model)

    def label_names(self, data_labels, model_labels):
        return list(model_labels)

    def score(self, answers, truth) -> dict[str, float]:
        return metrics.classification_metrics(truth, np.asarray(answers).argmax(-1))

    def per_text(self, answers, truth) -> np.ndarray:
        return (np.asarray(answers).argmax(-1) == np.asarray(truth)).astype(np.float64)

    def agreement(self, answers, reference) -> dict[str, float]:
        return metrics.agreement(answers, reference)

    def invariance(self, single, batched) -> dict:
        return metrics.batch_invariance(single, batched)

    def misses(self, split: dict, budget) -> list[dict]:
        limit = budget.max_class_drop
        if limit is None:
            return []
        collapsed = [(label, points) for label, points in split["class_drop"].items()
                     if points > limit + 1e-9 and split["class_lost_texts"][label] >= budget.min_class_texts]
        if not collapsed:
            return []
        label, points = max(collapsed, key=lambda c: c[1])
        return [{"what": "class", "kind": "quality", "value": points, "limit": limit,
                 "unit": f"points of {label} recall ({split['class_lost_texts'][label]:g} texts)"}]

    def budget_text(self, budget) -> list[str]:
        if budget.max_class_drop is None:
            return []
        return [f"any label's recall drop <= {budget.max_class_drop:g} points (once it has lost "
                f"{budget.min_class_texts}+ texts)"]


class EmbeddingScoring(Scoring):
    """Sentence embeddings for retrieval. The data's labels say only which texts are relevant to each other.

    precision@10 (the budget metric): each text of a split queries the others; the share of its 10 nearest (cosine)
    that carry its label. Agreement with the reference (FP32) vectors: mean cosine of the same text's two vectors,
    and recall@10 of the reference's nearest neighbours (how many of each text's 10 nearest stay among the 10)."""

    task = "embedding"
    metric = "precision_at_10"
    metric_label = "precision@10"
    per_class_label = "precision@10"
    k = 10
    columns = (("precision_at_10", "P@10 %", 100.0),)

    def present(self, answers, labels: list[str]) -> list[list[float]]:
        return np.asarray(answers, dtype=np.float32).tolist()

    def score(self, answers, truth) -> dict[str, float]:
        return {"precision_at_10": float(np.mean(self.per_text(answers, truth))) if len(truth) else float("nan"),
                "n": int(len(truth))}

    def per_text(self, answers, truth) -> np.ndarray:
        return metrics.precision_at_k(answers, truth, self.k)

    def agreement(self, answers, reference) -> dict[str, float]:
        cosine = metrics.cosine_rows(answers, reference)
        return {"mean_cosine": float(cosine.mean()), "min_cosine": float(cosine.min()),
                "recall_at_10": float(np.mean(metrics.neighbour_recall(answers, reference, self.k)))}

    def invariance(self, single, batched) -> dict:
        return metrics.vector_invariance(single, batched, self.k)

    def misses(self, split: dict, budget) -> list[dict]:
        cosine = split["agreement"]["mean_cosine"]
        if budget.min_cosine is not None and cosine < budget.min_cosine - 1e-12:
            return [{"what": "cosine", "kind": "quality", "value": round(cosine, 5), "limit": budget.min_cosine,
                     "unit": "mean cosine to the baseline's vectors", "below": True}]
        return []

    def budget_text(self, budget) -> list[str]:
        return [] if budget.min_cosine is None else [f"mean cosine to the baseline's vectors >= {budget.min_cosine:g}"]


SCORINGS: dict[str, Scoring] = {}


def register(scoring: Scoring) -> Scoring:
    """Make `scoring` the scoring of its task (a new task's module calls this at import)."""
    SCORINGS[scoring.task] = scoring
    return scoring


register(ClassificationScoring())
register(EmbeddingScoring())
from . import ner_scoring  # noqa: E402, F401  (registers NerScoring)


def scoring_for(task) -> Scoring:
    """The scoring of a task (a Task or its name)."""
    from ..errors import ModelError

    name = getattr(task, "name", task)
    if name not in SCORINGS:
        raise ModelError(f"task '{name}' cannot be scored yet (scored tasks: {', '.join(SCORINGS)})")
    return SCORINGS[name]


__all__ = ["SCORINGS", "ClassificationScoring", "EmbeddingScoring", "Scoring", "register", "scoring_for"]
