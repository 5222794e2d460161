"""Classification metrics, computed one way for training, benchmarks and reports."""

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


def paired_drop(y_true: np.ndarray, reference: np.ndarray, candidate: np.ndarray, seed: int = 0,
                samples: int = BOOTSTRAP_SAMPLES) -> dict:
    """Accuracy drop of `candidate` against `reference` predictions on the same texts, in points, with a paired
    bootstrap 95% interval (the same resampled texts for both) and McNemar's exact test on the texts that flip.

    b: texts the reference got right and the candidate wrong; c: the reverse. drop = 100 * (b - c) / n."""
    y_true, reference, candidate = map(np.asarray, (y_true, reference, candidate))
    ok_ref, ok_cand = reference == y_true, candidate == y_true
    n = len(y_true)
    if n == 0:
        return {"drop_points": float("nan"), "ci95": [float("nan")] * 2, "mcnemar_p": 1.0, "b": 0, "c": 0, "n": 0}
    diff = ok_ref.astype(np.int8) - ok_cand.astype(np.int8)  # +1: lost, -1: gained, 0: same
    draws = np.random.default_rng(seed).integers(0, n, size=(samples, n))
    boot = 100 * diff[draws].mean(axis=1)
    b, c = int(np.sum(diff == 1)), int(np.sum(diff == -1))
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"drop_points": 100 * (b - c) / n, "ci95": [float(lo), float(hi)], "mcnemar_p": mcnemar_exact(b, c),
            "b": b, "c": c, "n": n}


def batch_invariance(single: np.ndarray, batched: np.ndarray, tolerance: float = 1e-3) -> dict:
    """How much a variant's answers depend on their batch-mates: logits of each text alone (batch 1) against the
    same text inside padded batches of mixed lengths. Flagged when a label changes or a logit moves more than
    `tolerance` (FP32 kernels differ by ~1e-6 between shapes; per-tensor dynamic INT8 by far more)."""
    changed = float(np.mean(single.argmax(-1) != batched.argmax(-1))) if len(single) else 0.0
    diff = float(np.max(np.abs(single - batched))) if len(single) else 0.0
    return {"label_change_rate": changed, "max_abs_logit_diff": diff, "n": int(len(single)),
            "flagged": bool(changed > 0 or diff > tolerance)}


def merged_invariance(figures: list[dict]) -> dict:
    """One batch-invariance figure over several splits: the worst label-change rate and logit move, flagged if
    any split is."""
    return {"label_change_rate": max(f["label_change_rate"] for f in figures),
            "max_abs_logit_diff": max(f["max_abs_logit_diff"] for f in figures),
            "flagged": any(f["flagged"] for f in figures), "n": sum(f["n"] for f in figures)}


def invariance_text(figure: dict) -> str:
    """'0.7% labels change, max Δlogit 1.4' for a (merged) batch-invariance figure."""
    return f"{100 * figure['label_change_rate']:.1f}% labels change, max Δlogit {figure['max_abs_logit_diff']:.2g}"
