"""Distillation figures on TREC-6: the teacher against 3-layer students trained three ways, per seed.

    .venv/bin/python benchmarks/distill.py [--seeds 42,1] [--trials 1] [--runs runs/distill-bench]

Students (all start from every 2nd teacher layer, 1, 3, 5; lr and epochs as `slimformer distill`'s defaults):
  - labels only: alpha = 1, no teacher (plain fine-tuning of the small model);
  - distilled: the default alpha and T on the training texts alone (--augment 0);
  - distilled + augmented: the defaults (`slimformer distill` as shipped), whose transfer set adds perturbed
    copies of every training text labelled by the teacher.
With --trials N > 1 each student's Optuna search starts at those values. Writes benchmarks/results/distill.json
and .md. Each run directory is resumable (Optuna study in SQLite): running again reuses what is finished.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import replace
from pathlib import Path

from slimformer.bench.runner import DataSpec
from slimformer.cache import cache_dir, write_json, write_text
from slimformer.data import load_dataset
from slimformer.distill import DistillConfig, StudentSpec, distill
from slimformer.training import TrainConfig, train_classifier

TEACHER = cache_dir() / "teachers" / "minilm-l6-trec6"


def students(seed: int) -> dict[str, DistillConfig]:
    default = DistillConfig()
    train = replace(default.train, seed=seed)
    return {
        "3-layer student, labels only (alpha 1)": replace(default, alpha=1.0, augment=0, train=train),
        f"3-layer student, distilled (alpha {default.alpha:g}, T {default.temperature:g})":
            replace(default, augment=0, train=train),
        f"3-layer student, distilled + {default.augment} augmented copies per text (the default)":
            replace(default, train=train),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="42,1")
    parser.add_argument("--trials", type=int, default=1)
    parser.add_argument("--runs", type=Path, default=Path("runs/distill-bench"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/distill.json"))
    args = parser.parse_args()
    train_classifier("minilm-l6", load_dataset("trec6"), TEACHER, TrainConfig(max_length=64))  # as make demo
    data = DataSpec("trec6")
    rows, teacher = {}, None
    for seed in (int(s) for s in args.seeds.split(",")):
        for i, (name, config) in enumerate(students(seed).items()):
            summary = distill(str(TEACHER), data, args.runs / f"seed{seed}-{i}", StudentSpec(layers=3), args.trials,
                              config=config, bench=False)
            teacher = summary["teacher_metrics"]
            rows.setdefault(name, []).append({"seed": seed, "params": summary["params"],
                                              "train_seconds": summary["train_seconds"],
                                              **{s: summary["metrics"][s] for s in ("validation", "test")}})
    default = DistillConfig()
    write_json(args.out, {"teacher": teacher, "students": rows, "trials": args.trials, "defaults": {
        "alpha": default.alpha, "temperature": default.temperature, "augment": default.augment,
        "lr": default.train.lr, "epochs": default.train.epochs}})
    t = teacher["test"]["accuracy"]
    lines = ["| model | seed | validation acc. | test acc. | test macro-F1 | vs teacher (test) | train s |",
             "|---|---|---|---|---|---|---|",
             f"| teacher (MiniLM-L6, 6 layers) | - | {100 * teacher['validation']['accuracy']:.2f}% | {100 * t:.2f}% "
             f"| {teacher['test']['macro_f1']:.4f} | - | - |"]
    for name, runs in rows.items():
        for r in runs:
            lines.append(f"| {name} | {r['seed']} | {100 * r['validation']['accuracy']:.2f}% | "
                         f"{100 * r['test']['accuracy']:.2f}% | {r['test']['macro_f1']:.4f} | "
                         f"{100 * (r['test']['accuracy'] - t):+.2f} pts | {r['train_seconds']:.0f} |")
        if len(runs) > 1:
            mean = statistics.mean(r["test"]["accuracy"] for r in runs)
            lines.append(f"| {name} | mean | {100 * statistics.mean(r['validation']['accuracy'] for r in runs):.2f}% "
                         f"| {100 * mean:.2f}% | | {100 * (mean - t):+.2f} pts | |")
    write_text(args.out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
