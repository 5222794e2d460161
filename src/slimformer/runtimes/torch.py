"""PyTorch eager runtime under inference_mode: float32 by default, or whatever the artifact holds
(fp16/bf16 weights, a dynamically quantized int8 state dict, bitsandbytes NF4)."""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models import load_classifier
from .base import DEFAULT_MAX_LENGTH, Predictor, artifact_for


class TorchPredictor(Predictor):
    runtime = "torch"

    def __init__(self, model, tokenizer, labels, max_length: int = DEFAULT_MAX_LENGTH,
                 threads: int | None = 1, source: str | None = None) -> None:
        super().__init__(tokenizer, labels, max_length, threads)
        if threads:
            torch.set_num_threads(threads)
        self.model = model
        self.source = source
        param = next(model.parameters(), None)
        self.device = param.device if param is not None else torch.device("cpu")
        # DistilBERT's forward swallows token_type_ids in **kwargs: pass only what it names
        self._inputs = set(inspect.signature(model.forward).parameters) & set(tokenizer.model_input_names)

    @classmethod
    def load(cls, path: str, threads: int | None = 1, max_length: int | None = None,
             trust_remote_code: bool = False, **_: Any) -> TorchPredictor:
        from ..techniques.torch_precision import INT8_STATE, quantize_int8_dynamic

        if threads:
            torch.set_num_threads(threads)  # before loading: some kernels size pools at first use
        artifact = artifact_for(path, ("hf", "torch-int8"), cls.runtime)
        if artifact.format == "torch-int8":
            from transformers import AutoConfig, AutoModelForSequenceClassification

            model = quantize_int8_dynamic(AutoModelForSequenceClassification.from_config(
                AutoConfig.from_pretrained(artifact.path)))
            with warnings.catch_warnings():  # quantized tensors still rebuild through TypedStorage
                warnings.simplefilter("ignore")
                model.load_state_dict(torch.load(artifact.path / INT8_STATE, weights_only=True))
            model.eval()
        else:
            model, _, _ = load_classifier(str(artifact.path), trust_remote_code=trust_remote_code)
        return cls(model, artifact.tokenizer(), artifact.labels, max_length or artifact.max_length or
                   DEFAULT_MAX_LENGTH, threads, source=str(artifact.path))

    def forward(self, encoded: dict[str, np.ndarray]) -> np.ndarray:
        inputs = {k: torch.from_numpy(v).to(self.device) for k, v in encoded.items() if k in self._inputs}
        with torch.inference_mode():
            return self.model(**inputs).logits.float().cpu().numpy()

    def model_files(self) -> list[Path]:
        from ..techniques import open_artifact

        return open_artifact(self.source).model_files() if self.source and Path(self.source).is_dir() else []

    def describe(self) -> dict[str, Any]:
        weights = {str(p.dtype).removeprefix("torch.") for p in self.model.parameters()}
        quantized = {type(m).__name__ for m in self.model.modules() if "quantized" in type(m).__module__
                     or type(m).__name__ == "Linear4bit"}
        return super().describe() | {"precision": "/".join(sorted(weights)), "quantized_modules": sorted(quantized),
                                     "device": str(self.device)}

