"""The dataset value types, the seeded stratified split and the label-space check."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import DataError, LabelMismatchError

SPLITS = ("train", "validation", "test")
SPLIT_ALIASES = {"train": "train", "training": "train", "validation": "validation", "valid": "validation",
                 "val": "validation", "dev": "validation", "test": "test", "testing": "test"}


@dataclass(frozen=True)
class Split:
    texts: list[str]
    labels: np.ndarray  # int64 indices into Dataset.labels

    def __len__(self) -> int:
        return len(self.texts)

    def head(self, n: int | None) -> Split:
        return self if n is None or n >= len(self) else Split(self.texts[:n], self.labels[:n])


@dataclass(frozen=True)
class Dataset:
    """Texts with one label each (classification); data.ner.TokenDataset is the per-word (NER) kind."""

    task = "classification"  # the tasks/ name of what the labels are for
    name: str
    labels: list[str]
    splits: dict[str, Split]
    source: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, split: str) -> Split:
        if split not in self.splits:
            raise DataError(f"dataset '{self.name}' has no '{split}' split (has: {', '.join(self.splits)})")
        return self.splits[split]

    @property
    def fingerprint(self) -> str:
        """Changes whenever any text, label or split assignment changes."""
        digest = hashlib.sha256("\x1f".join(self.labels).encode())
        for name in SPLITS:
            if name in self.splits:
                s = self.splits[name]
                digest.update(name.encode())
                for text, label in zip(s.texts, s.labels, strict=True):
                    digest.update(f"{label}\x1f{text}\x1e".encode())
        return digest.hexdigest()[:16]

    def relabelled(self, mapping: np.ndarray, labels: list[str]) -> Dataset:
        """This dataset with every label index re-mapped (mapping[data index] = index into `labels`)."""
        splits = {name: Split(s.texts, mapping[s.labels]) for name, s in self.splits.items()}
        return Dataset(self.name, labels, splits, self.source)

    def summary(self) -> dict:
        return {
            "name": self.name,
            "labels": self.labels,
            "sizes": {k: len(v) for k, v in self.splits.items()},
            "fingerprint": self.fingerprint,
            **({"source": self.source} if self.source else {}),
        }


def dedupe(texts: Sequence[str], labels: Sequence[str]) -> tuple[list[str], list[str]]:
    """Drop empty texts and repeated texts (the first occurrence wins)."""
    seen: dict[str, str] = {}
    for text, label in zip(texts, labels, strict=True):
        text = " ".join(str(text).split())
        if text and text not in seen:
            seen[text] = str(label)
    return list(seen), list(seen.values())


def stratified_split(
    texts: Sequence[str],
    labels: Sequence[str],
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 42,
) -> dict[str, tuple[list[str], list[str]]]:
    """Split per label with a seeded shuffle of the sorted texts: independent of input order, stable."""
    by_label: dict[str, list[str]] = {}
    for text, label in zip(texts, labels, strict=True):
        by_label.setdefault(label, []).append(text)
    rng = np.random.default_rng(seed)
    out: dict[str, tuple[list[str], list[str]]] = {s: ([], []) for s in SPLITS}
    for label in sorted(by_label):
        group = sorted(by_label[label])
        group = [group[i] for i in rng.permutation(len(group))]
        n_train = int(round(fractions[0] * len(group)))
        n_val = int(round(fractions[1] * len(group)))
        parts = {"train": group[:n_train], "validation": group[n_train:n_train + n_val],
                 "test": group[n_train + n_val:]}
        for split, items in parts.items():
            out[split][0].extend(items)
            out[split][1].extend([label] * len(items))
    # interleave labels so that any prefix of a split is a fair sample
    for split, (t, lab) in out.items():
        order = rng.permutation(len(t))
        out[split] = ([t[i] for i in order], [lab[i] for i in order])
    return out


def with_selection(dataset: Dataset, fraction: float, seed: int) -> Dataset:
    """`dataset` with a stratified `fraction` of its training texts moved into a `selection` split (the same texts
    for any input order and every caller that passes the same seed): training then chooses epochs, trials and seeds
    on it (training.choosing_split), and the validation split stays unlooked-at for the budget check."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"the selection slice must be a fraction of the training texts between 0 and 1, not {fraction}")
    train = dataset["train"]
    rng = np.random.default_rng(seed)
    chosen = np.zeros(len(train), dtype=bool)
    for label in np.unique(train.labels):
        group = sorted(np.flatnonzero(train.labels == label), key=lambda i: train.texts[i])
        take = int(round(fraction * len(group)))
        chosen[[group[j] for j in rng.permutation(len(group))[:take]]] = True
    if not chosen.any() or chosen.all():
        raise DataError(f"a selection slice of {fraction:g} of {len(train)} training texts leaves "
                        f"{'nothing to choose on' if not chosen.any() else 'nothing to train on'}")

    def part(mask: np.ndarray) -> Split:
        return Split([t for t, keep in zip(train.texts, mask, strict=True) if keep], train.labels[mask])

    return replace(dataset, splits={**dataset.splits, "train": part(~chosen), "selection": part(chosen)})


def build_dataset(
    name: str,
    splits: dict[str, tuple[list[str], list[str]]],
    labels: list[str] | None = None,
    source: dict[str, str] | None = None,
) -> Dataset:
    """Turn string-labelled splits into a Dataset; label order is sorted unless given."""
    if not any(t for t, _ in splits.values()):
        raise DataError(f"dataset '{name}' has no rows")
    names = labels or sorted({lab for _, labs in splits.values() for lab in labs})
    if len(names) < 2:
        raise DataError(f"dataset '{name}' has a single label ({names[0] if names else 'none'}); "
                        "a classifier needs at least two")
    index = {lab: i for i, lab in enumerate(names)}
    built = {
        split: Split(list(t), np.array([index[lab] for lab in labs], dtype=np.int64))
        for split, (t, labs) in splits.items()
    }
    return Dataset(name=name, labels=names, splits=built, source=source or {})


def check_label_space(data_labels: Sequence[str], model_labels: Sequence[str], model_name: str) -> list[int]:
    """Map data label indices to model label indices; refuse data whose labels the model does not know.

    Scoring a sentiment model on a topic dataset must fail here, not report 30% accuracy.
    """
    model_index: dict[str, int] = {}
    for i, lab in enumerate(model_labels):
        model_index[lab.lower()] = i
        generic = re.fullmatch(r"label_(\d+)", lab.lower())  # HF's default names match integer labels
        if generic:
            model_index.setdefault(generic.group(1), i)
    unknown = [lab for lab in data_labels if lab.lower() not in model_index]
    if unknown:
        raise LabelMismatchError(
            f"the data has labels the model {model_name} does not know: {', '.join(unknown[:6])}"
            f"{'…' if len(unknown) > 6 else ''} (model labels: {', '.join(list(model_labels)[:8])}"
            f"{'…' if len(model_labels) > 8 else ''})"
        )
    return [model_index[lab.lower()] for lab in data_labels]


def label_counts(split, labels: list[str]) -> dict[str, int]:
    """Texts per label (words per tag for a token-classification split)."""
    counts = Counter(np.concatenate(split.tags).tolist() if hasattr(split, "tags") else split.labels.tolist())
    return {labels[i]: counts.get(i, 0) for i in range(len(labels))}


def in_label_space(dataset: Dataset, model_labels: Sequence[str], model_name: str) -> Dataset:
    """`dataset` with its label indices re-mapped to a model's label list (refused if the model lacks one)."""
    mapping = np.asarray(check_label_space(dataset.labels, model_labels, model_name), dtype=np.int64)
    return dataset.relabelled(mapping, list(model_labels))
