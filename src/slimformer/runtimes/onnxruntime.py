"""ONNX Runtime: CPU execution provider (CUDA when present and asked for), threads fixed.

On CPU the session's own SkipLayerNorm fusion is off by default: ONNX Runtime 1.32's CPU
SkipLayerNormalization kernel is 2-6x slower than the Add + LayerNormalization it replaces (see
techniques/ort_optimize.py); `fuse_skip_layer_norm=true` turns it back on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError, first_line
from .base import Predictor, artifact_for
from .options import runtime_options

LEVELS = {"disabled": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
          "all": "ORT_ENABLE_ALL"}


def graph_level(artifact) -> str:
    """The level an `ort-optimize` step chose, else 'all'."""
    for step in reversed(artifact.manifest.get("steps", [])):
        if step["technique"] == "ort-optimize":
            return step["level"]
    return "all"


def open_session(model: Path, threads: int | None = 1, level: str = "all", device: str = "cpu",
                 fuse_skip_layer_norm: bool | None = None, save_optimized: Path | None = None):
    """(session, disabled optimizers) for one ONNX file: sequential, `threads` intra-op threads, one inter-op.

    `save_optimized` writes the graph as the session runs it (what the tests inspect)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[level])
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: unused-initializer notes are not the user's concern
    if threads:
        options.intra_op_num_threads = threads
    if save_optimized:
        options.optimized_model_filepath = str(save_optimized)
    providers = ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ModelError("device cuda asked for, but this onnxruntime has no CUDAExecutionProvider")
        providers.insert(0, "CUDAExecutionProvider")
    # the CUDA kernel is fast; the CPU one is not
    fuse_skip_layer_norm = device == "cuda" if fuse_skip_layer_norm is None else fuse_skip_layer_norm
    disabled = [] if fuse_skip_layer_norm else ["SkipLayerNormFusion"]
    try:
        session = ort.InferenceSession(str(model), options, providers=providers, disabled_optimizers=disabled)
    except Exception as e:  # InvalidProtobuf, InvalidGraph, NoSuchFile...: the file is the problem
        raise ModelError(f"cannot load {model} in onnxruntime: {first_line(e)[:300]}") from None
    return session, disabled


class OrtPredictor(Predictor):
    runtime = "onnxruntime"

    @classmethod
    def load(cls, path: str, threads: int | None = 1, max_length: int | None = None, **options: Any) -> OrtPredictor:
        opts = runtime_options(cls.runtime, {"max_length": max_length, **options})
        artifact, max_length = artifact_for(path, ("onnx",), cls.runtime, opts.max_length)
        level = opts.graph_optimization_level or graph_level(artifact)
        session, disabled = open_session(artifact.path / "model.onnx", threads, level, opts.device,
                                         opts.fuse_skip_layer_norm)
        predictor = cls(artifact.encoder(max_length), artifact.labels, max_length, threads)
        predictor.session, predictor.artifact, predictor.level = session, artifact, level
        predictor.disabled_optimizers = disabled
        predictor.input_names = [i.name for i in session.get_inputs()]
        predictor.check_inputs(predictor.input_names)
        return predictor

    def forward(self, encoded: dict[str, np.ndarray]) -> np.ndarray:
        feed = {name: encoded[name].astype(np.int64, copy=False) for name in self.input_names}
        return self.session.run(None, feed)[0].astype(np.float32, copy=False)

    def model_files(self) -> list[Path]:
        return self.artifact.model_files()

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"graph_optimization_level": self.level,
                                     "disabled_optimizers": self.disabled_optimizers,
                                     "providers": self.session.get_providers()}
