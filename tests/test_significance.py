"""The uncertainty on accuracy figures (paired bootstrap interval, McNemar's exact test), per-label recall and the
batch-invariance figure, checked against hand computations."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest

from slimformer.metrics import batch_invariance, mcnemar_exact, paired_drop, per_class_recall


def test_mcnemar_exact_against_hand_computation():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(2, 0) == pytest.approx(2 * 1 / 4)  # P(X <= 0) for Bin(2, 1/2), both tails
    assert mcnemar_exact(5, 0) == pytest.approx(2 / 32)
    assert mcnemar_exact(1, 4) == pytest.approx(2 * (1 + 5) / 32)  # symmetric in b and c
    assert mcnemar_exact(4, 1) == mcnemar_exact(1, 4)
    assert mcnemar_exact(3, 3) == 1.0  # capped at 1


def test_paired_drop_counts_flips_both_ways():
    truth = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    reference = truth.copy()
    candidate = truth.copy()
    candidate[[0, 1, 2]] = [1, 2, 0]  # three texts the reference got right are now wrong
    reference[9] = 1  # one text the reference got wrong, the candidate right
    d = paired_drop(truth, reference, candidate)
    assert (d["b"], d["c"], d["n"]) == (3, 1, 10)
    assert d["drop_points"] == pytest.approx(20.0)  # 90% -> 70%
    assert d["mcnemar_p"] == pytest.approx(2 * (1 + 4) / 16)
    lo, hi = d["ci95"]
    assert lo < d["drop_points"] < hi


def test_paired_bootstrap_interval_matches_the_binomial_it_resamples():
    """With k of n texts lost and none gained, each bootstrap drop is 100 * Bin(n, k/n) / n: the interval's ends
    must be the 2.5% and 97.5% quantiles of that binomial (within one text)."""
    n, k = 200, 10
    truth = np.zeros(n, dtype=int)
    reference = truth.copy()
    candidate = truth.copy()
    candidate[:k] = 1
    lo, hi = paired_drop(truth, reference, candidate, samples=4000)["ci95"]
    p = k / n
    cdf = np.cumsum([comb(n, j) * p ** j * (1 - p) ** (n - j) for j in range(n + 1)])
    q_lo, q_hi = int(np.searchsorted(cdf, 0.025)), int(np.searchsorted(cdf, 0.975))
    assert abs(lo - 100 * q_lo / n) <= 100 / n + 1e-9 and abs(hi - 100 * q_hi / n) <= 100 / n + 1e-9
    assert lo >= 0  # nothing was gained: the drop can only be positive


def test_identical_predictions_have_a_zero_width_interval():
    truth = np.array([0, 1, 1, 0, 1])
    d = paired_drop(truth, np.array([0, 1, 0, 0, 1]), np.array([0, 1, 0, 0, 1]))
    assert d["drop_points"] == 0 and d["ci95"] == [0.0, 0.0] and d["mcnemar_p"] == 1.0


def test_per_class_recall():
    truth = np.array([0, 0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 0, 1, 1, 0, 2])
    assert per_class_recall(truth, pred, 4) == [0.75, 0.5, 1.0, None]  # label 3 has no text


def test_batch_invariance_flags_moved_logits_and_changed_labels():
    single = np.array([[2.0, 1.0], [0.0, 1.0], [1.0, 0.5]])
    assert not batch_invariance(single, single + 1e-6)["flagged"]  # float noise between shapes
    moved = batch_invariance(single, single + np.array([[0, 0], [0, 0], [0, 0.6]]))
    assert moved["flagged"] and moved["label_change_rate"] == pytest.approx(1 / 3)
    assert moved["max_abs_logit_diff"] == pytest.approx(0.6)
    assert batch_invariance(single, single + np.array([[0.01, 0], [0, 0], [0, 0]]))["flagged"]  # no label moves
