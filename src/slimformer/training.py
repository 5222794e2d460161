"""The one training loop (fine-tuning a teacher, distilling a student) and saving a classifier checkpoint.

Both kinds of classifier go through it: one label per text (data.Dataset) and one IOB2 tag per word (a
data.TokenDataset, NER: each word's first sub-token carries its tag, the other tokens are ignored by the loss)."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .artifacts import check_max_length
from .cache import MANIFEST, atomic_dir, is_complete, read_manifest, write_json
from .data import Dataset
from .errors import ModelError, OutputError, SlimformerError, first_line
from .models import load_tokenizer, quiet_transformers, require_torch, resolve

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class TrainConfig:
    """Fine-tuning settings; recorded in the manifest so a checkpoint says how it was made."""

    epochs: int = 4
    lr: float = 1e-4
    batch_size: int = 32
    max_length: int | None = None  # tokens per text; None: the base model's (artifacts.default_max_length)
    warmup: float = 0.06
    weight_decay: float = 0.01
    seed: int = 42
    max_train_samples: int | None = None
    precision: str = "fp32"  # autocast in training: auto, fp32, bf16, fp16 (fp16 on CUDA only)


def autocast_dtype(precision: str, device: str):
    """The autocast dtype for training on `device`, or None for plain fp32.

    auto: bf16 (or fp16 where bf16 is missing) on CUDA; bf16 on CPUs with AVX512-BF16 or AMX; fp32 otherwise."""
    import torch

    from .hardware import has_isa

    if precision not in PRECISIONS:
        raise SlimformerError(f"unknown precision '{precision}' (choose from {', '.join(PRECISIONS)})")
    cpu_bf16 = has_isa("AVX512-BF16") or has_isa("AMX-BF16")
    if precision == "auto":
        if device == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_bf16 else None
    if precision == "fp16" and device != "cuda":
        raise SlimformerError("fp16 training needs a CUDA GPU; on CPU use --precision bf16 or fp32")
    if precision == "bf16" and device == "cuda" and not torch.cuda.is_bf16_supported():
        raise SlimformerError("this GPU has no bf16 (compute capability below 8.0): use --precision fp16 or auto")
    if precision == "bf16" and device == "cpu" and not cpu_bf16:
        raise SlimformerError("this CPU has neither AVX512-BF16 nor AMX: bf16 training would be emulated and slow; "
                              "use --precision fp32")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def quality_key(dataset: Dataset) -> str:
    """The validation figure that picks the best epoch: accuracy, or entity-level F1 for NER."""
    return "f1" if dataset.task == "ner" else "accuracy"


def evaluator(model, tokenizer, dataset: Dataset, max_length: int):
    """The PyTorch predictor training scores with, and its scoring of one split."""
    from .runtimes.torch import TorchPredictor
    from .tasks import get_task

    predictor = TorchPredictor(model, tokenizer, dataset.labels, max_length=max_length, threads=None,
                               task=get_task(dataset.task))
    if dataset.task == "ner":  # sentences of similar length batched together: less padding, the same scores
        return lambda split: predictor.evaluate(split.by_length())
    return predictor.evaluate


def _describe(key: str, value: float) -> str:
    return f"entity F1 {100 * value:.2f}" if key == "f1" else f"accuracy {100 * value:.2f}%"


LossFn = Callable[[Any, dict, np.ndarray], Any]  # (model, tokenized batch with labels, text indices) -> loss
EpochHook = Callable[[int, dict], None]  # (epoch, history record) -> None; may raise to stop (e.g. pruning)


def length_grouped(order: np.ndarray, lengths: list[int], batch_size: int, rng, group: int = 50) -> np.ndarray:
    """`order` regrouped so each batch holds texts of similar length (`lengths`, in `order`'s order): sorted by
    length within windows of `group` batches, the full batches then shuffled (a short one stays last). Padding
    falls ~2x on CoNLL sentences; each window is still a random sample."""
    lengths = np.asarray(lengths)
    window = batch_size * group
    batches = []
    for start in range(0, len(order), window):
        part = order[start:start + window][np.argsort(lengths[start:start + window], kind="stable")]
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    full = [b for b in batches if len(b) == batch_size]
    rest = [b for b in batches if len(b) < batch_size]  # at most one: last, so the loop's slices stay batches
    return np.concatenate([full[i] for i in rng.permutation(len(full))] + rest) if batches else order


def fit(model, tokenizer, dataset: Dataset, config: TrainConfig, title: str, loss_fn: LossFn | None = None,
        on_epoch: EpochHook | None = None) -> dict:
    """Train `model` in place on the train split; keep the epoch with the best accuracy (entity F1 for a
    token-classification dataset) on the split that chooses (choosing_split: validation, unless the dataset has a
    `selection` slice of its training texts). The history's `val_*` figures are on that split.

    `loss_fn` defaults to the model's own cross-entropy. Returns history, best epoch, seconds, precision."""
    import torch

    from .encoding import align_labels
    from .progress import log_line, progress_bar

    if config.max_length is None:
        raise ValueError("fit needs config.max_length settled: artifacts.check_max_length(model_path, None)")

    torch.manual_seed(config.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = autocast_dtype(config.precision, device)
    model.to(device)
    scaler = torch.amp.GradScaler(device) if dtype == torch.float16 else None
    loss_fn = loss_fn or (lambda m, batch, idx: m(**batch).loss)
    train = dataset["train"].head(config.max_train_samples)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total = steps_per_epoch * config.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    warmup = max(1, int(config.warmup * total))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup))))
    score = evaluator(model, tokenizer, dataset, config.max_length)
    key = quality_key(dataset)
    choosing, where = choosing_split(dataset)
    words = getattr(train, "words", None)
    if words is not None:
        from .encoding import TextEncoder

        encoder = TextEncoder.from_transformers(tokenizer, config.max_length)

    def make_batch(idx: np.ndarray) -> dict:
        if words is None:
            batch = tokenizer([train.texts[i] for i in idx], padding=True, truncation=True,
                              max_length=config.max_length, return_tensors="pt")
            batch["labels"] = torch.from_numpy(train.labels[idx])
            return batch.to(device)
        encoded, word_ids = encoder.encode_words([words[i] for i in idx])
        encoded["labels"] = align_labels(word_ids, [train.tags[i] for i in idx])
        return {k: torch.from_numpy(v).to(device) for k, v in encoded.items()}

    rng = np.random.default_rng(config.seed)
    history, best, best_state = [], -1.0, None
    started = time.perf_counter()
    with progress_bar(title, total) as update:
        for epoch in range(1, config.epochs + 1):
            model.train()
            losses = []
            order = rng.permutation(len(train))
            if words is not None:  # NER: batches of sentences of similar length (less padding), in random order
                order = length_grouped(order, [len(words[i]) for i in order], config.batch_size, rng)
            for step in range(steps_per_epoch):
                idx = order[step * config.batch_size:(step + 1) * config.batch_size]
                batch = make_batch(idx)
                with torch.autocast(device, dtype=dtype) if dtype else nullcontext():
                    loss = loss_fn(model, batch, idx)
                (scaler.scale(loss) if scaler else loss).backward()
                if scaler:
                    scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                scaler.step(optimizer) if scaler else optimizer.step()
                if scaler:
                    scaler.update()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(loss.item())
                update(status=f"epoch {epoch}/{config.epochs} loss {np.mean(losses[-20:]):.3f}")
            model.eval()
            val = score(choosing)
            record = {"epoch": epoch, "train_loss": float(np.mean(losses)),
                      **{f"val_{k}": v for k, v in val.items() if k != "n" and not isinstance(v, dict)}}
            history.append(record)
            if val[key] > best:
                best = val[key]
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            log_line(f"{title}: epoch {epoch}/{config.epochs}, loss {record['train_loss']:.4f}, {where} "
                     f"{_describe(key, val[key])} ({time.perf_counter() - started:.0f} s)")
            if on_epoch:
                on_epoch(epoch, record)
    model.load_state_dict(best_state)
    model.eval()
    return {"history": history, "best_epoch": max(history, key=lambda h: h[f"val_{key}"])["epoch"],
            "train_seconds": round(time.perf_counter() - started, 1), "train_samples": len(train),
            "precision": str(dtype).removeprefix("torch.") if dtype else "float32"}


def choosing_split(dataset: Dataset):
    """(the split training chooses on, its name): the `selection` slice of the training texts where the dataset
    has one (data.with_selection), else validation."""
    return (dataset["selection"], "selection") if "selection" in dataset.splits else \
        (dataset["validation"], "validation")


def evaluate_splits(model, tokenizer, dataset: Dataset, max_length: int) -> dict:
    score = evaluator(model, tokenizer, dataset, max_length)
    return {name: score(dataset[name]) for name in ("selection", "validation", "test") if name in dataset.splits}


def check_output(out: Path, recipe: dict, overwrite: bool) -> dict | None:
    """The manifest of a finished identical model at `out` (to reuse), None to build; refuse to clobber."""
    if is_complete(out) and not overwrite:
        previous = read_manifest(out)
        if previous.get("recipe") == recipe:
            return previous | {"reused": True}
        raise OutputError(f"{out} holds a model made differently; choose another --out or pass --overwrite")
    if out.exists() and not overwrite and any(out.iterdir()):
        raise OutputError(f"{out} exists and is not a finished slimformer model; choose another --out or "
                          "pass --overwrite")
    return None


def save_classifier(model, tokenizer, out: Path, manifest: dict) -> None:
    """Write a safetensors checkpoint, its tokenizer and manifest; `out` appears only when complete."""
    with atomic_dir(out, overwrite=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / MANIFEST, manifest)
    os.utime(out)


def train_classifier(base: str, dataset: Dataset, out: Path, config: TrainConfig = TrainConfig(),
                     overwrite: bool = False) -> dict:
    """Fine-tune `base` on `dataset`'s train split, keep the best epoch on validation, save to `out`: a sequence
    classifier, or a token classifier (task "ner") for a data.TokenDataset.

    Returns the manifest. An existing complete `out` made from the same base, data and config is reused.
    `config.max_length` None: the base model's (its configured maximum, capped at 512); the manifest records it.
    """
    require_torch()
    import torch
    import transformers

    from .tasks import get_task

    out = Path(out)
    base_path = resolve(base)
    config = replace(config, max_length=check_max_length(base_path, config.max_length))
    recipe = {"base": base, "dataset": dataset.name, "dataset_fingerprint": dataset.fingerprint,
              "config": asdict(config)}
    previous = check_output(out, recipe, overwrite)
    if previous:
        return previous
    quiet_transformers()
    torch.manual_seed(config.seed)  # the new classification head's initialisation
    labels = dataset.labels
    task = get_task(dataset.task)
    try:
        model = getattr(transformers, task.auto_class).from_pretrained(
            base_path, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={lab: i for i, lab in enumerate(labels)})
    except Exception as e:
        raise ModelError(f"cannot load {base} as a base encoder: {first_line(e)}") from None
    tokenizer = load_tokenizer(base_path)
    trained = fit(model, tokenizer, dataset, config, f"training {Path(base).name} on {dataset.name}")
    kind = "hf-token-classifier" if task.per_token else "hf-classifier"
    manifest = {"kind": kind, "task": task.name, "created_by": "slimformer train", "recipe": recipe, "labels": labels,
                "max_length": config.max_length, **trained,
                "metrics": evaluate_splits(model, tokenizer, dataset, config.max_length)}
    save_classifier(model, tokenizer, out, manifest)
    return manifest
