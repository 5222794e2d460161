"""PyTorch eager runtime (FP32 by default), under inference_mode."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..cache import read_manifest
from ..models import load_classifier
from .base import DEFAULT_MAX_LENGTH, Predictor


class TorchPredictor(Predictor):
    runtime = "torch"

    def __init__(self, model, tokenizer, labels, max_length: int = DEFAULT_MAX_LENGTH, threads: int | None = 1,
                 source: str | None = None) -> None:
        super().__init__(tokenizer, labels, max_length, threads)
        if threads:
            torch.set_num_threads(threads)
        self.model = model
        self.source = source
        self.device = next(model.parameters()).device
        # DistilBERT's forward swallows token_type_ids in **kwargs: pass only what it names
        self._inputs = set(inspect.signature(model.forward).parameters) & set(tokenizer.model_input_names)

    @classmethod
    def load(cls, path: str, threads: int | None = 1, max_length: int | None = None,
             trust_remote_code: bool = False, **_: Any) -> TorchPredictor:
        if threads:
            torch.set_num_threads(threads)  # before loading: some kernels size pools at first use
        model, tokenizer, labels = load_classifier(path, trust_remote_code=trust_remote_code)
        max_length = max_length or read_manifest(Path(path)).get("max_length") or DEFAULT_MAX_LENGTH
        return cls(model, tokenizer, labels, max_length=max_length, threads=threads, source=path)

    def forward(self, encoded: dict[str, np.ndarray]) -> np.ndarray:
        inputs = {k: torch.from_numpy(v).to(self.device) for k, v in encoded.items() if k in self._inputs}
        with torch.inference_mode():
            return self.model(**inputs).logits.float().cpu().numpy()

    def model_files(self) -> list[Path]:
        if not self.source or not Path(self.source).is_dir():
            return []
        return sorted(p for p in Path(self.source).iterdir() if p.suffix in (".safetensors", ".bin"))

    def describe(self) -> dict[str, Any]:
        dtype = str(next(self.model.parameters()).dtype).removeprefix("torch.")
        return super().describe() | {"precision": dtype, "device": str(self.device)}
