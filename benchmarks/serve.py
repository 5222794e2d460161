"""Serving figures: the bundle behind `slimformer serve` on loopback, loaded as MLPerf's Server scenario does.

    .venv/bin/python benchmarks/serve.py [--bundle runs/demo/bundle] [--teacher DIR] [--p99-ms 50]

Every server runs in its own process (`slimformer serve`), one at a time; the load generator (slimformer.loadtest)
runs here, on the same 2 cores, which is what a loopback measurement on this machine is. Measured:

1. server overhead: p50 at concurrency 1 against the bundle's own end-to-end p50 at batch 1, in-process, same
   texts, same threads (a fresh process);
2. the highest Poisson rate with p99 <= the bound (LoadGen-style binary search) for: --max-batch 1, dynamic
   batching with a fixed --max-wait-ms, dynamic batching with --target-p99-ms, 2 workers x 1 thread, and the
   PyTorch FP32 teacher served the same way (the production speed-up is the ratio of the two maxima);
3. fixed wait vs latency target at the same offered loads (a sweep), p50/p99 at each;
4. with Ray installed: the same bundle on Ray Serve (1 replica, @serve.batch) at concurrency 1.

Writes benchmarks/results/serve.json, serve.md and serve.png (p99 vs offered load, one line per server).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from slimformer.cache import write_json, write_text
from slimformer.data import load_dataset
from slimformer.hardware import fingerprint
from slimformer.loadtest import LoadSettings, find_max_qps, plot_runs, run_load
from slimformer.serve.process import ServerProcess, http_get

TARGET = "dynamic, target p99, 1 worker x all threads"
SINGLE = "--max-batch 1, 1 worker x all threads"
TEACHER = "PyTorch FP32 teacher, target p99, 1 worker x all threads"
INPROCESS = """
import json, sys
from slimformer.bench.scenarios import latency
from slimformer.runtimes import load_predictor
spec = json.loads(sys.argv[1])
predictor = load_predictor(spec["bundle"], threads=spec["threads"])
stats, _ = latency(predictor, spec["texts"], warmup=50)
print(json.dumps(stats))
"""


def bundle_latency(bundle: str, texts: list[str], threads: int) -> dict:
    """The bundle's own batch-1 latency (model and end-to-end) in a fresh process, as the benchmarks measure it."""
    proc = subprocess.run([sys.executable, "-c", INPROCESS, json.dumps({"bundle": bundle, "texts": texts,
                                                                         "threads": threads})],
                          capture_output=True, text=True, check=True,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(threads)})
    return json.loads(proc.stdout.strip().splitlines()[-1])


def teacher_of(bundle: Path) -> str | None:
    """The PyTorch FP32 baseline of the optimize run the bundle came from."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    run = (manifest.get("bundle") or {}).get("run")
    if not run or not (Path(run) / "results.json").is_file():
        return None
    variants = json.loads((Path(run) / "results.json").read_text())["variants"]
    torch = [v for v in variants if v["runtime"] == "torch" and "fp32" in v["name"]]
    return torch[0]["model"] if torch else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("runs/demo/bundle"))
    parser.add_argument("--teacher", help="PyTorch FP32 model to serve the same way (default: the run's baseline)")
    parser.add_argument("--p99-ms", type=float, default=50.0)
    parser.add_argument("--duration-s", type=float, default=5.0, help="minimum duration of each load run")
    parser.add_argument("--min-queries", type=int, default=200)
    parser.add_argument("--steps", type=int, default=6, help="runs per max-rate search")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="the fixed window compared")
    parser.add_argument("--no-ray", dest="ray", action="store_false",
                        help="skip Ray Serve at concurrency 1 (measured when ray is installed)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/serve.json"))
    args = parser.parse_args()
    if not (args.bundle / "manifest.json").is_file():
        raise SystemExit(f"no bundle at {args.bundle}: run `make demo` (or pass --bundle)")
    machine = fingerprint()
    cores = machine["cpu"]["cores"]
    texts = load_dataset("trec6")["test"].texts
    texts = [texts[i] for i in np.random.default_rng(0).permutation(len(texts))]
    base = LoadSettings("", min_duration_s=args.duration_s, min_queries=args.min_queries, p99_ms=args.p99_ms)
    results: dict = {"bundle": str(args.bundle.resolve()), "machine": machine, "p99_bound_ms": args.p99_ms,
                     "load": base.to_dict(), "servers": {}}
    started = time.perf_counter()

    print(f"bundle in-process, batch 1, 1 and {cores} threads ...", flush=True)
    results["bundle_latency_ms"] = {t: bundle_latency(str(args.bundle), texts[:300], t) for t in sorted({1, cores})}

    def serve(name: str, model: str, *serve_args: str, search: bool = True, c1: bool = False) -> dict:
        entry = {"model": model, "args": list(serve_args)}
        with ServerProcess(model, *serve_args) as server:
            info = http_get(server.url + "/v1/info")[1]
            entry["info"] = {k: info[k] for k in ("runtime", "workers", "threads_per_worker", "batch_invariance")}
            at = replace(base, url=server.url)
            if c1:
                run_load(replace(at, concurrency=1, min_queries=50, min_duration_s=1.0, p99_ms=None), texts)  # warm
                entry["concurrency_1"] = run_load(replace(at, concurrency=1, p99_ms=None), texts)
                print(f"  {name}: concurrency 1 p50 {entry['concurrency_1']['latency_ms']['p50']:.3f} ms", flush=True)
            if search:
                entry["search"] = find_max_qps(at, texts, args.steps,
                                               progress=lambda line: print(f"  {name}: {line}", flush=True))
            entry["batching"] = http_get(server.url + "/v1/info")[1]["batching"]  # with the fitted cost model
        results["servers"][name] = entry
        return entry

    bundle = str(args.bundle)
    p99 = ("--target-p99-ms", str(args.p99_ms))
    one = ("--workers", "1")
    target = serve(TARGET, bundle, *one, *p99, c1=True)
    fixed = serve(f"dynamic, fixed wait {args.max_wait_ms:g} ms, 1 worker x all threads", bundle, *one,
                  "--max-wait-ms", str(args.max_wait_ms), c1=True)
    serve(SINGLE, bundle, *one, "--max-batch", "1", "--max-wait-ms", "0")
    if cores >= 2:
        serve("dynamic, target p99, 1 worker x 1 thread", bundle, *one, *p99, "--threads", "1", c1=True)
        serve(f"dynamic, target p99, {cores} workers x 1 thread", bundle, *p99, "--workers", str(cores))
    teacher = args.teacher or teacher_of(args.bundle)
    if teacher:
        serve(TEACHER, teacher, *one, *p99, c1=True)

    # fixed wait vs latency target at the same offered loads
    top = max(target["search"]["max_qps"], fixed["search"]["max_qps"])
    sweep = {}
    for name, extra in (("target", (*one, "--target-p99-ms", str(args.p99_ms))),
                        ("fixed", (*one, "--max-wait-ms", str(args.max_wait_ms)))):
        with ServerProcess(bundle, *extra) as server:
            runs = []
            for share in (0.1, 0.3, 0.5, 0.7, 0.9):
                rate = round(share * top, 1)
                runs.append(run_load(replace(base, url=server.url, rate=rate), texts))
                print(f"  sweep {name} {rate} q/s: p50 {runs[-1]['latency_ms']['p50']:.2f} p99 "
                      f"{runs[-1]['latency_ms']['p99']:.2f} ms {runs[-1]['verdict']}", flush=True)
            sweep[name] = runs
    results["sweep_fixed_vs_target"] = sweep

    if args.ray and importlib.util.find_spec("ray"):
        try:
            with ServerProcess(bundle, "--ray", "--replicas", "1", "--threads", str(cores)) as server:
                at = replace(base, url=server.url, concurrency=1, p99_ms=None)
                run_load(replace(at, min_duration_s=1.0, min_queries=50), texts)  # warm-up
                results["ray_serve_concurrency_1"] = run_load(at, texts)
        except RuntimeError as e:
            results["ray_serve_concurrency_1"] = {"error": str(e)[-500:]}

    s = results["servers"]
    q = {name: e["search"]["max_qps"] for name, e in s.items() if "search" in e}
    overhead = {}
    for name, e in s.items():
        if "concurrency_1" in e and "teacher" not in name:
            threads = e["info"]["threads_per_worker"]
            overhead[name] = round(e["concurrency_1"]["latency_ms"]["p50"]
                                   - results["bundle_latency_ms"][threads]["end_to_end"]["p50"], 3)
    results["summary"] = {
        "max_qps_at_p99": q,
        "best": max(q, key=q.get),
        "batching_over_max_batch_1": round(q[TARGET] / q[SINGLE], 2) if q[SINGLE] else None,
        "server_overhead_p50_ms": overhead,
        "bundle_over_teacher": round(q[TARGET] / q[TEACHER], 2) if q.get(TEACHER) else None,
    }
    results["seconds"] = round(time.perf_counter() - started, 1)
    write_json(args.out, results)
    series = {name: e["search"]["runs"] for name, e in s.items() if "search" in e}
    plot_runs([], args.out.with_suffix(".png"), f"slimformer serve, {machine['cpu']['model']}, {cores} cores",
              args.p99_ms, series=series)
    write_text(args.out.with_suffix(".md"), table(results))
    print(table(results))


def table(results: dict) -> str:
    cpu = results["machine"]["cpu"]
    own = ", ".join(f"{b['end_to_end']['p50']:.3f} ms at {t} thread(s)"
                    for t, b in results["bundle_latency_ms"].items())
    lines = [f"CPU: {cpu['model']} ({', '.join(cpu['isa'])}), {cpu['cores']} cores; client and server on the same "
             f"cores (loopback). Bundle in-process, batch 1, end-to-end p50: {own}.", "",
             f"| server | max Poisson q/s with p99 <= {results['p99_bound_ms']:g} ms | p50 / p99 there (ms) | "
             "p50 at concurrency 1 (ms) |", "|---|---|---|---|"]
    for name, e in results["servers"].items():
        best = (e.get("search") or {}).get("best") or {}
        lat = best.get("latency_ms") or {}
        c1 = (e.get("concurrency_1") or {}).get("latency_ms") or {}
        lines.append(f"| {name} | {e['search']['max_qps'] if 'search' in e else '-'} | "
                     f"{lat.get('p50', float('nan')):.2f} / {lat.get('p99', float('nan')):.2f} | "
                     f"{c1['p50']:.3f} |" if c1 else
                     f"| {name} | {e['search']['max_qps']} | {lat.get('p50', float('nan')):.2f} / "
                     f"{lat.get('p99', float('nan')):.2f} | - |")
    summary = results["summary"]
    lines += ["", f"Dynamic batching over --max-batch 1: {summary['batching_over_max_batch_1']}x the rate at the "
              f"same p99 bound. Highest rate: {summary['best']}. Server overhead at concurrency 1 (p50 over the "
              "bundle in-process at the same threads): " + ", ".join(
                  f"{v:+.3f} ms ({k})" for k, v in summary["server_overhead_p50_ms"].items()) + "."]
    if summary.get("bundle_over_teacher"):
        lines.append(f"Bundle over the PyTorch FP32 teacher served the same way: {summary['bundle_over_teacher']}x "
                     "the rate at the same p99 bound.")
    lines += ["", "Fixed wait vs latency target at the same offered loads (p50 / p99 ms):", "",
              "| offered q/s | target | fixed |", "|---|---|---|"]
    sweep = results["sweep_fixed_vs_target"]
    for t, f in zip(sweep["target"], sweep["fixed"], strict=True):
        lines.append(f"| {t['offered_qps']} | {t['latency_ms']['p50']:.2f} / {t['latency_ms']['p99']:.2f} | "
                     f"{f['latency_ms']['p50']:.2f} / {f['latency_ms']['p99']:.2f} |")
    if "ray_serve_concurrency_1" in results:
        r = results["ray_serve_concurrency_1"]
        lines += ["", f"Ray Serve (1 replica, HTTP proxy), concurrency 1: p50 {r['latency_ms']['p50']:.3f} ms"
                  if "latency_ms" in r else f"Ray Serve: {r.get('error')}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
