"""The one interface every runtime meets: texts in, the task's answers out (logits, labels, vectors), threads fixed."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..artifacts import Artifact, check_max_length, open_artifact
from ..encoding import TextEncoder
from ..errors import ModelError
from ..tasks import CLASSIFICATION, Task
from ..tasks.scoring import Scoring, scoring_for
from .options import RuntimeOptions, runtime_options

STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")
DOMAIN_OWNERS = {"com.microsoft": "ONNX Runtime"}  # operator domains only one runtime implements


class Predictor(ABC):
    """Tokenization is shared (`encoder`); a runtime implements `load` and `forward` (encoded batch -> logits).

    `tokenizer`: a TextEncoder, or a transformers tokenizer (training passes the one it trains with).

    Answers go through the task's scoring (tasks/scoring.py): `answers` (what the benchmark stores and scores: the
    head's raw output per text, or per word for a per-token task), `predict` (what a user gets: labels, vectors),
    `evaluate` (the task's metrics on a labelled split). `logits` is the head's raw output of a per-text task."""

    runtime: ClassVar[str]
    formats: ClassVar[tuple[str, ...]]  # artifact formats it runs
    # operator domains it runs beyond standard ONNX (None: any an artifact's graph may use)
    operator_domains: ClassVar[tuple[str, ...] | None] = None
    task: Task = CLASSIFICATION  # set by load_predictor from the artifact (runtimes.load_predictor)

    def __init__(self, tokenizer, labels: list[str], max_length: int, threads: int | None = 1) -> None:
        self.encoder = tokenizer if isinstance(tokenizer, TextEncoder) else \
            TextEncoder.from_transformers(tokenizer, max_length)
        self.labels = list(labels)
        self.max_length = max_length
        self.threads = threads

    @classmethod
    @abstractmethod
    def load(cls, path: str, threads: int | None = 1, max_length: int | None = None, **options: Any) -> Predictor:
        """Load an artifact directory; `options` are checked against the runtime's (runtimes.options)."""

    @abstractmethod
    def forward(self, encoded: dict[str, np.ndarray]) -> np.ndarray:
        """Logits (batch, labels) as float32 for one tokenized batch."""

    def check_inputs(self, names: list[str]) -> None:
        """Refuse a model that takes an input the tokenizer does not give."""
        missing = [n for n in names if n not in self.encoder.model_input_names]
        if missing:
            raise ModelError(f"the model takes {', '.join(missing)}, which its tokenizer does not give "
                             f"(it gives {', '.join(self.encoder.model_input_names)})")

    def model_files(self) -> list[Path]:
        """Files that hold the model itself (for size on disk)."""
        return []

    def describe(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "threads": self.threads, "max_length": self.max_length}

    def tokenize(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Pad to the longest text in the batch, truncate at max_length (int64 arrays, as the tokenizer gives)."""
        return self.encoder(texts)

    @property
    def scoring(self) -> Scoring:
        """How this predictor's answers are made and scored (its task's)."""
        return scoring_for(self.task)

    def logits(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """The task head's raw output per text (classification logits, embedding vectors), in batches."""
        parts = [self.forward(self.tokenize(texts[i:i + batch_size])) for i in range(0, len(texts), batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, len(self.labels)), np.float32)

    def answers(self, texts: list[str], batch_size: int = 32):
        """The answers the task scores, per text in order, from padded batches of `batch_size` (scoring.answer_batch
        on each batch, joined)."""
        scoring = self.scoring
        return scoring.join([scoring.answer_batch(self, texts[i:i + batch_size])
                             for i in range(0, len(texts), batch_size)])

    def predict(self, texts: list[str], batch_size: int = 32) -> list:
        """What a user gets per text: a label (classification), a vector (embedding)..."""
        return self.scoring.present(self.answers(texts, batch_size), self.labels)

    def evaluate(self, split, batch_size: int = 64) -> dict[str, float]:
        """The task's metrics (accuracy and macro-F1 for a classifier) on a data.Split whose label indices are this
        model's."""
        return self.scoring.score(self.answers(split.texts, batch_size), split.labels)


    @classmethod
    def open(cls, path: str, threads: int | None, options: dict[str, Any]) -> tuple[Artifact, RuntimeOptions, int]:
        """What every runtime's `load` starts with: the artifact (refused in one line when this runtime cannot run
        its format or its graph's operators), its options checked (the artifact's runtime_settings for this
        runtime under the given ones, threads included) and its max_length settled (None: the model's)."""
        runtime_options(cls.runtime, options, threads)  # a bad option is refused before anything is opened
        artifact = open_artifact(path)
        if artifact.format not in cls.formats:
            hint = " (build one with --recipe onnx,...)" if "onnx" in cls.formats else ""
            raise ModelError(f"the {cls.runtime} runtime runs {' or '.join(cls.formats)} models; {path} is "
                             f"{artifact.format}{hint}")
        if cls.operator_domains is not None:
            for domain, step in artifact.operator_domains().items():
                if domain not in STANDARD_DOMAINS + cls.operator_domains:
                    what = f"{DOMAIN_OWNERS[domain]}-only operators" if domain in DOMAIN_OWNERS else \
                        f"operators {cls.runtime} does not run"
                    raise ModelError(f"{cls.runtime} cannot run {path}: {step} fused it into {what} ({domain} "
                                     f"domain); build the {cls.runtime} variant without {step}")
        opts = runtime_options(cls.runtime, options, threads, artifact.runtime_options(cls.runtime))
        return artifact, opts, check_max_length(artifact.path, opts.max_length)
