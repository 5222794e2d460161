"""Text -> model inputs, the same for every runtime, without transformers where the model directory allows.

`load_encoder(path, max_length)` builds the tokenizer from `tokenizer.json` with the Rust `tokenizers`
library, set up from `tokenizer_config.json` / `special_tokens_map.json` (pad token and id, padding and
truncation side, model input names) the way transformers' `tokenizer(texts, padding=True, truncation=True,
max_length=...)` is: the same ids, masks and type ids (tested against transformers). Serving an ONNX or
OpenVINO model then needs neither transformers nor torch, and one short text is tokenized in ~0.025 ms
instead of ~0.06 ms through transformers' Python layer. A directory without tokenizer.json (a Python-only
tokenizer) goes through transformers as before.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ENCODING_FIELDS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
DEFAULT_INPUT_NAMES = ("input_ids", "token_type_ids", "attention_mask")  # transformers' base class
# tokenizer classes whose model_input_names differ from the base class's (transformers' own declarations)
INPUT_NAMES = {
    **dict.fromkeys(("DistilBertTokenizer", "RobertaTokenizer", "XLMRobertaTokenizer", "CamembertTokenizer",
                     "MPNetTokenizer", "AlbertTokenizer", "BigBirdTokenizer", "GPT2Tokenizer", "LlamaTokenizer",
                     "T5Tokenizer", "BartTokenizer", "LongformerTokenizer", "RemBertTokenizer"),
                    ("input_ids", "attention_mask")),
    **dict.fromkeys(("DebertaTokenizer", "DebertaV2Tokenizer"), ("input_ids", "attention_mask", "token_type_ids")),
}


def _token(value: Any) -> str | None:
    """A special token as tokenizer_config.json / special_tokens_map.json write it: a string or {"content": ...}."""
    return value.get("content") if isinstance(value, dict) else value


@dataclass
class TextEncoder:
    """Pads a batch to its longest text and truncates at `max_length`, on the tokenizer's sides.

    `backend` is a `tokenizers.Tokenizer` set up for that (or None: `tokenizer`, a transformers tokenizer without
    a Rust backend, is called instead)."""

    backend: Any
    max_length: int
    model_input_names: tuple[str, ...]
    pad_token_id: int | None = None
    pad_token_type_id: int = 0
    padding_side: str = "right"
    truncation_side: str = "right"
    tokenizer: Any = None

    def __post_init__(self) -> None:
        if self.backend is not None:
            self.backend.enable_truncation(self.max_length, strategy="longest_first", direction=self.truncation_side)
            self.backend.enable_padding(direction=self.padding_side, pad_id=self.pad_token_id,
                                        pad_type_id=self.pad_token_type_id, pad_token=self.pad_token)
        self._fields = [(name, ENCODING_FIELDS[name]) for name in self.model_input_names]

    @property
    def pad_token(self) -> str | None:
        return self.backend.id_to_token(self.pad_token_id) if self.backend is not None else None

    def __call__(self, texts: list[str]) -> dict[str, np.ndarray]:
        """int64 arrays (batch, longest text), one per model input, as transformers gives them."""
        if self.backend is None:
            return dict(self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                                       return_tensors="np"))
        texts = list(texts)
        # one text (a served request, batch-1 latency): encode() skips encode_batch's thread-pool hand-off; the ids
        # are the same. Idle, that saves under 1 us of ~23 on a TREC question; with the cores busy (a server under
        # load) the hand-off measured ~20 us of ~40 here
        encodings = [self.backend.encode(texts[0])] if len(texts) == 1 else self.backend.encode_batch(texts)
        return {name: np.array([getattr(e, attr) for e in encodings], dtype=np.int64) for name, attr in self._fields}

    def encode_words(self, sentences: list[list[str]]) -> tuple[dict[str, np.ndarray], list[list[int | None]]]:
        """Pre-tokenized sentences (a list of words each) -> the model inputs `__call__` gives, and per sentence
        the word index of every token (None for special tokens and padding). Words after the `max_length` cut
        have no token; word_positions() says which."""
        sentences = [list(words) for words in sentences]
        if self.backend is None:
            enc = self.tokenizer(sentences, is_split_into_words=True, padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="np")
            return dict(enc), [enc.word_ids(i) for i in range(len(sentences))]
        encodings = self.backend.encode_batch(sentences, is_pretokenized=True)
        encoded = {name: np.array([getattr(e, attr) for e in encodings], dtype=np.int64) for name, attr in self._fields}
        return encoded, [e.word_ids for e in encodings]

    def lengths(self, texts: list[str]) -> np.ndarray:
        """Tokens per text, special tokens included, before truncation."""
        if self.backend is None:
            return np.array([len(ids) for ids in self.tokenizer(list(texts))["input_ids"]], dtype=np.int64)
        backend = self.backend.__class__.from_str(self.backend.to_str())
        backend.no_truncation()
        backend.no_padding()
        return np.array([len(e.ids) for e in backend.encode_batch(list(texts))], dtype=np.int64)

    @classmethod
    def from_transformers(cls, tokenizer, max_length: int) -> TextEncoder:
        """From a loaded transformers tokenizer: a copy of its Rust backend where it has one and every model input
        is one the backend gives, else the tokenizer itself."""
        from tokenizers import Tokenizer

        names = tuple(tokenizer.model_input_names)
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None or tokenizer.pad_token_id is None or not set(names) <= set(ENCODING_FIELDS):
            return cls(None, max_length, names, tokenizer.pad_token_id, tokenizer.pad_token_type_id,
                       tokenizer.padding_side, tokenizer.truncation_side, tokenizer=tokenizer)
        return cls(Tokenizer.from_str(backend.to_str()), max_length, names, tokenizer.pad_token_id,
                   tokenizer.pad_token_type_id, tokenizer.padding_side, tokenizer.truncation_side)

    @classmethod
    def from_files(cls, path: str | Path, max_length: int) -> TextEncoder | None:
        """From tokenizer.json plus tokenizer_config.json and special_tokens_map.json, with tokenizers alone; None
        where the directory cannot say everything transformers would (no tokenizer.json, no pad token, inputs
        the backend does not give)."""
        path = Path(path)
        if not (path / "tokenizer.json").is_file():
            return None
        from tokenizers import Tokenizer

        config = _read(path / "tokenizer_config.json")
        special = _read(path / "special_tokens_map.json")
        names = tuple(config.get("model_input_names") or INPUT_NAMES.get(
            str(config.get("tokenizer_class", "")).removesuffix("Fast"), DEFAULT_INPUT_NAMES))
        backend = Tokenizer.from_file(str(path / "tokenizer.json"))
        pad = _token(config.get("pad_token")) or _token(special.get("pad_token"))
        pad_id = backend.token_to_id(pad) if pad else None
        if pad_id is None or not set(names) <= set(ENCODING_FIELDS):
            return None
        return cls(backend, max_length, names, pad_id, 0, config.get("padding_side", "right"),
                   config.get("truncation_side", "right"))


IGNORE_INDEX = -100  # the label of tokens a token-classification loss skips (transformers' CrossEntropy default)


def word_positions(word_ids: list[int | None], n_words: int) -> np.ndarray:
    """The token position of each word's first sub-token, -1 for a word without one (cut by truncation, or a
    word the tokenizer drops entirely)."""
    positions = np.full(n_words, -1, dtype=np.int64)
    for position, word in enumerate(word_ids):
        if word is not None and positions[word] < 0:
            positions[word] = position
    return positions


def align_labels(word_ids: list[list[int | None]], tags: list[np.ndarray]) -> np.ndarray:
    """Token labels (batch, tokens) for word tags: each word's first sub-token carries its tag, every other token
    (later sub-tokens, special tokens, padding) IGNORE_INDEX."""
    labels = np.full((len(word_ids), max((len(ids) for ids in word_ids), default=0)), IGNORE_INDEX, np.int64)
    for row, (ids, word_tags) in enumerate(zip(word_ids, tags, strict=True)):
        positions = word_positions(ids, len(word_tags))
        kept = positions >= 0
        labels[row, positions[kept]] = np.asarray(word_tags)[kept]
    return labels


# words as CoNLL-2003 (Penn Treebank style) cuts them: numbers with separators, abbreviations (U.S.), words with
# inner hyphens or ampersands, clitics ('s, n't), and every other punctuation mark on its own
WORD = re.compile(r"\d+(?:[.,:/]\d+)+|(?:\w\.){2,}|\w+(?:[-&]\w+)*(?=n't\b)|n't\b|\w+(?:[-&]\w+)*|'\w+|[^\w\s]")


def split_words(text: str) -> list[tuple[str, int, int]]:
    """Raw text -> (word, start, end) character spans, for a token-classification model that tags words."""
    return [(m.group(), m.start(), m.end()) for m in WORD.finditer(text)]


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def load_encoder(path: str | Path, max_length: int) -> TextEncoder:
    """The encoder of a model directory: tokenizers alone where it can be, else through transformers."""
    encoder = TextEncoder.from_files(path, max_length)
    if encoder is None:
        from .models import load_tokenizer

        encoder = TextEncoder.from_transformers(load_tokenizer(str(path)), max_length)
    return encoder


def truncation(tokenizer_or_predictor, texts: list[str], max_length: int) -> dict[str, Any]:
    """How many of `texts` are longer than `max_length` tokens (and get truncated), with token percentiles.

    Takes a Predictor, a TextEncoder or a transformers tokenizer."""
    encoder = getattr(tokenizer_or_predictor, "encoder", tokenizer_or_predictor)
    if not isinstance(encoder, TextEncoder):
        encoder = TextEncoder.from_transformers(encoder, max_length)
    lengths = encoder.lengths(texts) if texts else np.zeros(0, np.int64)
    truncated = int((lengths > max_length).sum())
    pct = (lambda q: int(np.percentile(lengths, q, method="higher"))) if len(lengths) else (lambda q: 0)
    return {"truncated": truncated, "n": len(lengths), "share": truncated / len(lengths) if len(lengths) else 0.0,
            "p50_tokens": pct(50), "p99_tokens": pct(99), "max_tokens": int(lengths.max()) if len(lengths) else 0}


def truncation_line(stats: dict[str, Any], max_length: int, what: str, limit: int | None = None) -> str | None:
    """The one line a command prints when texts get truncated (None when none do); `limit`: the most tokens the
    model takes."""
    if not stats["truncated"]:
        return None
    target = stats["p99_tokens"] if stats["p99_tokens"] > max_length else stats["max_tokens"]
    whole = "them all" if target >= stats["max_tokens"] else "99% of them"
    if limit and target > limit:
        whole, target = ("as many as the model takes", limit)
    advice = f"pass --max-length {target} to keep {whole} whole" if target > max_length else \
        f"the model takes at most {limit} tokens"
    return (f"{100 * stats['share']:.1f}% of the {what} are longer than {max_length} tokens and get truncated "
            f"(median {stats['p50_tokens']} tokens, p99 {stats['p99_tokens']}); {advice}")


def truncation_note(model: str | Path, texts: list[str], max_length: int | None,
                    what: str) -> tuple[str | None, int | None]:
    """(the one line a command prints when `texts` get truncated at the model's token limit, or None; a longer
    limit the model takes that keeps 99% of them whole, or None when there is none)."""
    from .artifacts import check_max_length, max_positions

    length = check_max_length(model, max_length)
    stats = truncation(load_encoder(model, length), texts, length)
    limit = max_positions(model)  # the most a --max-length may ask for
    target = stats["p99_tokens"] if stats["p99_tokens"] > length else stats["max_tokens"]
    target = min(target, limit or target)
    return truncation_line(stats, length, what, limit), (target if target > length else None)
