"""Token classification (NER): readers, word-piece alignment, entity metrics, train --task ner, ONNX per-token output.

A tiny word-level BERT whose vocabulary splits some words into word pieces, and a tiny CoNLL corpus built here,
whose tags follow from the words (a name is PER, a city LOC, a company ORG)."""

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FILLER

from slimformer.data import TokenDataset, load_dataset
from slimformer.encoding import IGNORE_INDEX, TextEncoder, align_labels, split_words
from slimformer.errors import DataError
from slimformer.ner import WordAnswers, answer_words, entities, entity_metrics, entity_spans
from slimformer.tasks.scoring import scoring_for

FIRST = ["anna", "boris", "carla", "dmitri"]
LAST = ["smith", "jones"]
CITIES = ["paris", "berlin", "oslo", "lima"]
COMPANIES = ["acme", "globex"]
PIECES = ["play", "##ing", "##er", "walk", "##ed"]  # "playing" -> play ##ing: a word of two tokens
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tiny_sentences(n: int, seed: int) -> list[tuple[list[str], list[str]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        units = [[(w, "O")] for w in rng.sample(FILLER + ["playing", "walked", "player"], 4)]
        units.append([(rng.choice(FIRST).title(), "B-PER")] + ([(rng.choice(LAST).title(), "I-PER")]
                                                               if rng.random() < .5 else []))
        units += [[(rng.choice(CITIES).title(), "B-LOC")], [(rng.choice(COMPANIES), "B-ORG")]]
        rng.shuffle(units)
        out.append(([w for u in units for w, _ in u], [t for u in units for _, t in u]))
    return out


def write_conll(path: Path, sentences) -> Path:
    lines = ["-DOCSTART- -X- -X- O", ""]
    for words, tags in sentences:
        lines += [f"{w} NN B-NP {t}" for w, t in zip(words, tags, strict=True)] + [""]
    path.write_text("\n".join(lines))
    return path


@pytest.fixture(scope="module")
def conll_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("conll")
    for split, n, seed in (("train", 160, 0), ("valid", 30, 1), ("test", 30, 2)):
        write_conll(root / f"{split}.txt", tiny_sentences(n, seed))
    return root


def make_tiny_tagger(out: Path, labels: list[str], seed: int = 0) -> Path:
    """A randomly initialised 2-layer BERT token classifier with a word-piece vocabulary, saved as a checkpoint."""
    import torch
    from transformers import BertConfig, BertForTokenClassification, BertTokenizer

    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    vocab = SPECIAL + sorted(set(FILLER + FIRST + LAST + CITIES + COMPANIES)) + PIECES
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n")
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=len(labels),
                        id2label=dict(enumerate(labels)), label2id={lab: i for i, lab in enumerate(labels)})
    BertForTokenClassification(config).save_pretrained(out)
    BertTokenizer(vocab=str(out / "vocab.txt"), do_lower_case=True).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_tagger(tmp_path_factory, conll_dir) -> Path:
    labels = load_dataset(str(conll_dir), task="ner").labels
    return make_tiny_tagger(tmp_path_factory.mktemp("models") / "tagger", labels)


def run(*args):
    return subprocess.run([sys.executable, "-c", "from slimformer.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=600)


# --- data -----------------------------------------------------------------------------------------------------


def test_conll_directory_keeps_its_splits_and_iob2_labels(conll_dir):
    ds = load_dataset(str(conll_dir))  # a directory of CoNLL files is NER data by itself
    assert isinstance(ds, TokenDataset) and ds.task == "ner"
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 160, "validation": 30, "test": 30}
    assert ds.labels == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    first = tiny_sentences(1, 0)[0]
    assert ds["train"].words[0] == first[0]
    assert [ds.labels[i] for i in ds["train"].tags[0]] == first[1]
    assert ds["train"].texts[0] == " ".join(first[0])  # what is timed and served
    assert "iob" not in ds.source


def test_iob1_is_rewritten_and_jsonl_split_field(tmp_path):
    rows = [{"tokens": ["Anna", "Smith", "in", "Paris"], "tags": ["I-PER", "I-PER", "O", "I-LOC"], "split": s}
            for s in ("train", "train", "dev", "test")]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    ds = load_dataset(str(path), split_column="split", task="ner")
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 2, "validation": 1, "test": 1}
    assert [ds.labels[i] for i in ds["test"].tags[0]] == ["B-PER", "I-PER", "O", "B-LOC"]
    assert "8 tags rewritten from IOB1" in ds.source["iob"]
    assert load_dataset(str(path), split_column="split").task == "ner"  # JSONL of tokens and tags is NER data
    for split in ("train", "test"):  # one JSONL file per split in a directory, detected as NER data too
        (tmp_path / "d").mkdir(exist_ok=True)
        (tmp_path / "d" / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    carved = load_dataset(str(tmp_path / "d"))
    assert carved.task == "ner" and len(carved["test"]) == 4 and "carved from train" in carved.source["validation"]


@pytest.mark.parametrize("name, text, message", [
    ("a.conll", "EU B-ORG\nrejects\n", r"a.conll:2: expected a token and its tag"),
    ("b.conll", "EU B-ORG\n\nGerman X-MISC\n", r"b.conll:3: tag 'X-MISC' is not IOB2"),
    ("c.jsonl", '{"tokens": ["a"], "tags": ["O"]}\n{"tokens": ["a", "b"], "tags": ["O"]}\n',
     r"c.jsonl:2: 2 tokens but 1 tags"),
    ("d.jsonl", '{"tokens": ["a"], "tags": ["O"]}\n\n{"tokens": [\n', r"d.jsonl:3: not valid JSON"),
    ("e.jsonl", '{"words": ["a"], "tags": ["O"]}\n', r"e.jsonl:1: no field 'tokens'"),
])
def test_malformed_files_name_the_line(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(DataError, match=message):
        load_dataset(str(tmp_path / name), task="ner")


def test_classification_data_is_refused_for_ner(keyword_csv, conll_dir, tmp_path):
    proc = run("train", "--task", "ner", "--data", str(keyword_csv), "--out", str(tmp_path / "m"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    (conll_dir / "bad.conll").write_text("EU B-ORG\nrejects\n")
    proc = run("train", "--data", str(conll_dir / "bad.conll"), "--out", str(tmp_path / "m"))
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "bad.conll:2:" in lines[0], proc.stderr
    (conll_dir / "bad.conll").unlink()


# --- alignment ------------------------------------------------------------------------------------------------


def test_first_sub_token_carries_the_tag_and_cut_words_are_answered_o(tiny_tagger):
    import torch

    from slimformer.models import load_model
    from slimformer.runtimes.torch import TorchPredictor

    model, tokenizer, labels = load_model(str(tiny_tagger))
    encoder = TextEncoder.from_transformers(tokenizer, 64)
    words = [["Anna", "playing", "about", "Paris"], ["walked"]]
    encoded, word_ids = encoder.encode_words(words)
    tokens = [tokenizer.convert_ids_to_tokens(row) for row in encoded["input_ids"]]
    assert tokens[0] == ["[CLS]", "anna", "play", "##ing", "about", "paris", "[SEP]"]
    assert word_ids[0] == [None, 0, 1, 1, 2, 3, None]
    # the same ids as transformers' own pre-tokenized call
    ref = tokenizer(words, is_split_into_words=True, padding=True, truncation=True, max_length=64)
    assert encoded["input_ids"].tolist() == ref["input_ids"] and word_ids[1] == ref.word_ids(1)
    tags = [np.array([5, 0, 0, 1]), np.array([0])]
    assert align_labels(word_ids, tags).tolist() == [[IGNORE_INDEX, 5, 0, IGNORE_INDEX, 0, 1, IGNORE_INDEX],
                                                     [IGNORE_INDEX, 0, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX,
                                                      IGNORE_INDEX, IGNORE_INDEX]]
    # per-word answers are the first sub-token's logits; with max_length 4 only [CLS] anna play [SEP] remain
    predictor = TorchPredictor(model, tokenizer, labels, max_length=64, threads=1, task=load_ner_task())
    with torch.inference_mode():
        token_logits = model(**{k: torch.from_numpy(v) for k, v in encoded.items()}).logits.numpy()
    answers = predictor.answers([" ".join(w) for w in words], batch_size=2)  # the scored path: text.split()
    assert isinstance(answers, WordAnswers) and answers.cut_words() == 0
    np.testing.assert_allclose(answers.rows[0], token_logits[0, [1, 2, 4, 5]], atol=1e-5)
    short = TorchPredictor(model, tokenizer, labels, max_length=4, threads=1, task=load_ner_task())
    answers = answer_words(short, words[:1])
    assert answers.cut_words() == 2 and answers.rows[0].shape == (4, len(labels))
    assert answers.tags()[0][2:] == ["O", "O"]


def load_ner_task():
    from slimformer.tasks import NER

    return NER


def test_split_words_gives_character_spans():
    text = "EU rejects Germany's call, said U.S. envoy."
    spans = split_words(text)
    assert [w for w, _, _ in spans] == ["EU", "rejects", "Germany", "'s", "call", ",", "said", "U.S.", "envoy", "."]
    assert all(text[s:e] == w for w, s, e in spans)


# --- metrics --------------------------------------------------------------------------------------------------


def test_entity_metrics_match_a_hand_computation():
    true = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O", "I-PER"]]
    # true entities: PER(0-1), LOC(3), ORG(s2 0); predicted: PER(0-1), ORG(3), ORG(s2 0), PER(s2 2: an I- after O
    # opens an entity, as conlleval counts it). Correct: PER, ORG(s2) -> precision 2/4, recall 2/3, F1 4/7
    m = entity_metrics(true, pred)
    assert m["precision"] == pytest.approx(0.5) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(4 / 7)
    assert m["per_type"]["PER"] == pytest.approx({"f1": 2 / 3, "precision": 0.5, "recall": 1.0, "support": 1})
    assert m["per_type"]["ORG"] == pytest.approx({"f1": 2 / 3, "precision": 0.5, "recall": 1.0, "support": 1})
    assert m["per_type"]["LOC"] == {"f1": 0.0, "precision": 0.0, "recall": 0.0, "support": 1}
    assert m["word_accuracy"] == pytest.approx(5 / 7) and m["entities"] == 3 and m["n"] == 2


def test_entity_spans_follow_seqeval_default_mode():
    from seqeval.metrics.sequence_labeling import get_entities

    rng = random.Random(0)
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    for _ in range(300):
        seq = [rng.choice(tags) for _ in range(rng.randrange(1, 12))]
        assert entity_spans(seq) == get_entities(seq), seq


def test_entities_of_raw_text():
    labels = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    text = "Anna Smith flew to New York."
    words = split_words(text)
    best = [3, 4, 0, 0, 1, 2, 0]
    logits = np.full((len(words), len(labels)), -5.0, np.float32)
    logits[np.arange(len(words)), best] = 5.0
    found = entities(text, labels, logits)
    assert [(e["type"], e["text"], e["start"], e["end"]) for e in found] == [("PER", "Anna Smith", 0, 10),
                                                                             ("LOC", "New York", 19, 27)]
    assert all(0.99 < e["score"] <= 1.0 for e in found)


# --- training and export --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_tagger, conll_dir) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("trained") / "ner"
    proc = run("train", "--task", "ner", "--base", str(tiny_tagger), "--data", str(conll_dir), "--out", str(out),
               "--epochs", "4", "--lr", "5e-3", "--batch-size", "16", "--max-length", "32")
    return out, proc


def test_train_ner_learns_the_word_rule_and_exports_per_token(trained, conll_dir):
    from slimformer.artifacts import open_artifact
    from slimformer.runtimes import load_predictor
    from slimformer.techniques import BuildContext, build, parse_recipe

    out, proc = trained
    assert proc.returncode == 0, proc.stderr
    assert "entity F1 validation" in proc.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["task"] == "ner" and manifest["labels"][0] == "O"
    assert manifest["metrics"]["test"]["f1"] > 0.9, manifest["metrics"]
    assert set(manifest["metrics"]["test"]["per_type"]) == {"LOC", "ORG", "PER"}
    artifact = open_artifact(out)
    assert artifact.task.name == "ner" and artifact.labels == manifest["labels"]

    test = load_dataset(str(conll_dir))["test"]
    reference = load_predictor(out, "torch").answers(test.texts)
    # per-token output (batch, sequence, labels), checked against PyTorch per word by the build
    onnx = build(out, parse_recipe("onnx"), context=BuildContext(check_texts=test.texts[:8]))
    assert onnx.task.name == "ner" and onnx.manifest["steps"][0]["check"]["max_abs_logit_diff"] < 1e-4
    for runtime, options in (("onnxruntime", {}), ("openvino", {"precision": "f32"})):
        answers = load_predictor(onnx.path, runtime, **options).answers(test.texts, batch_size=8)
        np.testing.assert_allclose(np.concatenate(answers.rows), np.concatenate(reference.rows), atol=1e-4)
    int8 = build(out, parse_recipe("onnx,int8-static"), context=BuildContext(
        calibration_texts=load_dataset(str(conll_dir))["train"].texts, check_texts=test.texts[:8]))
    assert int8.manifest["steps"][-1]["check"]["label_flip_rate"] < 0.2  # word tags, vs FP32


def test_server_answers_entities_with_character_spans(trained, conll_dir):
    import httpx

    from slimformer.serve.process import ServerProcess
    from slimformer.techniques import BuildContext, build, parse_recipe

    out, proc = trained
    assert proc.returncode == 0, proc.stderr
    bundle = build(out, parse_recipe("onnx"), context=BuildContext()).path
    server = ServerProcess(bundle, "--workers", "1", "--threads", "1")
    try:
        server.wait_ready(60)
        text = "Anna Smith flew from Paris, said acme."
        r = httpx.post(server.url + "/v1/ner", json={"texts": [text, "about the"]}, timeout=30)
        assert r.status_code == 200, r.text
        found = r.json()["entities"]
        assert [(e["type"], e["text"], e["start"], e["end"]) for e in found[0]] == [
            ("PER", "Anna Smith", 0, 10), ("LOC", "Paris", 21, 26), ("ORG", "acme", 33, 37)]
        assert all(0 < e["score"] <= 1 for e in found[0]) and found[1] == []
        wrong = httpx.post(server.url + "/v1/classify", json={"texts": [text]}, timeout=30)
        assert wrong.status_code == 404 and "/v1/ner" in wrong.json()["detail"]
    finally:
        server.stop()


def test_bench_scores_per_word_answers_against_the_reference(trained, conll_dir, tmp_path):
    from slimformer.techniques import BuildContext, build, parse_recipe

    out, proc = trained
    assert proc.returncode == 0, proc.stderr
    int8 = build(out, parse_recipe("onnx,int8-dynamic"), context=BuildContext()).path
    proc = run("bench", "--model", str(out), "--variant", str(int8), "--data", str(conll_dir), "--threads", "1",
               "--out", str(tmp_path / "b"), "--latency-samples", "5", "--warmup", "1", "--batch-sizes", "1,2",
               "--throughput-seconds", "0.05", "--throughput-texts", "4", "--cold-start-runs", "0", "--json")
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert results["task"] == "ner"
    base, variant = results["variants"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert base["quality"]["test"]["f1"] == pytest.approx(manifest["metrics"]["test"]["f1"])  # same answers
    assert set(base["quality"]["test"]["per_class"]) == {"LOC", "ORG", "PER"}
    agreement = variant["quality"]["validation"]["agreement"]
    assert agreement["word_agreement"] > 0.9 and agreement["entity_f1_vs_reference"] > 0.9
    assert (tmp_path / "b" / "answers" / f"{variant['name']}.test.batched.npz").is_file()


# --- scoring (tasks/ner_scoring.py) -----------------------------------------------------------------------------


def _answers(tags: list[list[str]], labels: list[str], noise: float = 0.0) -> WordAnswers:
    rng = np.random.default_rng(0)
    rows = []
    for sentence in tags:
        r = rng.normal(0, noise, (len(sentence), len(labels))).astype(np.float32)
        r[np.arange(len(sentence)), [labels.index(t) for t in sentence]] += 5.0
        rows.append(r)
    return WordAnswers(rows, labels)


def test_ner_scoring_budget_metric_stored_answers_and_sign_test(tmp_path):
    labels = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    true = [["B-PER", "I-PER", "O", "B-LOC"], ["B-LOC", "O"], ["O", "O"], ["B-PER", "O", "B-LOC"]]
    ref_tags = [["B-PER", "I-PER", "O", "B-LOC"], ["B-LOC", "O"], ["O", "O"], ["B-PER", "O", "O"]]
    cand_tags = [["B-PER", "O", "O", "B-LOC"], ["B-LOC", "O"], ["O", "B-PER"], ["B-PER", "O", "O"]]
    scoring = scoring_for("ner")
    truth = [np.array([labels.index(t) for t in s]) for s in true]
    reference, candidate = _answers(ref_tags, labels), _answers(cand_tags, labels)
    # per-sentence contributions average to the split's entity F1 exactly (true 5, reference finds 4: F1 8/9)
    for answers, tags in ((reference, ref_tags), (candidate, cand_tags)):
        assert scoring.per_text(answers, truth).mean() == pytest.approx(entity_metrics(true, tags)["f1"])
    assert scoring.score(reference, truth)["f1"] == pytest.approx(8 / 9)
    path = tmp_path / "a.npz"
    scoring.save(path, candidate)
    loaded = scoring.load(path)
    assert loaded.labels == labels
    assert all(np.array_equal(a, b) for a, b in zip(loaded.rows, candidate.rows, strict=True))
    agreement = scoring.agreement(candidate, reference)
    assert agreement["word_agreement"] == pytest.approx(9 / 11)  # 2 of 11 word tags differ
    assert agreement["entity_f1_vs_reference"] == pytest.approx(2 * 3 / (5 + 4))  # PER(0-1) cut, PER(s3 1) new
    extra = scoring.compare_extra(truth, reference, candidate, None, None, {"per_class": {"PER": 1.0}},
                                  {"per_class": {"PER": 0.5}})
    assert (extra["lost"], extra["gained"]) == (2, 0)  # sentences 1 and 3 have more entity errors; none fewer
    assert extra["class_drop"] == {"PER": 50.0} and extra["class_lost_texts"] == {"PER": 1}
    invariance = scoring.invariance(reference, _answers(ref_tags, labels, noise=0.01))
    assert invariance["label_change_rate"] == 0 and invariance["flagged"]  # logits moved beyond 1e-3
    assert scoring.per_class(candidate, truth, labels) == {"LOC": pytest.approx(0.8), "PER": pytest.approx(0.4)}
