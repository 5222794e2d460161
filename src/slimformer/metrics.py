"""Metrics of every task, computed one way for training, benchmarks and reports (tasks/scoring.py picks them)."""

from __future__ import annotations

import numpy as np


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 (over the labels present in y_true or y_pred, as scikit-learn does)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) == 0:
        return {"accuracy": float("nan"), "macro_f1": float("nan"), "n": 0}
    f1s = []
    for label in np.union1d(y_true, y_pred):
        tp = np.sum((y_pred == label) & (y_true == label))
        fp = np.sum((y_pred == label) & (y_true != label))
        fn = np.sum((y_pred != label) & (y_true == label))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return {"accuracy": float(np.mean(y_true == y_pred)), "macro_f1": float(np.mean(f1s)), "n": int(len(y_true))}


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable log-softmax over the last axis."""
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def agreement(logits: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """How far a variant's outputs are from a reference variant's on the same texts."""
    return {
        "label_flip_rate": float(np.mean(logits.argmax(-1) != reference.argmax(-1))),
        "max_abs_logit_diff": float(np.max(np.abs(logits - reference))),
    }


def per_class_recall(y_true: np.ndarray, y_pred: np.ndarray, n_labels: int) -> list[float | None]:
    """Recall of each label index (None where the label has no text in y_true)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return [float(np.mean(y_pred[y_true == k] == k)) if np.any(y_true == k) else None for k in range(n_labels)]


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: of the b + c texts on which two classifiers disagree in correctness,
    b went one way and c the other; under no difference each way is a fair coin (binomial, p = 0.5)."""
    from math import comb

    n = b + c
    if n == 0:
        return 1.0
    tail = sum(comb(n, k) for k in range(min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


BOOTSTRAP_SAMPLES = 2000


def paired_difference(reference: np.ndarray, candidate: np.ndarray, seed: int = 0,
                      samples: int = BOOTSTRAP_SAMPLES) -> dict:
    """Drop of `candidate` against `reference` in points, from per-text scores in [0, 1] on the same texts (1 =
    right for a classifier; a query's precision@10 for retrieval), with a paired bootstrap 95% interval (the same
    resampled texts for both) and an exact sign test on the texts that differ (McNemar's test for 0/1 scores).

    b: texts on which the candidate does worse, c: better. drop = 100 * mean(reference - candidate)."""
    diff = np.asarray(reference, dtype=np.float64) - np.asarray(candidate, dtype=np.float64)
    n = len(diff)
    if n == 0:
        return {"drop_points": float("nan"), "ci95": [float("nan")] * 2, "mcnemar_p": 1.0, "b": 0, "c": 0, "n": 0}
    draws = np.random.default_rng(seed).integers(0, n, size=(samples, n))
    boot = 100 * diff[draws].mean(axis=1)
    b, c = int(np.sum(diff > 1e-12)), int(np.sum(diff < -1e-12))
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"drop_points": float(100 * diff.mean()), "ci95": [float(lo), float(hi)], "mcnemar_p": mcnemar_exact(b, c),
            "b": b, "c": c, "n": n}


def paired_drop(y_true: np.ndarray, reference: np.ndarray, candidate: np.ndarray, seed: int = 0,
                samples: int = BOOTSTRAP_SAMPLES) -> dict:
    """Accuracy drop of `candidate` against `reference` predictions on the same texts (paired_difference of
    right/wrong): b texts the reference got right and the candidate wrong, c the reverse; drop = 100 (b - c) / n."""
    y_true, reference, candidate = map(np.asarray, (y_true, reference, candidate))
    return paired_difference(reference == y_true, candidate == y_true, seed, samples)


def batch_invariance(single: np.ndarray, batched: np.ndarray, tolerance: float = 1e-3) -> dict:
    """How much a variant's answers depend on their batch-mates: logits of each text alone (batch 1) against the
    same text inside padded batches of mixed lengths. Flagged when a label changes or a logit moves more than
    `tolerance` (FP32 kernels differ by ~1e-6 between shapes; per-tensor dynamic INT8 by far more)."""
    changed = float(np.mean(single.argmax(-1) != batched.argmax(-1))) if len(single) else 0.0
    diff = float(np.max(np.abs(single - batched))) if len(single) else 0.0
    return {"label_change_rate": changed, "max_abs_logit_diff": diff, "n": int(len(single)),
            "flagged": bool(changed > 0 or diff > tolerance)}


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of `a` with the same row of `b`."""
    return np.sum(_unit_rows(a) * _unit_rows(b), axis=-1)


def nearest(vectors: np.ndarray, k: int) -> np.ndarray:
    """Indices (texts, k) of each row's k nearest other rows by cosine, nearest first (ties: lower index)."""
    unit = _unit_rows(vectors)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)  # a text is not its own neighbour
    k = min(k, len(unit) - 1)
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def precision_at_k(vectors: np.ndarray, labels: np.ndarray, k: int = 10) -> np.ndarray:
    """Per text: the share of its k nearest other texts (cosine) that carry its label (label-based retrieval)."""
    labels = np.asarray(labels)
    if len(labels) < 2:
        return np.zeros(len(labels))
    return np.mean(labels[nearest(vectors, k)] == labels[:, None], axis=1)


def neighbour_recall(vectors: np.ndarray, reference: np.ndarray, k: int = 10) -> np.ndarray:
    """Per text: the share of its k nearest neighbours under `reference` vectors still among its k nearest."""
    if len(vectors) < 2:
        return np.ones(len(vectors))
    mine, theirs = nearest(vectors, k), nearest(reference, k)
    return np.array([len(np.intersect1d(a, b)) / len(b) for a, b in zip(mine, theirs, strict=True)])


def vector_invariance(single: np.ndarray, batched: np.ndarray, k: int = 10, tolerance: float = 1e-4) -> dict:
    """Batch invariance of vectors: the share of texts whose k nearest neighbours change between batch 1 and padded
    batches, the largest move of one component, the lowest cosine between a text's two vectors. Flagged when a
    neighbour list changes or a component moves more than `tolerance` (a normalised 384-d vector's components are
    ~0.05; FP32 kernels differ by ~1e-7 between shapes)."""
    if not len(single):
        return {"neighbour_change_rate": 0.0, "max_abs_diff": 0.0, "min_cosine": 1.0, "n": 0, "flagged": False}
    changed = float(np.mean(np.any(np.sort(nearest(single, k)) != np.sort(nearest(batched, k)), axis=1))) \
        if len(single) > 1 else 0.0
    diff = float(np.max(np.abs(np.asarray(single) - np.asarray(batched))))
    return {"neighbour_change_rate": changed, "max_abs_diff": diff,
            "min_cosine": float(cosine_rows(single, batched).min()), "n": int(len(single)),
            "flagged": bool(changed > 0 or diff > tolerance)}


def merged_invariance(figures: list[dict]) -> dict:
    """One batch-invariance figure over several splits: the worst of each figure (highest rate or move, lowest
    cosine), flagged if any split is."""
    merged = {"flagged": any(f["flagged"] for f in figures), "n": sum(f["n"] for f in figures)}
    for key in figures[0]:
        if key not in merged:
            merged[key] = (min if key.startswith("min_") else max)(f[key] for f in figures)
    return merged


def invariance_text(figure: dict) -> str:
    """'0.7% labels change, max Δlogit 1.4' (or neighbours and vector components) for a batch-invariance figure."""
    if "neighbour_change_rate" in figure:
        return (f"{100 * figure['neighbour_change_rate']:.1f}% of top-10 neighbour lists change, max Δcomponent "
                f"{figure['max_abs_diff']:.2g}, min cosine {figure['min_cosine']:.6f}")
    return f"{100 * figure['label_change_rate']:.1f}% labels change, max Δlogit {figure['max_abs_logit_diff']:.2g}"
