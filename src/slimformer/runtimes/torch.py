"""PyTorch eager runtime under inference_mode: float32 by default, or whatever the artifact holds
(fp16/bf16 weights, a dynamically quantized int8 state dict, bitsandbytes NF4), on the CPU or (`device=cuda`) the
first GPU: model and inputs on the device, and `forward` waits for the GPU before it returns, so it can be timed."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..artifacts import open_artifact
from ..errors import ModelError
from ..models import Head, load_int8_model, load_model, task_head
from ..tasks import CLASSIFICATION
from .base import Predictor


def check_device(name: str) -> torch.device:
    """The torch device for the `device` option, refused in one line when this torch has no GPU."""
    if name == "cuda" and not torch.cuda.is_available():
        build = "a CPU-only build of torch" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise ModelError(f"device cuda asked for, but {build} (torch {torch.__version__}); use device=cpu")
    return torch.device("cuda", 0) if name == "cuda" else torch.device("cpu")


class TorchPredictor(Predictor):
    runtime = "torch"
    formats = ("hf", "torch-int8")

    def __init__(self, model, tokenizer, labels, max_length: int, threads: int | None = 1,
                 source: str | None = None, task=None, pooling: dict | None = None) -> None:
        """`model`: a transformers model of `task` (default classification), or one already in its task head."""
        super().__init__(tokenizer, labels, max_length, threads)
        if threads:
            torch.set_num_threads(threads)
        if not isinstance(model, Head):
            model = task_head(model, task or CLASSIFICATION, pooling)
        self.model, self.task = model, model.task
        self.source = source
        param = next(model.parameters(), None)
        self.device = param.device if param is not None else torch.device("cpu")
        # DistilBERT's forward swallows token_type_ids in **kwargs: pass only what it names
        self._inputs = set(inspect.signature(model.model.forward).parameters) & set(self.encoder.model_input_names)

    @classmethod
    def load(cls, path: str, threads: int | None = 1, max_length: int | None = None,
             **options: Any) -> TorchPredictor:
        artifact, opts, max_length = cls.open(path, threads, {"max_length": max_length, **options})
        threads = opts.threads
        if threads:
            torch.set_num_threads(threads)  # before loading: some kernels size pools at first use
        # tokenized through transformers (as in training): the check of every built step then compares the
        # ONNX/OpenVINO runtimes' own tokenization (from tokenizer.json, encoding.py) with it on real texts
        device = check_device(opts.device)
        if artifact.format == "torch-int8":
            if device.type != "cpu":
                raise ModelError("PyTorch dynamic INT8 runs on the CPU only (no CUDA kernels): use device=cpu, or an "
                                 "ONNX INT8 model on onnxruntime with device=cuda")
            model, tokenizer = load_int8_model(str(artifact.path), artifact.task), artifact.tokenizer()
        else:  # a bitsandbytes (nf4) checkpoint is placed by its loader; every other model is moved here
            model, tokenizer, _ = load_model(str(artifact.path), artifact.task,
                                             trust_remote_code=opts.trust_remote_code, device=str(device))
            if not getattr(model, "is_quantized", False):
                model.to(device)
        return cls(model, tokenizer, artifact.labels, max_length, threads, source=str(artifact.path),
                   task=artifact.task, pooling=artifact.pooling)

    def forward(self, encoded: dict[str, np.ndarray]) -> np.ndarray:
        inputs = {k: torch.from_numpy(v).to(self.device, non_blocking=True) for k, v in encoded.items()
                  if k in self._inputs}
        with torch.inference_mode():
            logits = self.model(**inputs).float().cpu().numpy()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # the copy back waited already; nothing queued may outlive a timing
        return logits

    def model_files(self) -> list[Path]:
        return open_artifact(self.source).model_files() if self.source and Path(self.source).is_dir() else []

    def describe(self) -> dict[str, Any]:
        weights = {str(p.dtype).removeprefix("torch.") for p in self.model.parameters()}
        quantized = {type(m).__name__ for m in self.model.modules() if "quantized" in type(m).__module__
                     or type(m).__name__ == "Linear4bit"}
        return super().describe() | {"precision": "/".join(sorted(weights)), "quantized_modules": sorted(quantized),
                                     "device": str(self.device)}
