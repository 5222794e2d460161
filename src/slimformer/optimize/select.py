"""Selection: every measured variant checked against the budget; the fastest inside it; the Pareto front.

Pure functions over results.json rows, so the decision is testable without measuring anything.
Latency means end-to-end p50 at batch 1 (tokenization included); accuracy is on the measured split and
its drop is in points against the baseline (PyTorch FP32 of the user's model).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    max_accuracy_drop: float = 1.0  # points of accuracy below the baseline
    latency_ms: float | None = None  # end-to-end p50 at batch 1
    size_mb: float | None = None

    def describe(self) -> str:
        parts = [f"accuracy drop <= {self.max_accuracy_drop:g} points"]
        if self.latency_ms is not None:
            parts.append(f"p50 latency <= {self.latency_ms:g} ms")
        if self.size_mb is not None:
            parts.append(f"size <= {self.size_mb:g} MB")
        return ", ".join(parts)


def assess(variants: list[dict], baseline: dict[int, str], budget: Budget) -> list[dict]:
    """One row per variant: accuracy drop, latency, size, speed-up vs the baseline at the same thread
    count, and what (if anything) breaks the budget. `baseline` maps threads -> baseline variant name."""
    by_name = {v["name"]: v for v in variants}
    rows = []
    for v in variants:
        base = by_name.get(baseline.get(v["threads"])) or by_name[next(iter(baseline.values()))]
        latency = v["latency_ms"]["end_to_end"]["p50"]
        drop = 100 * (base["accuracy"] - v["accuracy"])
        misses = []
        if drop > budget.max_accuracy_drop + 1e-9:
            misses.append({"what": "accuracy", "value": round(drop, 3), "limit": budget.max_accuracy_drop,
                           "unit": "points"})
        if budget.latency_ms is not None and latency > budget.latency_ms:
            misses.append({"what": "latency", "value": latency, "limit": budget.latency_ms, "unit": "ms"})
        if budget.size_mb is not None and (v.get("size_mb") or 0) > budget.size_mb:
            misses.append({"what": "size", "value": v["size_mb"], "limit": budget.size_mb, "unit": "MB"})
        rows.append({"name": v["name"], "threads": v["threads"], "accuracy": v["accuracy"],
                     "macro_f1": v["macro_f1"], "drop_points": round(drop, 3), "latency_ms": latency,
                     "size_mb": v.get("size_mb"),
                     "speedup": round(base["latency_ms"]["end_to_end"]["p50"] / latency, 3),
                     "baseline": base["name"], "within": not misses, "misses": misses})
    return rows


def pareto_front(rows: list[dict]) -> list[str]:
    """Names of the rows no other row beats on accuracy, latency and size at once."""
    def dominates(a: dict, b: dict) -> bool:
        ge = a["accuracy"] >= b["accuracy"] and a["latency_ms"] <= b["latency_ms"] and \
            (a["size_mb"] or 0) <= (b["size_mb"] or 0)
        gt = a["accuracy"] > b["accuracy"] or a["latency_ms"] < b["latency_ms"] or \
            (a["size_mb"] or 0) < (b["size_mb"] or 0)
        return ge and gt

    return [r["name"] for r in rows if not any(dominates(o, r) for o in rows if o is not r)]


def shortfall(row: dict) -> float:
    """How far outside the budget a row is: the sum of its relative overshoots."""
    return sum((m["value"] - m["limit"]) / max(abs(m["limit"]), 0.1) for m in row["misses"])


def select(rows: list[dict]) -> dict:
    """The fastest row inside the budget (not the first that passes), or the one that came closest."""
    inside = [r for r in rows if r["within"]]
    if inside:
        best = min(inside, key=lambda r: (r["latency_ms"], -r["accuracy"], r["size_mb"] or 0))
        return {"recommended": best["name"], "closest": None, "pareto": pareto_front(rows)}
    closest = min(rows, key=shortfall)
    return {"recommended": None, "closest": {"name": closest["name"], "misses": closest["misses"]},
            "pareto": pareto_front(rows)}


def miss_text(misses: list[dict]) -> str:
    return "; ".join(f"{m['what']} {m['value']:g} {m['unit']} vs limit {m['limit']:g} (over by "
                     f"{m['value'] - m['limit']:.3g} {m['unit']})" for m in misses)
