import numpy as np
import pytest

from slimformer.bench.stats import LatencyStats
from slimformer.metrics import agreement, classification_metrics


def test_latency_stats_match_a_hand_computation():
    seconds = [0.001 * i for i in range(1, 101)]  # 1..100 ms
    s = LatencyStats.from_seconds(seconds)
    assert s.n == 100 and s.mean == pytest.approx(50.5) and s.min == pytest.approx(1) and s.max == pytest.approx(100)
    assert s.p50 == pytest.approx(50.5) and s.p90 == pytest.approx(90.1) and s.p99 == pytest.approx(99.01)
    assert s.std == pytest.approx(np.std(np.arange(1, 101), ddof=1))
    back = LatencyStats.from_dict(s.to_dict())  # JSON keeps 4 decimals of a millisecond
    assert all(getattr(back, k) == pytest.approx(getattr(s, k), abs=1e-4) for k in s.__dataclass_fields__)
    with pytest.raises(ValueError):
        LatencyStats.from_seconds([])


def test_macro_f1_against_hand_computation():
    y_true = np.array([0, 0, 1, 1, 2])
    y_pred = np.array([0, 1, 1, 1, 0])
    m = classification_metrics(y_true, y_pred)
    # label 0: tp1 fp1 fn1 -> 0.5; label 1: tp2 fp1 fn0 -> 0.8; label 2: tp0 -> 0
    assert m["accuracy"] == pytest.approx(0.6) and m["macro_f1"] == pytest.approx((0.5 + 0.8 + 0) / 3)


def test_agreement():
    ref = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert agreement(ref, ref) == {"label_flip_rate": 0.0, "max_abs_logit_diff": 0.0}
    other = np.array([[1.0, 0.5], [2.0, 1.0]])
    assert agreement(other, ref) == {"label_flip_rate": 0.5, "max_abs_logit_diff": 2.0}
