"""The demo's headline figure: the recommended variant against the FP32 PyTorch teacher, from one optimize run.

    .venv/bin/python benchmarks/optimize.py [--run runs/demo]

Runs (or resumes) `slimformer optimize` on the default teacher with distillation, exactly as `make demo`
does, then writes benchmarks/results/optimize.json and .md: every variant's figures and, per thread count,
the recommended variant's end-to-end p50 speed-up and accuracy drop (target: >= 10x, <= 1.0 point), decided on
the validation split, with the held-out test split reported beside it (drops with paired-bootstrap 95% intervals).
Then the best variant inside the budget and the teacher are measured again, alternating, twice per thread
count (`remeasure`), to show whether the run's ratio holds.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from techniques import recheck_line

from slimformer.bench.runner import BenchSettings, DataSpec, remeasure
from slimformer.cache import cache_dir, write_json, write_text
from slimformer.compress.pipeline import CompressSettings
from slimformer.compress.qat import QatConfig
from slimformer.data import load_dataset
from slimformer.distill import DistillConfig
from slimformer.optimize import OptimizeSettings, optimize
from slimformer.optimize.select import drop_text
from slimformer.training import TrainConfig, train_classifier

TEACHER = cache_dir() / "teachers" / "minilm-l6-trec6"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/demo"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/optimize.json"))
    parser.add_argument("--distill-seeds", type=int, default=2, help="as `make demo` passes")
    args = parser.parse_args()
    train_classifier("minilm-l6", load_dataset("trec6"), TEACHER, TrainConfig(max_length=64))  # as make demo
    started = time.perf_counter()
    demo = OptimizeSettings(threads=(1, 2), distill=True, distill_seeds=args.distill_seeds,  # as make demo passes
                            distill_config=DistillConfig(unlabelled="movie-questions", select_fraction=0.1),
                            compress=CompressSettings(("qat",), qat=QatConfig(select_fraction=0.1)))
    optimize(str(TEACHER), DataSpec("trec6"), args.run, demo, resume=(args.run / "run.json").is_file())
    seconds = time.perf_counter() - started
    results = json.loads((args.run / "results.json").read_text())
    sel = results["selection"]
    rows = {r["name"]: r for r in sel["rows"]}
    chosen = rows.get(sel["recommended"])
    best_per_threads = {}
    for t in sorted({r["threads"] for r in rows.values()}):
        inside = [r for r in rows.values() if r["threads"] == t and r["within"]]
        if inside:
            best = min(inside, key=lambda r: r["latency_ms"])
            best_per_threads[t] = {k: best[k] for k in ("name", "latency_ms", "speedup", "drop_points", "size_mb",
                                                        "splits")}
    settings = BenchSettings(**{**results["settings"], "batch_sizes": tuple(results["settings"]["batch_sizes"]),
                                "splits": tuple(results["settings"]["splits"])})
    checks = remeasure(results, [(f"teacher-torch-fp32-t{t}", b["name"]) for t, b in best_per_threads.items()],
                       DataSpec("trec6"), settings, Path(tempfile.mkdtemp(prefix="slimformer-recheck-")))
    summary = {"run": str(args.run), "optimize_seconds_this_call": round(seconds, 1), "recommended": chosen,
               "best_inside_budget_per_thread_count": best_per_threads, "budget": sel["budget_text"],
               "recheck": checks, "distill": results.get("distill"), "machine": results["machine"],
               "rows": sel["rows"]}
    write_json(args.out, summary)
    lines = ["| variant | threads | val acc | val Δ pts (95% CI) | test acc (held out) | test Δ pts (95% CI) | "
             "batch-invariant | p50 ms | speed-up | size MB | budget (val) |", "|---" * 11 + "|"]
    for r in sorted(sel["rows"], key=lambda r: (r["threads"], r["latency_ms"])):
        v, t = r["splits"]["validation"], r["splits"]["test"]
        lines.append(f"| {r['name']} | {r['threads']} | {100 * v['accuracy']:.2f}% | "
                     f"{drop_text(v, short=True)} | {100 * t['accuracy']:.2f}% | {drop_text(t, short=True)} | "
                     f"{'no' if r['batch_dependent'] else 'yes'} | "
                     f"{r['latency_ms']:.3f} | {r['speedup']:.2f}x | {r['size_mb'] or 0:.1f} | "
                     f"{'within' if r['within'] else 'misses ' + ', '.join(m['what'] for m in r['misses'])} |")
    lines += ["", "Re-measured, alternating: " + recheck_line(checks, times="x")]
    write_text(args.out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    for t, b in best_per_threads.items():
        print(f"{t} thread(s): {b['name']} {b['speedup']:.2f}x; validation {drop_text(b['splits']['validation'])}; "
              f"held-out test {drop_text(b['splits']['test'])}")


if __name__ == "__main__":
    main()
