"""Distillation figures on TREC-6: teacher vs a 3-layer student fine-tuned without a teacher vs the 3-layer
student distilled with the best Optuna trial. Writes benchmarks/results/distill.json and .md.

    .venv/bin/python benchmarks/distill.py [--trials 10] [--runs runs]

Each run directory is resumable (Optuna study in SQLite): running again reuses what is finished.
The plain student uses the same initialisation (every 2nd teacher layer) and the best trial's learning rate
and epochs, with alpha = 1 (cross-entropy on the labels only).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from slimformer.bench.runner import DataSpec
from slimformer.cache import cache_dir, write_json, write_text
from slimformer.data import load_dataset
from slimformer.distill import DistillConfig, SearchSpace, StudentSpec, distill
from slimformer.training import TrainConfig, train_classifier

TEACHER = cache_dir() / "teachers" / "minilm-l6-trec6"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/distill.json"))
    args = parser.parse_args()
    train_classifier("minilm-l6", load_dataset("trec6"), TEACHER, TrainConfig())  # reused when present
    data = DataSpec("trec6")
    base = DistillConfig(alpha=0.5, temperature=2.0,  # the search started here (the defaults came out of it)
                         train=TrainConfig(epochs=4, lr=2e-4, max_length=64, precision="auto"))
    space = SearchSpace(epochs=(2, 8))
    searched = distill(str(TEACHER), data, args.runs / "kd-search", StudentSpec(layers=3), args.trials,
                       config=base, space=space, bench=False)
    best = searched["params"]
    plain_config = DistillConfig(alpha=1.0, train=TrainConfig(epochs=best["epochs"], lr=best["lr"], max_length=64,
                                                              precision="auto"))
    plain = distill(str(TEACHER), data, args.runs / "kd-plain", StudentSpec(layers=3), 1, config=plain_config,
                    space=space, bench=False)
    trials = json.loads((args.runs / "kd-search" / "trials.json").read_text())
    rows = {
        "teacher (MiniLM-L6, 6 layers)": searched["teacher_metrics"],
        "3-layer student, labels only (alpha=1)": plain["metrics"],
        f"3-layer student, distilled (best of {len(trials)} trials)": searched["metrics"],
    }
    result = {"best_params": best, "trials": trials, "plain_train_seconds": plain["train_seconds"],
              "distilled_train_seconds": searched["train_seconds"],
              "rows": {k: {s: v[s] for s in ("validation", "test")} for k, v in rows.items()}}
    write_json(args.out, result)
    teacher_test = searched["teacher_metrics"]["test"]["accuracy"]
    lines = ["| model | validation acc. | test acc. | test macro-F1 | vs teacher (test) |", "|---|---|---|---|---|"]
    for name, m in rows.items():
        lines.append(f"| {name} | {100 * m['validation']['accuracy']:.2f}% | {100 * m['test']['accuracy']:.2f}% | "
                     f"{m['test']['macro_f1']:.4f} | {100 * (m['test']['accuracy'] - teacher_test):+.2f} pts |")
    lines.append("")
    lines.append("Best trial: " + ", ".join(f"{k} {v:.3g}" for k, v in best.items()))
    write_text(args.out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
