"""Latency statistics in one value type that renders to JSON and table cells."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True)
class LatencyStats:
    """Milliseconds over n timed calls (warm-up excluded)."""

    n: int
    mean: float
    std: float
    min: float
    max: float
    p50: float
    p90: float
    p95: float
    p99: float

    @classmethod
    def from_seconds(cls, samples: list[float] | np.ndarray) -> LatencyStats:
        ms = np.asarray(samples, dtype=np.float64) * 1e3
        if ms.size == 0:
            raise ValueError("no latency samples")
        pct = {f"p{q}": float(np.percentile(ms, q)) for q in PERCENTILES}
        return cls(n=int(ms.size), mean=float(ms.mean()), std=float(ms.std(ddof=1)) if ms.size > 1 else 0.0,
                   min=float(ms.min()), max=float(ms.max()), **pct)

    def to_dict(self) -> dict[str, float]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> LatencyStats:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})

    def cell(self) -> str:
        """`p50 (p90/p99)` in ms, for tables."""
        return f"{self.p50:.2f} ({self.p90:.2f}/{self.p99:.2f})"
