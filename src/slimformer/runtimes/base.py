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


class Predictor(ABC):
    """Tokenization is shared; a runtime implements `load` and `forward` (encoded batch -> logits)."""

    runtime: ClassVar[str]

    def __init__(self, tokenizer, labels: list[str], max_length: int = DEFAULT_MAX_LENGTH,
                 threads: int | None = 1) -> None:
        self.tokenizer = tokenizer
        self.labels = list(labels)
        self.max_length = max_length
        self.threads = threads

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
        """Pad to the longest text in the batch, truncate at max_length."""
        return dict(self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                                   return_tensors="np"))

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
