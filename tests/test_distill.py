"""Distillation: the loss against a hand computation, student init, a real SQLite study, resume after kill -9."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
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

from slimformer.bench.runner import DataSpec
from slimformer.distill import (
    DistillConfig,
    DistillError,
    StudentSpec,
    augment_texts,
    distill,
    distillation_loss,
    kept_layers,
    recorded,
    student_from_checkpoint,
    student_from_teacher,
    transfer_set,
    unlabelled_texts,
)
from slimformer.models import load_classifier
from slimformer.training import TrainConfig, autocast_dtype


@pytest.fixture(scope="module")
def topics_csv(tmp_path_factory) -> Path:
    return write_csv(tmp_path_factory.mktemp("data") / "topics600.csv", keyword_rows(600, seed=1))


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("alpha,temperature", [(0.3, 2.0), (0.0, 4.0), (0.7, 1.0), (1.0, 3.0)])
def test_loss_matches_hand_computation(alpha, temperature):
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(5, 4)) * 3, rng.normal(size=(5, 4)) * 3
    y = np.array([0, 3, 1, 1, 2])
    ce = -np.log(_softmax(s)[np.arange(5), y]).mean()
    p_t, p_s = _softmax(t / temperature), _softmax(s / temperature)
    kl = (p_t * (np.log(p_t) - np.log(p_s))).sum(-1).mean()
    expected = alpha * ce + (1 - alpha) * temperature ** 2 * kl
    got = distillation_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), alpha, temperature)
    assert got.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("alpha,temperature", [(0.3, 2.0), (1.0, 3.0)])
def test_unlabelled_examples_get_the_soft_term_alone(alpha, temperature):
    rng = np.random.default_rng(1)
    s, t = rng.normal(size=(6, 4)) * 3, rng.normal(size=(6, 4)) * 3
    y = np.array([0, 3, 1, 1, 2, 0])
    labelled = np.array([True, True, False, True, False, False])
    ce = -np.log(_softmax(s)[np.arange(6), y])
    p_t, p_s = _softmax(t / temperature), _softmax(s / temperature)
    kl = (p_t * (np.log(p_t) - np.log(p_s))).sum(-1)
    a = np.where(labelled, alpha, 0.0)
    expected = (a * ce + (1 - a) * temperature ** 2 * kl).mean()
    got = distillation_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), alpha, temperature,
                            torch.tensor(labelled))
    assert got.item() == pytest.approx(expected, rel=1e-5)
    every = distillation_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), alpha, temperature,
                              torch.ones(6, dtype=torch.bool))
    assert every.item() == pytest.approx(distillation_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y),
                                                           alpha, temperature).item(), rel=1e-6)


def test_augmented_copies_are_perturbed_deterministically():
    texts = [r["text"] for r in keyword_rows(60)]
    copies = augment_texts(texts, 2, "[MASK]", seed=7)
    assert len(copies) == 120 and copies == augment_texts(texts, 2, "[MASK]", seed=7)
    assert copies != augment_texts(texts, 2, "[MASK]", seed=8)
    changed = sum(c != t for c, t in zip(copies, texts * 2, strict=True))
    assert 0.3 * len(copies) < changed < len(copies)  # most texts are touched, not all, none emptied
    assert any("[MASK]" in c for c in copies) and all(c.strip() for c in copies)
    vocabulary = {w for t in texts for w in t.split()} | {"[MASK]"}
    assert all(set(c.split()) <= vocabulary for c in copies)
    assert all(len(c.split()) <= len(t.split()) for c, t in zip(copies, texts * 2, strict=True))


def test_loss_is_zero_kl_when_student_equals_teacher():
    logits = torch.randn(3, 6)
    labels = torch.tensor([0, 1, 2])
    pure_kd = distillation_loss(logits, logits, labels, alpha=0.0, temperature=2.0)
    assert pure_kd.item() == pytest.approx(0.0, abs=1e-6)


def test_kept_layers_every_kth_ending_with_the_last():
    assert kept_layers(6, 3) == [1, 3, 5]
    assert kept_layers(12, 6) == [1, 3, 5, 7, 9, 11]
    assert kept_layers(6, 2) == [2, 5]
    assert kept_layers(4, 1) == [3]
    with pytest.raises(DistillError, match="not smaller than the teacher"):
        kept_layers(6, 6)
    with pytest.raises(DistillError, match="at least 1"):
        kept_layers(6, 0)
    assert kept_layers(6, 3, "bottom") == [0, 1, 2] and kept_layers(12, 4, "bottom") == [0, 1, 2, 3]
    with pytest.raises(DistillError, match="not smaller than the teacher"):
        kept_layers(6, 6, "bottom")
    with pytest.raises(DistillError, match="unknown layer choice 'top'; choose one of: spread, bottom"):
        kept_layers(6, 3, "top")
    with pytest.raises(DistillError, match="unknown layer choice"):
        StudentSpec(layers=3, keep="top")
    # runs made before the choice existed still resume; a bottom student is recorded as one
    assert recorded(StudentSpec(layers=3)) == {"layers": 3, "checkpoint": None}
    assert recorded(StudentSpec(layers=3, keep="bottom"))["keep"] == "bottom"


@pytest.mark.parametrize("arch,keep", [("bert", "spread"), ("distilbert", "spread"), ("mpnet", "spread"),
                                       ("bert", "bottom")])
def test_student_from_teacher_copies_the_kept_layers(tmp_path, arch, keep):
    from transformers import AutoModelForSequenceClassification

    path = make_tiny_classifier(tmp_path / "t", sorted(TOPICS), arch=arch, layers=4)
    teacher, tokenizer, _ = load_classifier(str(path))
    student = student_from_teacher(teacher, 2, keep)
    stack = {"bert": "bert.encoder", "distilbert": "distilbert.transformer", "mpnet": "mpnet.encoder"}[arch]
    student_layers, teacher_layers = (m.get_submodule(stack).layer for m in (student, teacher))
    assert len(student_layers) == 2 and len(teacher_layers) == 4
    if arch == "mpnet":  # the relative position bias all of MPNet's layers share stays with the kept ones
        assert torch.equal(student.mpnet.encoder.relative_attention_bias.weight,
                           teacher.mpnet.encoder.relative_attention_bias.weight)
    for s_layer, t_index in zip(student_layers, {"spread": [1, 3], "bottom": [0, 1]}[keep], strict=True):
        for (name, p), q in zip(s_layer.named_parameters(), teacher_layers[t_index].parameters(), strict=True):
            assert torch.equal(p, q), name
    assert student.get_input_embeddings().weight.data_ptr() != teacher.get_input_embeddings().weight.data_ptr()
    student.save_pretrained(tmp_path / "s")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "s").eval()
    batch = tokenizer(["the team scored a goal"], return_tensors="pt")
    batch.pop("token_type_ids") if arch == "distilbert" else None
    with torch.no_grad():
        assert torch.allclose(reloaded(**batch).logits, student.eval()(**batch).logits, atol=1e-6)


def test_student_checkpoint_must_share_the_vocabulary(tmp_path, teacher4, tiny_bert):
    teacher, tokenizer, labels = load_classifier(str(teacher4))
    assert student_from_checkpoint(str(tiny_bert), teacher, tokenizer, labels).config.num_hidden_layers == 2
    other = make_tiny_classifier(tmp_path / "other", ["a", "b"])
    (other / "vocab.txt").write_text((other / "vocab.txt").read_text() + "extraword\n")
    (other / "tokenizer.json").unlink(missing_ok=True)
    with pytest.raises(DistillError, match="different vocabulary"):
        student_from_checkpoint(str(other), teacher, tokenizer, labels)
    deeper = make_tiny_classifier(tmp_path / "deeper", sorted(TOPICS), layers=6)
    with pytest.raises(DistillError, match="more layers"):
        student_from_checkpoint(str(deeper), teacher, tokenizer, labels)


def test_autocast_choice(monkeypatch):
    import slimformer.hardware as hw

    monkeypatch.setattr(hw, "has_isa", lambda name: False)
    assert autocast_dtype("auto", "cpu") is None and autocast_dtype("fp32", "cpu") is None
    with pytest.raises(Exception, match="neither AVX512-BF16 nor AMX"):
        autocast_dtype("bf16", "cpu")
    with pytest.raises(Exception, match="needs a CUDA GPU"):
        autocast_dtype("fp16", "cpu")
    monkeypatch.setattr(hw, "has_isa", lambda name: name == "AMX-BF16")
    assert autocast_dtype("auto", "cpu") == torch.bfloat16


def test_two_trial_study_on_sqlite(tmp_path, teacher4, topics_csv):
    from slimformer.data import load_dataset
    from slimformer.techniques import build, context_from_dataset, parse_recipe

    out = tmp_path / "kd"
    unlabelled = tmp_path / "unlabelled.txt"
    unlabelled.write_text("\n".join(r["text"] + " again" for r in keyword_rows(40, seed=9)))
    config = DistillConfig(alpha=0.5, temperature=2.0, cosine_weight=0.1, augment=1, unlabelled=str(unlabelled),
                           train=TrainConfig(epochs=2, lr=3e-3, batch_size=32, max_length=16, precision="auto"))
    summary = distill(str(teacher4), DataSpec(str(topics_csv)), out, StudentSpec(layers=2), trials=2, config=config,
                      bench=False)
    manifest = json.loads((out / "model" / "manifest.json").read_text())
    assert manifest["created_by"] == "slimformer distill" and manifest["trial"] == summary["trial"]
    assert (out / "model" / "model.safetensors").is_file() and not (out / "trials").exists()
    trials = json.loads((out / "trials.json").read_text())
    assert [t["state"] for t in trials] == ["COMPLETE", "COMPLETE"]
    assert trials[0]["params"] == {"alpha": 0.5, "temperature": 2.0, "lr": 3e-3, "epochs": 2}  # the given config
    assert len(trials[0]["history"]) == 2 and trials[1]["params"] != trials[0]["params"]
    # train texts + one copy each + the unlabelled texts (none of them in the data)
    assert manifest["train_samples"] == 2 * len(load_dataset_split(topics_csv)) + 40
    assert manifest["recipe"]["config"]["unlabelled"] == str(unlabelled)
    assert manifest["recipe"]["unlabelled_fingerprint"]
    best = json.loads((out / "best_params.json").read_text())
    assert best["validation_accuracy"] == max(t["value"] for t in trials)
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    with sqlite3.connect(out / "study.db") as db:
        assert db.execute("select count(*) from trials where state='COMPLETE'").fetchone()[0] == 2
    assert 0 <= summary["metrics"]["test"]["accuracy"] <= 1 and "test" in summary["teacher_metrics"]
    # the student is an ordinary checkpoint every technique accepts
    dataset = load_dataset(str(topics_csv))
    artifact = build(str(out / "model"), parse_recipe("onnx"), tmp_path / "onnx", context_from_dataset(dataset, 32))
    assert artifact.format == "onnx" and artifact.manifest["steps"][0]["check"]["label_flip_rate"] == 0
    # run again: nothing retrained, the same answer; this time teacher and student are benchmarked
    again = distill(str(teacher4), DataSpec(str(topics_csv)), out, StudentSpec(layers=2), trials=2, config=config,
                    bench=True)
    assert again["trial"] == summary["trial"] and again["trials"] == 2
    results = json.loads((out / "results.json").read_text())
    assert [v["name"] for v in results["variants"]] == ["teacher", "student"]
    for split in ("validation", "test"):  # the same checkpoint on the same texts as distillation's own evaluation
        assert results["variants"][1]["quality"][split]["batched"]["accuracy"] == pytest.approx(
            summary["metrics"][split]["accuracy"])


def test_a_selection_slice_chooses_the_epoch_and_validation_stays_out_of_the_choice(tmp_path, teacher4):
    from slimformer.data import load_dataset, with_selection

    labels = sorted({r["label"] for r in keyword_rows(3)})
    rows = [{**r, "split": ("validation", "test", "train", "train", "train")[i % 5]}
            for i, r in enumerate(keyword_rows(600, seed=1))]
    for r in rows:  # validation labelled wrong on purpose: a choice made on it would show
        if r["split"] == "validation":
            r["label"] = labels[(labels.index(r["label"]) + 1) % len(labels)]
    data = DataSpec(str(write_csv(tmp_path / "topics.csv", rows)), split_column="split")
    out = tmp_path / "kd"
    config = DistillConfig(augment=0, select_fraction=0.25, train=TrainConfig(epochs=3, lr=3e-3, batch_size=16,
                                                                              max_length=16, precision="fp32"))
    summary = distill(str(teacher4), data, out, StudentSpec(layers=2), config=config, bench=False)
    sliced = with_selection(load_dataset(data.source, split_column="split"), 0.25, seed=42)  # DataSpec's seed
    manifest = json.loads((out / "model" / "manifest.json").read_text())
    m, history = manifest["metrics"], manifest["history"]
    assert summary["chosen_on"] == "selection" and manifest["recipe"]["config"]["select_fraction"] == 0.25
    assert manifest["train_samples"] == len(sliced["train"])  # the slice is held out of training
    assert (m["selection"]["n"], m["validation"]["n"]) == (len(sliced["selection"]), len(sliced["validation"]))
    assert m["selection"]["accuracy"] > m["validation"]["accuracy"] + 0.5  # learned; validation is mislabelled
    # the epoch kept is the best on the slice, and the per-epoch figures (the study's too) are the slice's
    assert m["selection"]["accuracy"] == pytest.approx(max(h["val_accuracy"] for h in history))
    best = json.loads((out / "best_params.json").read_text())
    assert best["selection_accuracy"] == pytest.approx(m["selection"]["accuracy"]) and "validation_accuracy" not in best
    assert "selection" in summary["teacher_metrics"]
    assert "select_fraction" not in recorded(DistillConfig())  # runs made before the slice existed still resume


def test_unlabelled_texts_join_the_transfer_set_without_any_held_out_text(tmp_path, topics_csv):
    from slimformer.data import load_dataset
    from slimformer.data.unlabelled import held_out_free, load_unlabelled
    from slimformer.errors import DataError

    dataset = load_dataset(str(topics_csv))
    test_text, val_text = dataset["test"].texts[0], dataset["validation"].texts[0]
    fresh = [f"an unlabelled text number {i}" for i in range(30)]
    path = tmp_path / "u.txt"
    near = test_text.upper().replace(" ", "  , ")  # the same text re-cased and re-punctuated
    path.write_text("\n".join([fresh[0], "", near, f"  {fresh[1]} ", val_text, *fresh, fresh[2]]))
    texts = load_unlabelled(str(path))
    assert texts == [fresh[0], " ".join(near.split()), fresh[1], val_text, *fresh[2:]]  # stripped, deduplicated
    assert held_out_free(texts, dataset, 100, seed=1) == fresh  # the test and validation texts dropped
    some = held_out_free(texts, dataset, 10, seed=1)
    assert len(some) == 10 and set(some) < set(fresh) and some == held_out_free(texts, dataset, 10, seed=1)
    assert some != held_out_free(texts, dataset, 10, seed=2)
    (tmp_path / "u.csv").write_text("id,body\n1,first text\n2,second text\n")
    assert load_unlabelled(str(tmp_path / "u.csv"), "body") == ["first text", "second text"]
    with pytest.raises(DataError, match="no column 'text'"):
        load_unlabelled(str(tmp_path / "u.csv"))
    with pytest.raises(DataError, match="packaged: movie-questions"):
        load_unlabelled(str(tmp_path / "missing.txt"))
    (tmp_path / "held.txt").write_text(f"{test_text}\n{val_text.lower()}\n")
    with pytest.raises(DistillError, match="every text of .* is also in the labelled data"):
        unlabelled_texts(DistillConfig(unlabelled=str(tmp_path / "held.txt")), dataset)
    grown, labelled = transfer_set(dataset, 1, "[MASK]", 0, fresh)
    n = len(dataset["train"])
    assert labelled == n and len(grown["train"]) == 2 * n + 30 and grown["train"].texts[-30:] == fresh
    assert len(grown["train"].labels) == len(grown["train"].texts)


def load_dataset_split(path: Path):
    from slimformer.data import load_dataset

    return load_dataset(str(path))["train"]


def _finished(db: Path) -> list[tuple]:
    """(number, state, start) of the study's complete or pruned trials, read straight from the SQLite file."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db) as conn:
            return conn.execute("select number, state, datetime_start from trials where state in "
                                "('COMPLETE', 'PRUNED') order by number").fetchall()
    except sqlite3.OperationalError:  # tables not created yet, or locked for a moment
        return []


def test_resume_after_kill(tmp_path, teacher4, topics_csv):
    """A real `slimformer distill` process killed with SIGKILL mid-study; running it again finishes the study
    without redoing the trials that had finished."""
    out = tmp_path / "kd"
    args = ("distill", "--teacher", str(teacher4), "--data", str(topics_csv), "--out", str(out), "--student-layers",
            "2", "--trials", "4", "--epochs", "3", "--max-epochs", "4", "--lr", "3e-3", "--max-length", "16",
            "--no-bench")
    proc = subprocess.Popen([sys.executable, "-c", "from slimformer.cli import main; main()", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy())
    deadline = time.time() + 240
    while not _finished(out / "study.db") and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _finished(out / "study.db")
    assert before and len(before) < 4, "the study should have been killed part-way"
    assert not (out / "model").exists()
    finished = run(*args)
    assert finished.returncode == 0, finished.stderr
    after = _finished(out / "study.db")
    assert len(after) == 4 and after[:len(before)] == before  # finished trials kept, not redone
    assert any(state == "COMPLETE" for _, state, _ in after)
    assert json.loads((out / "model" / "manifest.json").read_text())["trial"] in [row[0] for row in after]


def test_cli_errors(tmp_path, teacher4, topics_csv, sentiment_model):
    base = ("distill", "--teacher", str(teacher4), "--data", str(topics_csv), "--no-bench")
    assert_one_line_error(run(*base, "--out", str(tmp_path / "a"), "--trials", "0"), "--trials must be at least 1")
    assert_one_line_error(run(*base, "--out", str(tmp_path / "b"), "--student-layers", "4"),
                          "not smaller than the teacher")
    assert_one_line_error(run("distill", "--teacher", str(sentiment_model), "--data", str(topics_csv), "--out",
                              str(tmp_path / "c")), "labels the model", "does not know")
    assert_one_line_error(run(*base, "--out", str(tmp_path / "d"), "--storage", "sqlite:////no/such/dir/x.db"),
                          "cannot open the study storage")
    assert_one_line_error(run(*base, "--out", str(tmp_path / "e"), "--storage", "postgresql://u@127.0.0.1:9/db"),
                          "cannot open the study storage")
    assert_one_line_error(run(*base, "--out", str(tmp_path / "f"), "--unlabelled", str(tmp_path / "no.txt")),
                          "no file", "movie-questions")
    assert_one_line_error(run("optimize", "--model", str(teacher4), "--data", str(topics_csv), "--out",
                              str(tmp_path / "g"), "--unlabelled", "movie-questions"), "add --distill")
    assert_one_line_error(run("optimize", "--model", str(teacher4), "--data", str(topics_csv), "--out",
                              str(tmp_path / "h"), "--distill", "--unlabelled", "no-such-corpus"), "no file")
    assert_one_line_error(run("optimize", "--model", str(teacher4), "--data", str(topics_csv), "--out",
                              str(tmp_path / "i"), "--selection-slice", "0.1"), "add --distill or --compress")
    assert_one_line_error(run(*base, "--out", str(tmp_path / "j"), "--selection-slice", "1"),
                          "--selection-slice", "not 1")
    assert_one_line_error(run(*base, "--out", str(tmp_path / "k"), "--student-keep", "top"),
                          "unknown layer choice 'top'", "spread, bottom")
    assert not any((tmp_path / n).exists() for n in "fghijk")  # refused before the run directory is made
    assert not any((tmp_path / n).exists() and any((tmp_path / n).iterdir()) for n in "abc")


@needs_small_disk
@pytest.mark.parametrize("disk_kb", (100, 350))  # too small for: the study's SQLite file; the student's weights
def test_disk_full_stops_with_one_line_and_a_rerun_finishes(tmp_path, teacher4, topics_csv, disk_kb):
    run = run_on_small_disk(tmp_path, disk_kb, ["distill", "--teacher", str(teacher4), "--data", str(topics_csv),
                                                "--out", "DISK/kd", "--student-layers", "1", "--epochs", "1"],
                            keep=("kd/trials.json",))
    assert_disk_full_error(run["full"])
    assert run["grown"].rc == 0, run["grown"].err
    trials = json.loads(run["grown"].files["kd/trials.json"])
    assert [t["state"] for t in trials if t["state"] != "FAIL"] == ["COMPLETE"]
    # a trial the full disk stopped runs again with the given values, not with newly sampled ones
    assert all(t["params"] == {"alpha": 0.5, "temperature": 2.0, "lr": 0.00027, "epochs": 1} for t in trials)
    assert run["full"].finished <= run["grown"].finished
