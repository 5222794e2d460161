"""Selection: every measured variant checked against the budget; the fastest inside it; the Pareto front.

Pure functions over results.json rows and stored answers, so the decision is testable without measuring.
Decide on validation, report on test: every check of the budget, the recommendation and the Pareto front use the
decision split (validation); the held-out split's figures ride along in each row, labelled, and decide nothing.
Latency means end-to-end p50 at batch 1 (tokenization included). A variant's quality is the task's budget metric
(tasks/scoring.py: accuracy for a classifier, precision@10 for embeddings) in the worse of its two modes (batch 1,
padded batches): the budget must hold however it is served. Drops are in points against the baseline (PyTorch
FP32 of the user's model) at the same thread count, with a paired bootstrap 95% interval.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..metrics import paired_difference
from ..tasks.scoring import Scoring, scoring_for


@dataclass(frozen=True)
class Budget:
    max_drop: float = 1.0  # points of the task's budget metric below the baseline, on the decision split
    latency_ms: float | None = None  # end-to-end p50 at batch 1
    size_mb: float | None = None
    max_class_drop: float | None = 5.0  # classification: points of any one label's recall below the baseline's...
    min_class_texts: int = 2  # ...counted once the label has lost this many texts net (one text of 9 is 11 points)
    min_cosine: float | None = 0.99  # embeddings: mean cosine of a variant's vectors to the baseline's
    confidence: bool = False  # strict: the upper end of the drop's 95% interval must be inside the budget

    def describe(self, scoring: Scoring | str = "classification") -> str:
        scoring = scoring_for(scoring) if isinstance(scoring, str) else scoring
        what = scoring.metric_label
        bound = f"upper 95% bound of the {what} drop" if self.confidence else f"{what} drop"
        parts = [f"{bound} <= {self.max_drop:g} points", *scoring.budget_text(self)]
        if self.latency_ms is not None:
            parts.append(f"p50 latency <= {self.latency_ms:g} ms")
        if self.size_mb is not None:
            parts.append(f"size <= {self.size_mb:g} MB")
        return ", ".join(parts)


def compare(scoring: Scoring, truth, reference, candidate, ref_quality: dict, quality: dict) -> dict:
    """One split of a row: the candidate's budget metric against the reference's (same texts, served modes), with
    interval and sign test, and the task's own figures (agreement with the reference, per-label drops)."""
    per_ref, per_cand = scoring.per_text(reference, truth), scoring.per_text(candidate, truth)
    drop = paired_difference(per_ref, per_cand)
    if not scoring.higher_is_better:
        drop = paired_difference(per_cand, per_ref)
    return {scoring.metric: quality[scoring.metric], **{k: quality[k] for k, _, _ in scoring.columns},
            "n": quality["n"], "mode": quality["mode"], "drop_points": round(drop["drop_points"], 3),
            "ci95": [round(x, 3) for x in drop["ci95"]], "mcnemar_p": round(drop["mcnemar_p"], 4),
            "lost": drop["b"], "gained": drop["c"],
            **scoring.compare_extra(truth, reference, candidate, per_ref, per_cand, ref_quality, quality),
            "batch_invariance": quality["batch_invariance"]}


def assess(variants: list[dict], baseline: dict[int, str], budget: Budget, truth: dict,
           answers: dict[str, dict], decision: str = "validation", scoring: Scoring | str = "classification"
           ) -> list[dict]:
    """One row per variant: per split its budget-metric drop against the baseline at the same thread count
    (interval, sign test, per-label drops, agreement, batch invariance); latency, size, speed-up; and what (if
    anything) breaks the budget on the decision split. `baseline` maps threads -> baseline variant name; `truth`
    and `answers` (variant name -> split -> the served mode's answers) hold the answers on the same texts."""
    scoring = scoring_for(scoring) if isinstance(scoring, str) else scoring
    by_name = {v["name"]: v for v in variants}
    rows = []
    for v in variants:
        base = by_name.get(baseline.get(v["threads"])) or by_name[next(iter(baseline.values()))]
        latency = v["latency_ms"]["end_to_end"]["p50"]
        splits = {split: compare(scoring, truth[split], answers[base["name"]][split], answers[v["name"]][split],
                                 base["quality"][split], v["quality"][split]) for split in v["quality"]}
        d = splits[decision]
        misses = []
        drop = d["ci95"][1] if budget.confidence else d["drop_points"]
        if drop > budget.max_drop + 1e-9:
            misses.append({"what": scoring.metric_label, "kind": "quality", "value": drop, "limit": budget.max_drop,
                           "unit": "points" + (" (upper 95% bound)" if budget.confidence else "")})
        misses += scoring.misses(d, budget)
        if budget.latency_ms is not None and latency > budget.latency_ms:
            misses.append({"what": "latency", "kind": "latency", "value": latency, "limit": budget.latency_ms,
                           "unit": "ms"})
        if budget.size_mb is not None and (v.get("size_mb") or 0) > budget.size_mb:
            misses.append({"what": "size", "kind": "size", "value": v["size_mb"], "limit": budget.size_mb,
                           "unit": "MB"})
        rows.append({"name": v["name"], "threads": v["threads"], "decision_split": decision, "metric": scoring.metric,
                     "quality": d[scoring.metric], **{k: d[k] for k, _, _ in scoring.columns},
                     "drop_points": d["drop_points"], "latency_ms": latency, "size_mb": v.get("size_mb"),
                     "speedup": round(base["latency_ms"]["end_to_end"]["p50"] / latency, 3),
                     "baseline": base["name"], "splits": splits,
                     "batch_dependent": any(s["batch_invariance"]["flagged"] for s in splits.values()),
                     "within": not misses, "misses": misses})
    return rows


def pareto_front(rows: list[dict]) -> list[str]:
    """Names of the rows no other row beats on (decision-split) quality, latency and size at once (quality: the
    budget metric, higher is better; the drop is compared, so a metric where lower is better works too)."""
    def dominates(a: dict, b: dict) -> bool:
        ge = a["drop_points"] <= b["drop_points"] and a["latency_ms"] <= b["latency_ms"] and \
            (a["size_mb"] or 0) <= (b["size_mb"] or 0)
        gt = a["drop_points"] < b["drop_points"] or a["latency_ms"] < b["latency_ms"] or \
            (a["size_mb"] or 0) < (b["size_mb"] or 0)
        return ge and gt

    return [r["name"] for r in rows if not any(dominates(o, r) for o in rows if o is not r)]


def shortfall(row: dict) -> float:
    """How far outside the budget a row is: the sum of its relative overshoots."""
    return sum(abs(m["value"] - m["limit"]) / max(abs(m["limit"]), 0.1) for m in row["misses"])


def select(rows: list[dict]) -> dict:
    """The fastest row inside the budget (not the first that passes), or the one that came closest."""
    inside = [r for r in rows if r["within"]]
    if inside:
        best = min(inside, key=lambda r: (r["latency_ms"], r["drop_points"], r["size_mb"] or 0))
        return {"recommended": best["name"], "closest": None, "pareto": pareto_front(rows)}
    closest = min(rows, key=shortfall)
    return {"recommended": None, "closest": {"name": closest["name"], "misses": closest["misses"]},
            "pareto": pareto_front(rows)}


def miss_text(misses: list[dict]) -> str:
    return "; ".join(f"{m['what']} {m['value']:g} {m['unit']} vs limit {m['limit']:g} ("
                     + (f"under by {m['limit'] - m['value']:.3g})" if m.get("below") else
                        f"over by {m['value'] - m['limit']:.3g})") for m in misses)


def drop_text(split: dict, short: bool = False) -> str:
    """'-0.93 pts, 95% CI -2.41 to +0.56' (signed as a change: negative = worse than the baseline); short, for a
    table whose header names the interval: '-0.93 (-2.41 to +0.56)'."""
    change, lo, hi = (-x + 0.0 for x in (split["drop_points"], *split["ci95"]))  # + 0.0: no "-0.00"
    return f"{change:+.2f} ({hi:+.2f} to {lo:+.2f})" if short else f"{change:+.2f} pts, 95% CI {hi:+.2f} to {lo:+.2f}"
