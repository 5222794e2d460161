"""Shared fixtures: tiny classifiers built from configs (no hub) and small learnable datasets."""

from __future__ import annotations

import csv
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

TOPICS = {
    "sport": ["match", "goal", "team", "coach", "league", "score", "player", "season"],
    "food": ["pasta", "recipe", "bake", "flavor", "kitchen", "spicy", "dinner", "sauce"],
    "tech": ["laptop", "software", "chip", "server", "code", "battery", "network", "app"],
}
FILLER = ["the", "a", "new", "about", "this", "was", "great", "really", "very", "today", "my", "and"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MPNET_SPECIAL = ["<s>", "<pad>", "</s>", "[UNK]", "<mask>"]  # MPNetTokenizer's; <pad> is id 1, MPNet's pad_token_id


def keyword_rows(n: int = 240, seed: int = 0) -> list[dict]:
    """Texts whose label is given by topic words: a tiny model can learn it in a few epochs."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = list(TOPICS)[i % len(TOPICS)]
        words = rng.sample(TOPICS[label], 3) + rng.sample(FILLER, 4)
        rng.shuffle(words)
        rows.append({"text": " ".join(words) + f" {i}", "label": label})
    return rows


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def make_tiny_classifier(out: Path, labels: list[str], arch: str = "bert", seed: int = 0, hidden: int = 32,
                          layers: int = 2) -> Path:
    """A randomly initialised (default 2-layer) classifier with a word-level vocabulary, saved as an HF checkpoint.

    arch: bert, distilbert or mpnet (MPNet's own special tokens and tokenizer, relative attention buckets)."""
    import torch
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        BertTokenizer,
        DistilBertConfig,
        DistilBertForSequenceClassification,
        MPNetConfig,
        MPNetForSequenceClassification,
        MPNetTokenizer,
    )

    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    words = sorted({w for ws in TOPICS.values() for w in ws} | set(FILLER)) + [str(i) for i in range(400)]
    vocab = (MPNET_SPECIAL if arch == "mpnet" else SPECIAL) + words
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = (MPNetTokenizer if arch == "mpnet" else BertTokenizer)(vocab=str(out / "vocab.txt"), do_lower_case=True)
    common = {"vocab_size": len(vocab), "num_labels": len(labels), "id2label": dict(enumerate(labels)),
              "label2id": {lab: i for i, lab in enumerate(labels)}, "max_position_embeddings": 128}
    if arch in ("bert", "mpnet"):
        config_class, model_class = ((MPNetConfig, MPNetForSequenceClassification) if arch == "mpnet" else
                                     (BertConfig, BertForSequenceClassification))
        config = config_class(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                              intermediate_size=2 * hidden, **common)
        model = model_class(config)
    else:
        config = DistilBertConfig(dim=hidden, n_layers=layers, n_heads=2, hidden_dim=2 * hidden, **common)
        model = DistilBertForSequenceClassification(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def make_tiny_encoder(out: Path, seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    """A randomly initialised BertModel (no head) laid out as a sentence-transformers model: mean pooling and
    normalisation from its own modules.json and 1_Pooling/config.json, so it loads as an embedding model."""
    import json

    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    vocab = SPECIAL + sorted({w for ws in TOPICS.values() for w in ws} | set(FILLER)) + [str(i) for i in range(400)]
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(vocab=str(out / "vocab.txt"), do_lower_case=True).save_pretrained(out)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                         intermediate_size=2 * hidden, max_position_embeddings=128)).save_pretrained(out)
    (out / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": hidden,
                                                               "pooling_mode_mean_tokens": True}))
    return out


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    return make_tiny_encoder(tmp_path_factory.mktemp("models") / "tiny-encoder")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch, request):
    """Unit tests get an empty cache; tests marked e2e use the real one (wheels downloaded once)."""
    if "e2e" not in request.keywords:
        monkeypatch.setenv("SLIMFORMER_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def keyword_csv(tmp_path_factory) -> Path:
    return write_csv(tmp_path_factory.mktemp("data") / "topics.csv", keyword_rows())


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return make_tiny_classifier(tmp_path_factory.mktemp("models") / "tiny-bert", sorted(TOPICS))


@pytest.fixture(scope="module")
def teacher4(tmp_path_factory) -> Path:
    """A 4-layer tiny BERT teacher on the keyword topics (distillation and compression tests)."""
    return make_tiny_classifier(tmp_path_factory.mktemp("models") / "teacher4", sorted(TOPICS), layers=4, seed=3)


@pytest.fixture(scope="session")
def tiny_distilbert(tmp_path_factory) -> Path:
    return make_tiny_classifier(tmp_path_factory.mktemp("models") / "tiny-distilbert", sorted(TOPICS),
                                arch="distilbert")


@pytest.fixture(scope="session")
def sentiment_model(tmp_path_factory) -> Path:
    """A classifier whose labels are sentiment: scoring it on topic data must be refused."""
    return make_tiny_classifier(tmp_path_factory.mktemp("models") / "tiny-sentiment", ["negative", "positive"])


def _private_tmpfs() -> bool:
    """Whether a test may mount a small tmpfs in its own user + mount namespace (no root needed)."""
    if not shutil.which("unshare"):
        return False
    with tempfile.TemporaryDirectory() as point:
        return subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {point}"],
                              capture_output=True).returncode == 0


needs_small_disk = pytest.mark.skipif(not _private_tmpfs(),
                                      reason="needs unshare -rm (user and mount namespaces) for a small tmpfs")


def run_on_small_disk(tmp_path: Path, disk_kb: int, args: list[str], again: tuple[str, ...] = (),
                      keep: tuple[str, ...] = ()) -> dict[str, SimpleNamespace]:
    """A real full disk: run the CLI with SLIMFORMER_CACHE and every DISK in `args` on a tmpfs of `disk_kb`,
    then grow the tmpfs to 256 MB and run it again (plus `again`). Per phase ("full", "grown"): rc, err, the
    finished directories (manifest.json outside temporary .partial ones) and the `keep` files as text."""
    disk, logs = tmp_path / "disk", tmp_path / "logs"
    disk.mkdir()
    logs.mkdir()
    cli = [sys.executable, "-c", "from slimformer.cli import main; main()",
           *(a.replace("DISK", str(disk)) for a in args)]
    lines = ["set -u", f"export SLIMFORMER_CACHE={disk}/cache",
             f"mount -t tmpfs -o size={disk_kb}k tmpfs {disk} || exit 99"]
    for phase, extra in (("full", ()), ("grown", again)):
        if phase == "grown":
            lines.append(f"mount -o remount,size=256m {disk}")
        lines += [f"{shlex.join([*cli, *extra])} > {logs}/{phase}.out 2> {logs}/{phase}.err",
                  f"echo $? > {logs}/{phase}.rc",
                  f"(cd {disk} && find . -name manifest.json -not -path '*.partial*' | sort) > {logs}/{phase}.finished"]
        lines += [f"cp {disk}/{k} {logs}/{phase}.{i} 2>/dev/null || true" for i, k in enumerate(keep)]
    assert subprocess.run(["unshare", "-rm", "sh", "-c", "\n".join(lines)], timeout=600).returncode == 0
    phases = {}
    for phase in ("full", "grown"):
        files = {k: (logs / f"{phase}.{i}").read_text() if (logs / f"{phase}.{i}").is_file() else None
                 for i, k in enumerate(keep)}
        phases[phase] = SimpleNamespace(rc=int((logs / f"{phase}.rc").read_text()),
                                        err=(logs / f"{phase}.err").read_text(), files=files,
                                        finished=set((logs / f"{phase}.finished").read_text().split()))
    return phases


def assert_disk_full_error(phase: SimpleNamespace) -> None:
    """Exit 2, no traceback, and the run's last line is the one error line naming the file and what to do."""
    errors = [ln for ln in phase.err.splitlines() if ln.startswith("error:")]
    assert phase.rc == 2 and "Traceback" not in phase.err and len(errors) == 1, phase.err
    assert phase.err.strip().endswith(errors[0]), phase.err
    assert "No space left on device" in errors[0] and "everything finished so far is kept" in errors[0], errors[0]
