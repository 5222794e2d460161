"""`slimformer optimize`: selection logic, mixed-precision fallback, resume after kill -9, report, bundle."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    TOPICS,
    assert_disk_full_error,
    keyword_rows,
    make_tiny_classifier,
    needs_small_disk,
    run_on_small_disk,
    write_csv,
)
from test_cli import assert_one_line_error, run

from slimformer.bench.runner import BenchSettings, DataSpec
from slimformer.metrics import per_class_recall
from slimformer.optimize import OptimizeSettings, optimize
from slimformer.optimize.select import Budget, assess, pareto_front, select
from slimformer.techniques import parse_recipe

QUICK = BenchSettings(latency_samples=20, warmup=2, batch_sizes=(1, 8), throughput_min_s=0.05, throughput_min_texts=16,
                      throughput_repeats=2, cold_start_runs=0, settle_s=0.0)


N = 200
TRUTH = np.arange(N) % 2  # two labels, alternating


def _answers(accuracy: float, wrong_first: bool = False) -> np.ndarray:
    """Predictions right on round(accuracy * N) texts: the last ones wrong (or the first, to vary which)."""
    right = round(accuracy * N)
    pred = TRUTH.copy()
    wrong = slice(0, N - right) if wrong_first else slice(right, N)
    pred[wrong] = 1 - pred[wrong]
    return pred


def _case(*specs):
    """(variants, truth, predictions) for assess(): each spec is (name, validation acc, p50 ms, size MB, threads,
    test acc or None for the validation one, predictions override per split)."""
    variants, predictions = [], {}
    for name, acc, p50, size, threads, test_acc, override in specs:
        preds = {"validation": _answers(acc), "test": _answers(acc if test_acc is None else test_acc)}
        preds.update(override or {})
        quality = {}
        for split, pred in preds.items():
            recall = per_class_recall(TRUTH, pred, 2)
            quality[split] = {"accuracy": float(np.mean(pred == TRUTH)), "macro_f1": 0.0, "n": N, "mode": "batch1",
                              "per_class": {"a": recall[0], "b": recall[1]},
                              "batch_invariance": {"label_change_rate": 0.0, "max_abs_logit_diff": 0.0, "n": N,
                                                   "flagged": False}}
        variants.append({"name": name, "threads": threads, "size_mb": size, "quality": quality,
                         "latency_ms": {"end_to_end": {"p50": p50}}})
        predictions[name] = {split: np.eye(2)[pred] for split, pred in preds.items()}  # logits of those labels
    return variants, {"validation": TRUTH, "test": TRUTH}, predictions


def _spec(name, acc, p50, size, threads=1, test_acc=None, override=None):
    return (name, acc, p50, size, threads, test_acc, override)


def test_selection_picks_the_fastest_inside_the_budget_not_the_first():
    variants, truth, preds = _case(_spec("base", 0.90, 10.0, 96), _spec("a", 0.895, 4.0, 40),
                                   _spec("b", 0.895, 2.0, 23), _spec("c", 0.85, 1.0, 20), _spec("d", 0.91, 8.0, 95))
    rows = assess(variants, {1: "base"}, Budget(max_drop=1.0), truth, preds)
    by = {r["name"]: r for r in rows}
    assert by["c"]["misses"][0]["what"] == "accuracy" and by["c"]["drop_points"] == pytest.approx(5.0)
    assert by["b"]["speedup"] == pytest.approx(5.0) and by["b"]["within"]
    assert select(rows)["recommended"] == "b"  # a passes first; b is faster; c is fastest but too inaccurate
    assert set(pareto_front(rows)) == {"b", "c", "d"}  # a ties b on accuracy and loses on the rest; base loses to d
    tight = select(assess(variants, {1: "base"}, Budget(1.0, latency_ms=3.0, size_mb=22), truth, preds))
    assert tight["recommended"] is None and tight["closest"]["name"] == "b"
    assert [m["what"] for m in tight["closest"]["misses"]] == ["size"]


def test_a_variant_inside_the_budget_on_test_but_not_on_validation_is_not_recommended():
    variants, truth, preds = _case(_spec("base", 0.90, 10.0, 90), _spec("fast", 0.875, 1.0, 20, test_acc=0.90),
                                   _spec("slower", 0.895, 3.0, 20, test_acc=0.88))
    rows = {r["name"]: r for r in assess(variants, {1: "base"}, Budget(1.0), truth, preds)}
    assert rows["fast"]["splits"]["test"]["drop_points"] == 0 and rows["fast"]["drop_points"] == pytest.approx(2.5)
    assert not rows["fast"]["within"] and rows["fast"]["misses"][0]["what"] == "accuracy"
    # the held-out split decides nothing, either way: 'slower' is 2 points down on test, yet recommended
    assert rows["slower"]["within"] and rows["slower"]["splits"]["test"]["drop_points"] == pytest.approx(2.0)
    assert select(list(rows.values()))["recommended"] == "slower"


def test_rows_carry_the_interval_and_mcnemar_and_confidence_makes_the_budget_strict():
    variants, truth, preds = _case(_spec("base", 0.90, 10.0, 90), _spec("q", 0.895, 1.0, 20))
    row = assess(variants, {1: "base"}, Budget(1.0), truth, preds)[1]
    v = row["splits"]["validation"]
    assert (v["lost"], v["gained"]) == (1, 0) and v["drop_points"] == pytest.approx(0.5)
    assert v["mcnemar_p"] == pytest.approx(1.0) and v["ci95"][0] == 0 and v["ci95"][1] >= 0.5
    assert row["within"]  # 0.5 points: inside a 1-point budget on the point estimate
    strict = assess(variants, {1: "base"}, Budget(0.6, confidence=True), truth, preds)[1]
    assert not strict["within"] and strict["misses"][0]["value"] == v["ci95"][1] > 0.6
    assert "upper 95% bound" in Budget(1.0, confidence=True).describe()


def test_a_variant_that_collapses_one_label_misses_the_budget_though_the_mean_holds():
    collapse = _answers(0.90)
    collapse[[0, 2, 4, 6, 8]] = 1  # label 'a' loses 5 of its 100 texts...
    collapse[[181, 183, 185, 187, 189]] = 1  # ...and label 'b' gains back 5 it had wrong: the mean is unchanged
    variants, truth, preds = _case(_spec("base", 0.90, 10.0, 90),
                                   _spec("skewed", 0.90, 1.0, 20, override={"validation": collapse}))
    row = assess(variants, {1: "base"}, Budget(1.0, max_class_drop=4.0), truth, preds)[1]
    assert row["drop_points"] == 0
    assert row["splits"]["validation"]["worst_class"] == {"label": "a", "drop_points": pytest.approx(5.0),
                                                          "lost_texts": 5}
    assert [m["what"] for m in row["misses"]] == ["class"] and "(5 texts)" in row["misses"][0]["unit"]
    assert assess(variants, {1: "base"}, Budget(1.0, max_class_drop=None), truth, preds)[1]["within"]
    # one text of a small label is many points, but noise, not a collapse: counted from min_class_texts on
    assert assess(variants, {1: "base"}, Budget(1.0, max_class_drop=4.0, min_class_texts=6), truth, preds)[1]["within"]


def test_speedup_is_against_the_baseline_at_the_same_thread_count():
    variants, truth, preds = _case(_spec("base-t1", 0.9, 10.0, 90, 1), _spec("base-t2", 0.9, 6.0, 90, 2),
                                   _spec("q-t2", 0.9, 2.0, 23, 2))
    rows = assess(variants, {1: "base-t1", 2: "base-t2"}, Budget(), truth, preds)
    assert {r["name"]: r["speedup"] for r in rows}["q-t2"] == pytest.approx(3.0)


@pytest.fixture(scope="module")
def topics_csv(tmp_path_factory) -> Path:
    return write_csv(tmp_path_factory.mktemp("data") / "topics600.csv", keyword_rows(600, seed=1))


@pytest.fixture(scope="module")
def fragile_model(tmp_path_factory, topics_csv) -> Path:
    """A trained tiny BERT whose pooler weight has one huge outlier feeding a dimension the classifier ignores:
    FP32 is unaffected, but per-tensor INT8 of the pooler rounds every other pooler weight to zero."""
    import torch
    from transformers import BertForSequenceClassification

    from slimformer.data import load_dataset
    from slimformer.training import TrainConfig, train_classifier

    root = tmp_path_factory.mktemp("models")
    base = make_tiny_classifier(root / "base", sorted(TOPICS), seed=5)
    trained = root / "trained"
    train_classifier(str(base), load_dataset(str(topics_csv)), trained,
                     TrainConfig(epochs=4, lr=3e-3, batch_size=16, max_length=16))
    model = BertForSequenceClassification.from_pretrained(trained)
    with torch.no_grad():
        model.bert.pooler.dense.weight[0, 0] = 500.0
        model.classifier.weight[:, 0] = 0.0
    fragile = root / "fragile"
    model.save_pretrained(fragile)
    for f in trained.iterdir():
        if f.name.startswith(("vocab", "tokenizer", "special")):
            shutil.copy2(f, fragile / f.name)
    return fragile


def test_optimize_falls_back_to_mixed_precision_and_exports_a_bundle(tmp_path, fragile_model, topics_csv):
    out = tmp_path / "run"
    settings = OptimizeSettings(threads=(1,), only=("ort-int8-dynamic",), bench=QUICK)
    selection = optimize(str(fragile_model), DataSpec(str(topics_csv)), out, settings)
    rows = {r["name"]: r for r in selection["rows"]}
    assert set(rows) == {"teacher-torch-fp32-t1", "teacher-ort-int8-dynamic-t1", "teacher-ort-int8-dynamic-mixed-t1"}
    assert rows["teacher-torch-fp32-t1"]["accuracy"] > 0.9
    assert not rows["teacher-ort-int8-dynamic-t1"]["within"]  # the outlier wrecks plain INT8
    fallback = selection["fallbacks"][0]
    assert fallback["ranking"][0]["node"].endswith("/bert/pooler/dense/Gemm")  # the sensitive node is found first
    assert fallback["excluded"][0] == fallback["ranking"][0]["node"] and fallback["within"]
    assert rows["teacher-ort-int8-dynamic-mixed-t1"]["within"]
    assert selection["recommended"] in {n for n, r in rows.items() if r["within"]}
    fastest = min((r for r in rows.values() if r["within"]), key=lambda r: r["latency_ms"])
    assert selection["recommended"] == fastest["name"]
    report = (out / "report.md").read_text()
    assert "teacher-ort-int8-dynamic-mixed-t1" in report
    assert f"kept 1 in float ({fallback['excluded'][0]})" in report
    # the mixed variant's recipe is the INT8 step with the kept node in its exclude option (techniques.recipe_text)
    mixed = next(b for b in selection["built"] if b["name"] == "teacher-ort-int8-dynamic-mixed")
    assert mixed["fallback_of"] == "teacher-ort-int8-dynamic"
    assert parse_recipe(mixed["recipe"])[-1].exclude == (fallback["excluded"][0],)
    header, _, *table = [line.split(" | ") for line in report.splitlines() if line.startswith("| ")][:5]
    assert "texts/s (batch 1/8)" in header and "peak VRAM MB" in header
    energy = {row[0].lstrip("| "): row[header.index("energy / 1k texts (batch)")] for row in table}
    readable = Path("/sys/class/powercap").exists()  # RAPL may still be root-only there: then "not readable"
    assert all(cell.endswith(("(1)", "(8)")) for cell in energy.values())  # the fastest batch size it comes from
    assert readable or set(energy.values()) <= {"not readable here (1)", "not readable here (8)"}
    # bundle: exactly what a runtime needs, and it predicts
    proc = run("export", str(out), "--variant", "teacher-ort-int8-dynamic-mixed-t1", "--out", str(tmp_path / "b"))
    assert proc.returncode == 0, proc.stderr
    files = sorted(p.name for p in (tmp_path / "b").iterdir())
    assert "model.onnx" in files and "manifest.json" in files and not any(f.endswith(".safetensors") for f in files)
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["bundle"]["runtime"] == "onnxruntime" and manifest["labels"] == sorted(TOPICS)
    assert manifest["task"] == "classification" and "tokenizer.json" in manifest["tokenizer_files"]
    assert set(manifest["tokenizer_files"]) <= set(files)
    (tmp_path / "texts.txt").write_text("the coach and the team scored a goal\nspicy pasta sauce for dinner\n")
    proc = run("predict", str(tmp_path / "b"), "--input", str(tmp_path / "texts.txt"))
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["label"] for line in proc.stdout.splitlines()] == ["sport", "food"]


def test_budget_nothing_meets_still_reports_the_closest(tmp_path, tiny_bert, topics_csv):
    out = tmp_path / "run"
    proc = run("optimize", "--model", str(tiny_bert), "--data", str(topics_csv), "--out", str(out), "--threads", "1",
               "--only", "ort-fp32", "--latency-budget-ms", "0.001", "--latency-samples", "10")
    assert proc.returncode == 0, proc.stderr
    assert "No variant meets the budget" in proc.stdout and "closest" in proc.stdout
    assert (out / "report.html").is_file()
    assert_one_line_error(run("export", str(out), "--out", str(tmp_path / "b")), "none is recommended")


def test_a_run_made_with_a_relative_out_resumes_and_exports_from_anywhere_even_moved(tmp_path, tiny_bert,
                                                                                     topics_csv):
    args = ["optimize", "--model", str(tiny_bert), "--data", str(topics_csv), "--threads", "1", "--only", "ort-fp32",
            "--latency-samples", "10"]
    made = subprocess.run([sys.executable, "-c", "from slimformer.cli import main; main()", *args, "--out", "run"],
                          cwd=tmp_path, capture_output=True, text=True)  # `--out run`, relative to tmp_path
    assert made.returncode == 0, made.stderr
    before = {v["name"]: v for v in _measured(tmp_path / "run" / "results.json")}
    # from another directory (pytest's): nothing is measured again, and the recommended variant exports
    resumed = run(*args, "--out", str(tmp_path / "run"), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    after = {v["name"]: v for v in _measured(tmp_path / "run" / "results.json")}
    assert set(after) == set(before) and all(after[n]["latency_ms"] == v["latency_ms"] for n, v in before.items())
    assert run("export", str(tmp_path / "run"), "--out", str(tmp_path / "b1")).returncode == 0
    shutil.move(tmp_path / "run", tmp_path / "moved")  # a run directory copied elsewhere still exports
    proc = run("export", str(tmp_path / "moved"), "--variant", "teacher-ort-fp32-t1", "--out", str(tmp_path / "b2"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "b2" / "model.onnx").is_file()


def _measured(results: Path) -> list[dict]:
    try:
        return json.loads(results.read_text())["variants"]
    except (OSError, ValueError, KeyError):
        return []


def test_resume_after_kill(tmp_path, tiny_bert, tiny_distilbert, topics_csv):
    out = tmp_path / "run"
    args = ("optimize", "--model", str(tiny_bert), "--data", str(topics_csv), "--out", str(out), "--threads", "1,2",
            "--only", "ort-fp32,ort-int8-dynamic", "--latency-samples", "10")
    proc = subprocess.Popen([sys.executable, "-c", "from slimformer.cli import main; main()", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    deadline = time.time() + 300
    while len(_measured(out / "results.json")) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _measured(out / "results.json")
    assert 2 <= len(before) < 6, "the run should have been killed part-way"
    assert not (out / "report.html").exists()
    assert_one_line_error(run(*args), "exists already", "--resume")
    other = [a if a != str(tiny_bert) else str(tiny_distilbert) for a in args]
    assert_one_line_error(run(*other, "--resume"), "run of another model")
    other_data = write_csv(tmp_path / "other.csv", keyword_rows(300, seed=7))
    assert_one_line_error(run(*[a if a != str(topics_csv) else str(other_data) for a in args], "--resume"),
                          "run of another dataset")
    finished = run(*args, "--resume")
    assert finished.returncode == 0, finished.stderr
    after = {v["name"]: v for v in _measured(out / "results.json")}
    assert len(after) == 6
    for v in before:  # measured before the kill: kept as they were, not measured again
        assert after[v["name"]]["latency_ms"] == v["latency_ms"] and after[v["name"]]["seconds"] == v["seconds"]
    assert (out / "report.html").is_file()


def test_resume_after_an_upgrade_rebuilds_and_measures_again_what_a_new_recipe_changed(tmp_path, tiny_bert,
                                                                                         topics_csv, monkeypatch):
    from dataclasses import replace

    from slimformer import recipes

    out, settings, real = tmp_path / "run", OptimizeSettings(threads=(1,), only=("ort-fp32",), bench=QUICK), \
        recipes.candidates
    monkeypatch.setattr(recipes, "candidates", lambda *a, **k: [  # what an earlier slimformer built: the export alone
        replace(c, recipe="onnx") if c.name == "ort-fp32" else c for c in real(*a, **k)])
    optimize(str(tiny_bert), DataSpec(str(topics_csv)), out, settings)
    before = {v["name"]: v for v in _measured(out / "results.json")}
    def steps() -> list[str]:
        return [s["technique"] for s in json.loads((out / "variants" / "teacher-ort-fp32" / "manifest.json")
                                                   .read_text())["steps"]]

    assert steps() == ["onnx"]
    monkeypatch.setattr(recipes, "candidates", real)
    optimize(str(tiny_bert), DataSpec(str(topics_csv)), out, settings, resume=True)
    after = {v["name"]: v for v in _measured(out / "results.json")}
    assert steps() == ["onnx", "cls-only"]  # rebuilt with today's recipe, and measured again
    key = json.loads((out / "variants" / "teacher-ort-fp32" / "manifest.json").read_text())["key"]
    assert before["teacher-ort-fp32-t1"]["artifact"] != key == after["teacher-ort-fp32-t1"]["artifact"]
    assert after["teacher-ort-fp32-t1"]["latency_ms"] != before["teacher-ort-fp32-t1"]["latency_ms"]
    # the PyTorch baseline did not change: kept as measured
    assert after["teacher-torch-fp32-t1"]["latency_ms"] == before["teacher-torch-fp32-t1"]["latency_ms"]


def test_unwritable_output(tmp_path, tiny_bert, topics_csv):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_one_line_error(run("optimize", "--model", str(tiny_bert), "--data", str(topics_csv), "--out",
                              str(blocker / "run")), "cannot write to")


@needs_small_disk
@pytest.mark.parametrize("disk_kb", (350, 900))  # too small for: the first artifact; the report at the end
def test_disk_full_stops_with_one_line_and_resume_finishes(tmp_path, tiny_bert, topics_csv, disk_kb):
    run = run_on_small_disk(tmp_path, disk_kb, ["optimize", "--model", str(tiny_bert), "--data", str(topics_csv),
                                                "--out", "DISK/run", "--threads", "1", "--only",
                                                "ort-fp32,ort-int8-dynamic", "--latency-samples", "10"],
                            again=("--resume",), keep=("run/results.json",))
    full, grown = run["full"], run["grown"]
    assert_disk_full_error(full)
    assert "--resume" in full.err
    assert grown.rc == 0, grown.err
    assert full.finished <= grown.finished  # nothing finished was lost
    after = {v["name"]: v for v in json.loads(grown.files["run/results.json"])["variants"]}
    assert len(after) == 3  # the FP32 PyTorch baseline, ORT FP32 and ORT INT8, at 1 thread
    before = full.files["run/results.json"]
    for v in json.loads(before)["variants"] if before else []:  # measured before the disk filled: taken over
        assert after[v["name"]]["latency_ms"] == v["latency_ms"]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(not CHROMIUM, reason="chromium not installed (make test installs Debian's chromium)")
def test_report_renders_in_headless_chromium(tmp_path, tiny_bert, topics_csv):
    out = tmp_path / "run"
    optimize(str(tiny_bert), DataSpec(str(topics_csv)), out,
             OptimizeSettings(threads=(1,), only=("ort-fp32",), bench=QUICK))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             f"--user-data-dir={tmp_path / 'profile'}"]
    url = (out / "report.html").resolve().as_uri()
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert 'id="chart-quality-latency"' in dom and "<svg" in dom and "Pareto front" in dom
    assert dom.count("<tr") == 1 + 2  # header + the two variants
    assert "teacher-ort-fp32-t1" in dom and "Recommended:" in dom
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1200,1600", url], capture_output=True,
                   timeout=120)
    from PIL import Image

    image = Image.open(shot).convert("L")
    assert image.size == (1200, 1600) and len(set(image.getdata())) > 20  # drawn, not a blank page


def test_fallback_only_where_quantization_lost_the_accuracy():
    from slimformer.optimize import needs_fallback

    miss = {"what": "accuracy", "kind": "quality", "value": 2.0, "limit": 1.0, "unit": "points"}
    slow = {"what": "latency", "kind": "latency", "value": 2.0, "limit": 1.0, "unit": "ms"}
    fp32_ok = {"within": True, "misses": []}
    fp32_bad = {"within": False, "misses": [miss]}  # e.g. a student already 2 points below the teacher
    assert needs_fallback({"within": False, "misses": [miss]}, fp32_ok)
    assert not needs_fallback({"within": False, "misses": [miss]}, fp32_bad)
    assert not needs_fallback({"within": False, "misses": [miss, slow]}, fp32_ok)  # float would be slower still
    assert not needs_fallback({"within": True, "misses": []}, fp32_ok)


def test_students_from_several_seeds_the_best_on_the_selection_slice_kept_and_every_seed_recorded(tmp_path, tiny_bert,
                                                                                                topics_csv):
    from slimformer.data import load_dataset, with_selection
    from slimformer.distill import DistillConfig
    from slimformer.optimize import _distill_seeds
    from slimformer.optimize.report import _distill_lines
    from slimformer.training import TrainConfig

    unlabelled = tmp_path / "unlabelled.txt"
    unlabelled.write_text("\n".join(f"some unlabelled text {i}" for i in range(30)))
    quick = DistillConfig(augment=0, unlabelled=str(unlabelled), unlabelled_limit=20, select_fraction=0.2,
                          train=TrainConfig(epochs=1, lr=3e-3, batch_size=32, max_length=16))
    settings = OptimizeSettings(distill=True, distill_seeds=2, student_layers=1, distill_config=quick)
    students = _distill_seeds(str(tiny_bert), DataSpec(str(topics_csv)), tmp_path, settings)
    assert [s["seed"] for s in students["seeds"]] == [42, 43]
    sliced = with_selection(load_dataset(str(topics_csv)), 0.2, seed=42)
    for s in students["seeds"]:
        manifest = json.loads((Path(s["model"]) / "manifest.json").read_text())
        assert manifest["recipe"]["config"]["train"]["seed"] == s["seed"]  # each trained from its own seed
        # one slice for every seed, held out of training; the unlabelled texts, capped, passed on to every seed
        assert manifest["train_samples"] == len(sliced["train"]) + 20
        assert manifest["metrics"]["selection"]["n"] == len(sliced["selection"])
        assert s["chosen_on"] == "selection"
        assert s["choosing_accuracy"] == manifest["metrics"]["selection"]["accuracy"]
        assert s["validation_accuracy"] == manifest["metrics"]["validation"]["accuracy"]  # recorded, not used
        assert s["test_accuracy"] == manifest["metrics"]["test"]["accuracy"]  # recorded, never used to choose
    best = max(students["seeds"], key=lambda s: s["choosing_accuracy"])
    assert students["chosen_seed"] == best["seed"] and students["model"] == best["model"]
    [line] = _distill_lines({"distill": students})
    assert "selection slice" in line and f"Kept seed {best['seed']}, the best on a selection slice" in line


def test_a_missing_library_stops_optimize_before_anything_runs(tmp_path, tiny_bert, topics_csv, monkeypatch):
    import importlib.util

    from slimformer.errors import MissingLibraryError

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else
                        find_spec(name, *a))
    with pytest.raises(MissingLibraryError, match=r"matplotlib is not installed.*slimformer\[optimize\]"):
        optimize(str(tiny_bert), DataSpec(str(topics_csv)), tmp_path / "run", OptimizeSettings(threads=(1,)))
    assert not (tmp_path / "run").exists()


def test_a_token_limit_that_truncates_is_reported_and_a_longer_one_measured(tmp_path, tiny_bert, topics_csv, capsys):
    from dataclasses import replace

    settings = OptimizeSettings(threads=(1,), only=("torch-fp32",), bench=replace(QUICK, max_length=8))
    selection = optimize(str(tiny_bert), DataSpec(str(topics_csv)), tmp_path / "run", settings)
    assert "of the validation texts are longer than 8 tokens and get truncated" in capsys.readouterr().err
    [longer] = [r for r in selection["rows"] if "-len" in r["name"]]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    entry = next(v for v in results["variants"] if v["name"] == longer["name"])
    assert entry["options"]["max_length"] > 8 and entry["predictor"]["max_length"] == entry["options"]["max_length"]
    assert next(v for v in results["variants"] if v["name"] == "teacher-torch-fp32-t1")["predictor"]["max_length"] == 8
    assert longer["baseline"] == "teacher-torch-fp32-t1"  # its accuracy change and its cost are against the limit


def test_a_run_with_compression_levers_resumes(tmp_path):
    """The recipe holds tuples (the levers); run.json reads them back as lists: --resume must still match."""
    from slimformer.errors import OutputError
    from slimformer.optimize import _prepare

    recipe = {"model_key": "m", "dataset_fingerprint": "d", "threads": [1], "max_length": None,
              "distill": {"enabled": True, "compress": {"levers": ("qat",)}}}
    _prepare(tmp_path / "run", recipe, resume=False)
    _prepare(tmp_path / "run", recipe, resume=True)  # the same settings: resumes
    other = {**recipe, "distill": {"enabled": True, "compress": {"levers": ("prune",)}}}
    with pytest.raises(OutputError, match="another distillation settings"):
        _prepare(tmp_path / "run", other, resume=True)
