"""ONNX Runtime: CPU execution provider (CUDA when present and asked for), threads fixed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError, first_line
from .base import Predictor, artifact_for

LEVELS = {"disabled": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
          "all": "ORT_ENABLE_ALL"}


def graph_level(artifact) -> str:
    """The level an `ort-optimize` step chose, else 'all'."""
    for step in reversed(artifact.manifest.get("steps", [])):
        if step["technique"] == "ort-optimize":
            return step["level"]
    return "all"


class OrtPredictor(Predictor):
    runtime = "onnxruntime"

    @classmethod
    def load(cls, path: str, threads: int | None = 1, graph_optimization_level: str | None = None,
             device: str = "cpu", **_: Any) -> OrtPredictor:
        import onnxruntime as ort

        artifact = artifact_for(path, ("onnx",), cls.runtime)
        level = graph_optimization_level or graph_level(artifact)
        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[level])
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: unused-initializer notes are not the user's concern
        if threads:
            options.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ModelError("device cuda asked for, but this onnxruntime has no CUDAExecutionProvider")
            providers.insert(0, "CUDAExecutionProvider")
        model = artifact.path / "model.onnx"
        try:
            session = ort.InferenceSession(str(model), options, providers=providers)
        except Exception as e:  # InvalidProtobuf, InvalidGraph, NoSuchFile...: the file is the problem
            raise ModelError(f"cannot load {model} in onnxruntime: {first_line(e)[:300]}") from None
        predictor = cls(artifact.tokenizer(), artifact.labels, artifact.max_length or 128, threads)
        predictor.session, predictor.artifact, predictor.level = session, artifact, level
        predictor.input_names = [i.name for i in session.get_inputs()]
        return predictor

    def forward(self, encoded: dict[str, np.ndarray]) -> np.ndarray:
        feed = {name: encoded[name].astype(np.int64, copy=False) for name in self.input_names}
        return self.session.run(None, feed)[0].astype(np.float32, copy=False)

    def model_files(self) -> list[Path]:
        return self.artifact.model_files()

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"graph_optimization_level": self.level,
                                     "providers": self.session.get_providers()}
