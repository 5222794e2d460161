"""Selection: every measured variant checked against the budget; the fastest inside it; the Pareto front.

Pure functions over results.json rows and predicted labels, so the decision is testable without measuring.
Decide on validation, report on test: every check of the budget, the recommendation and the Pareto front use the
decision split (validation); the held-out split's figures ride along in each row, labelled, and decide nothing.
Latency means end-to-end p50 at batch 1 (tokenization included). A variant's accuracy is that of the worse of its
two modes (batch 1, padded batches): the budget must hold however it is served. Drops are in points against the
baseline (PyTorch FP32 of the user's model) at the same thread count, with a paired bootstrap 95% interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..metrics import paired_drop


@dataclass(frozen=True)
class Budget:
    max_accuracy_drop: float = 1.0  # points of accuracy below the baseline, on the decision split
    latency_ms: float | None = None  # end-to-end p50 at batch 1
    size_mb: float | None = None
    max_class_drop: float | None = 5.0  # points of any one label's recall below the baseline's...
    min_class_texts: int = 2  # ...counted once the label has lost this many texts net (one text of 9 is 11 points)
    confidence: bool = False  # strict: the upper end of the drop's 95% interval must be inside the budget

    def describe(self) -> str:
        bound = "upper 95% bound of the accuracy drop" if self.confidence else "accuracy drop"
        parts = [f"{bound} <= {self.max_accuracy_drop:g} points"]
        if self.max_class_drop is not None:
            parts.append(f"any label's recall drop <= {self.max_class_drop:g} points (once it has lost "
                     f"{self.min_class_texts}+ texts)")
        if self.latency_ms is not None:
            parts.append(f"p50 latency <= {self.latency_ms:g} ms")
        if self.size_mb is not None:
            parts.append(f"size <= {self.size_mb:g} MB")
        return ", ".join(parts)


def compare(truth: np.ndarray, reference: np.ndarray, candidate: np.ndarray, ref_quality: dict,
            quality: dict) -> dict:
    """One split of a row: the candidate's accuracy against the reference's, with interval, test and per label."""
    drop = paired_drop(truth, reference, candidate)
    class_drop = {label: round(100 * (ref_quality["per_class_recall"][label] - r), 3)
                  for label, r in quality["per_class_recall"].items()
                  if r is not None and ref_quality["per_class_recall"].get(label) is not None}
    lost = (reference == truth).astype(int) - (candidate == truth).astype(int)  # +1 lost, -1 gained
    class_lost = {label: int(lost[truth == k].sum()) for k, label in enumerate(quality["per_class_recall"])
                  if label in class_drop}
    worst = max(class_drop, key=class_drop.get) if class_drop else None
    return {"accuracy": quality["accuracy"], "macro_f1": quality["macro_f1"], "n": quality["n"],
            "mode": quality["mode"], "drop_points": round(drop["drop_points"], 3),
            "ci95": [round(x, 3) for x in drop["ci95"]], "mcnemar_p": round(drop["mcnemar_p"], 4),
            "lost": drop["b"], "gained": drop["c"], "class_drop": class_drop, "class_lost_texts": class_lost,
            "worst_class": {"label": worst, "drop_points": class_drop[worst], "lost_texts": class_lost[worst]}
            if worst else None,
            "batch_invariance": quality["batch_invariance"]}


def assess(variants: list[dict], baseline: dict[int, str], budget: Budget, truth: dict[str, np.ndarray],
           predictions: dict[str, dict[str, np.ndarray]], decision: str = "validation") -> list[dict]:
    """One row per variant: per split its accuracy drop against the baseline at the same thread count (interval,
    McNemar, per-label recall drop, batch invariance); latency, size, speed-up; and what (if anything) breaks the
    budget on the decision split. `baseline` maps threads -> baseline variant name; `truth` and `predictions`
    (variant name -> split -> predicted label indices) hold the answers on the same texts."""
    by_name = {v["name"]: v for v in variants}
    rows = []
    for v in variants:
        base = by_name.get(baseline.get(v["threads"])) or by_name[next(iter(baseline.values()))]
        latency = v["latency_ms"]["end_to_end"]["p50"]
        splits = {split: compare(truth[split], predictions[base["name"]][split], predictions[v["name"]][split],
                                 base["quality"][split], v["quality"][split]) for split in v["quality"]}
        d = splits[decision]
        misses = []
        accuracy_drop = d["ci95"][1] if budget.confidence else d["drop_points"]
        if accuracy_drop > budget.max_accuracy_drop + 1e-9:
            misses.append({"what": "accuracy", "value": accuracy_drop, "limit": budget.max_accuracy_drop,
                           "unit": "points" + (" (upper 95% bound)" if budget.confidence else "")})
        limit = budget.max_class_drop
        collapsed = [(label, points) for label, points in d["class_drop"].items() if limit is not None and
                     points > limit + 1e-9 and d["class_lost_texts"][label] >= budget.min_class_texts]
        if collapsed:
            label, points = max(collapsed, key=lambda c: c[1])
            misses.append({"what": "class", "value": points, "limit": budget.max_class_drop,
                           "unit": f"points of {label} recall ({d['class_lost_texts'][label]} texts)"})
        if budget.latency_ms is not None and latency > budget.latency_ms:
            misses.append({"what": "latency", "value": latency, "limit": budget.latency_ms, "unit": "ms"})
        if budget.size_mb is not None and (v.get("size_mb") or 0) > budget.size_mb:
            misses.append({"what": "size", "value": v["size_mb"], "limit": budget.size_mb, "unit": "MB"})
        rows.append({"name": v["name"], "threads": v["threads"], "decision_split": decision,
                     "accuracy": d["accuracy"], "macro_f1": d["macro_f1"], "drop_points": d["drop_points"],
                     "latency_ms": latency, "size_mb": v.get("size_mb"),
                     "speedup": round(base["latency_ms"]["end_to_end"]["p50"] / latency, 3),
                     "baseline": base["name"], "splits": splits,
                     "batch_dependent": any(s["batch_invariance"]["flagged"] for s in splits.values()),
                     "within": not misses, "misses": misses})
    return rows


def pareto_front(rows: list[dict]) -> list[str]:
    """Names of the rows no other row beats on (decision-split) accuracy, latency and size at once."""
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
                     f"{m['value'] - m['limit']:.3g})" for m in misses)


def drop_text(split: dict, short: bool = False) -> str:
    """'-0.93 pts, 95% CI -2.41 to +0.56' (signed as a change: negative = worse than the baseline); short, for a
    table whose header names the interval: '-0.93 (-2.41 to +0.56)'."""
    change, lo, hi = (-x + 0.0 for x in (split["drop_points"], *split["ci95"]))  # + 0.0: no "-0.00"
    return f"{change:+.2f} ({hi:+.2f} to {lo:+.2f})" if short else f"{change:+.2f} pts, 95% CI {hi:+.2f} to {lo:+.2f}"
