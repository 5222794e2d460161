"""The one interface every runtime meets: texts in, logits and labels out, threads fixed."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..data import Split
from ..errors import ModelError
from ..metrics import classification_metrics

DEFAULT_MAX_LENGTH = 128
ENCODING_FIELDS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}


def option_flag(value: bool | str) -> bool:
    """A runtime's on/off option, given as a bool or as the text of `--option KEY=VALUE`."""
    return value.lower() in ("1", "true", "yes") if isinstance(value, str) else bool(value)


def fast_encoder(tokenizer, max_length: int):
    """A copy of a fast tokenizer's Rust backend set to pad to the longest text and truncate at `max_length`
    as `tokenizer(texts, padding=True, truncation=True, max_length=...)` does, or None where that cannot be
    matched (slow tokenizers, no pad token, other model inputs). Calling the backend directly skips
    transformers' per-call Python work: ~0.06 -> ~0.025 ms for one short text, which is 5-10% of an INT8
    model's batch-1 latency."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    names = list(tokenizer.model_input_names)
    if backend is None or tokenizer.pad_token_id is None or not set(names) <= set(ENCODING_FIELDS):
        return None
    from tokenizers import Tokenizer

    encoder = Tokenizer.from_str(backend.to_str())
    encoder.enable_truncation(max_length, strategy="longest_first", direction=tokenizer.truncation_side)
    encoder.enable_padding(direction=tokenizer.padding_side, pad_id=tokenizer.pad_token_id,
                           pad_type_id=tokenizer.pad_token_type_id, pad_token=tokenizer.pad_token)
    return encoder, [(name, ENCODING_FIELDS[name]) for name in names]


class Predictor(ABC):
    """Tokenization is shared; a runtime implements `load` and `forward` (encoded batch -> logits)."""

    runtime: ClassVar[str]

    def __init__(self, tokenizer, labels: list[str], max_length: int = DEFAULT_MAX_LENGTH,
                 threads: int | None = 1) -> None:
        self.tokenizer = tokenizer
        self.labels = list(labels)
        self.max_length = max_length
        self.threads = threads
        self._encoder = fast_encoder(tokenizer, max_length)

    @classmethod
    @abstractmethod
    def load(cls, path: str, threads: int | None = 1, **options: Any) -> Predictor:
        """Load an artifact directory."""

    @abstractmethod
    def forward(self, encoded: dict[str, np.ndarray]) -> np.ndarray:
        """Logits (batch, labels) as float32 for one tokenized batch."""

    def model_files(self) -> list[Path]:
        """Files that hold the model itself (for size on disk)."""
        return []

    def describe(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "threads": self.threads, "max_length": self.max_length}

    def tokenize(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Pad to the longest text in the batch, truncate at max_length (int64 arrays, as the tokenizer gives)."""
        if self._encoder is None:
            return dict(self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                                       return_tensors="np"))
        encoder, fields = self._encoder
        encodings = encoder.encode_batch(list(texts))
        return {name: np.array([getattr(e, attr) for e in encodings], dtype=np.int64) for name, attr in fields}

    def logits(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        parts = [self.forward(self.tokenize(texts[i:i + batch_size])) for i in range(0, len(texts), batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, len(self.labels)), np.float32)

    def predict(self, texts: list[str], batch_size: int = 32) -> list[str]:
        return [self.labels[i] for i in self.logits(texts, batch_size).argmax(-1)]

    def evaluate(self, split: Split, batch_size: int = 64) -> dict[str, float]:
        """Accuracy and macro-F1 on a split whose label indices are this model's."""
        return classification_metrics(split.labels, self.logits(split.texts, batch_size).argmax(-1))


def artifact_for(path: str, formats: tuple[str, ...], runtime: str):
    """Open an artifact and make sure `runtime` can run its format."""
    from ..techniques import open_artifact

    artifact = open_artifact(path)
    if artifact.format not in formats:
        hint = " (build one with --recipe onnx,...)" if "onnx" in formats else ""
        raise ModelError(f"the {runtime} runtime runs {' or '.join(formats)} models; {path} is "
                         f"{artifact.format}{hint}")
    return artifact
