import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import keyword_rows, write_csv

from slimformer.data import Dataset, Split, check_label_space, load_dataset, stratified_split, with_selection
from slimformer.errors import DataError, LabelMismatchError


def test_split_is_seeded_stratified_and_independent_of_input_order():
    texts = [f"text {i}" for i in range(1000)]
    labels = ["a" if i % 4 else "b" for i in range(1000)]  # 750 a, 250 b
    first = stratified_split(texts, labels, seed=7)
    shuffled = np.random.default_rng(1).permutation(1000)
    again = stratified_split([texts[i] for i in shuffled], [labels[i] for i in shuffled], seed=7)
    assert first == again
    assert {s: len(first[s][0]) for s in first} == {"train": 800, "validation": 100, "test": 100}
    assert Counter(first["test"][1]) == {"a": 75, "b": 25}
    all_texts = [t for s in first.values() for t in s[0]]
    assert sorted(all_texts) == sorted(texts)  # a partition: nothing lost, nothing repeated
    assert stratified_split(texts, labels, seed=8)["test"] != first["test"]


def test_a_selection_slice_is_a_seeded_stratified_part_of_train_and_nothing_else():
    texts = [f"text {i}" for i in range(400)]
    labels = np.array([0 if i % 4 else 1 for i in range(400)])  # 300 of label 0, 100 of label 1
    held = Split(["held out"], np.array([0]))

    def dataset(order):
        return Dataset("d", ["a", "b"], {"train": Split([texts[i] for i in order], labels[order]),
                                         "validation": held, "test": held})

    sliced = with_selection(dataset(np.arange(400)), 0.1, seed=3)
    train, chosen = sliced["train"], sliced["selection"]
    assert Counter(chosen.labels.tolist()) == {0: 30, 1: 10}  # stratified
    assert sorted(train.texts + chosen.texts) == sorted(texts) and not set(train.texts) & set(chosen.texts)
    assert all(labels[int(t.split()[1])] == y for t, y in zip(chosen.texts + train.texts,
                                                              [*chosen.labels, *train.labels], strict=True))
    assert sliced["validation"] is held and sliced["test"] is held  # the held-out splits untouched
    reordered = with_selection(dataset(np.random.default_rng(0).permutation(400)), 0.1, seed=3)
    assert sorted(reordered["selection"].texts) == sorted(chosen.texts)  # the same texts, whatever the file order
    assert set(with_selection(dataset(np.arange(400)), 0.1, seed=4)["selection"].texts) != set(chosen.texts)
    for fraction, message in ((0.0, "between 0 and 1"), (1.0, "between 0 and 1"), (0.001, "nothing to choose on")):
        with pytest.raises(DataError, match=message):
            with_selection(dataset(np.arange(400)), fraction, seed=3)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_user_files_load_with_named_columns(tmp_path, fmt):
    rows = [{"sentence": r["text"], "topic": r["label"]} for r in keyword_rows(90)]
    path = tmp_path / f"d.{fmt}"
    if fmt == "csv":
        write_csv(path, rows)
    elif fmt == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in rows))
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    ds = load_dataset(str(path), text_column="sentence", label_column="topic")
    assert ds.labels == ["food", "sport", "tech"]
    assert sum(len(s) for s in ds.splits.values()) == 90
    assert ds.fingerprint == load_dataset(str(path), text_column="sentence", label_column="topic").fingerprint


def test_split_column_is_honoured_and_validation_carved_from_train(tmp_path):
    rows = [dict(r, part="test" if i < 30 else "train") for i, r in enumerate(keyword_rows(150))]
    ds = load_dataset(str(write_csv(tmp_path / "d.csv", rows)), split_column="part")
    assert len(ds["test"]) == 30
    assert len(ds["train"]) + len(ds["validation"]) == 120 and len(ds["validation"]) > 0
    assert "carved from train" in ds.source["validation"]  # and the report says so (optimize/report.py notes)
    assert set(ds["test"].texts) == {r["text"] for r in rows[:30]}


def test_duplicate_and_empty_texts_are_dropped(tmp_path):
    rows = keyword_rows(60) + keyword_rows(60) + [{"text": "  ", "label": "food"}]
    ds = load_dataset(str(write_csv(tmp_path / "d.csv", rows)))
    assert sum(len(s) for s in ds.splits.values()) == 60


def test_hf_saved_dataset_with_class_labels(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = keyword_rows(60)
    names = ["food", "sport", "tech"]
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=names)})
    split = datasets.Dataset.from_dict({"text": [r["text"] for r in rows],
                                        "label": [names.index(r["label"]) for r in rows]}, features=features)
    datasets.DatasetDict({"train": split.select(range(48)), "test": split.select(range(48, 60))}).save_to_disk(
        tmp_path / "hf")
    ds = load_dataset(str(tmp_path / "hf"))
    assert ds.labels == names
    assert len(ds["test"]) == 12 and set(ds["test"].texts) == {r["text"] for r in rows[48:]}


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing.csv", "not found"),
    (lambda p: (p / "empty.csv").write_text("") and p / "empty.csv" or p / "empty.csv", "is empty"),
    (lambda p: write_csv(p / "cols.csv", [{"sentence": "x", "label": "a"}]), "has no column 'text'"),
    (lambda p: p / "nope", "unknown dataset"),
    (lambda p: (p / "bad.jsonl").write_text("{not json") and p / "bad.jsonl", "not valid JSONL"),
])
def test_bad_data_gives_one_line_error(tmp_path, make, message):
    with pytest.raises(DataError, match=message) as info:
        load_dataset(str(make(tmp_path)))
    assert "\n" not in str(info.value)


def test_label_space_check_refuses_foreign_labels_and_maps_known_ones():
    assert check_label_space(["b", "a"], ["A", "B", "C"], "m") == [1, 0]
    assert check_label_space(["0", "1"], ["LABEL_0", "LABEL_1"], "m") == [0, 1]  # HF default names
    with pytest.raises(LabelMismatchError, match="does not know: ABBR"):
        check_label_space(["ABBR", "negative"], ["negative", "positive"], "sentiment")
