"""OpenVINO: reads ONNX artifacts directly, and the IR that `ov-int8` writes.

FP32 means FP32 (explicit precision hint): OpenVINO otherwise picks bf16 on CPUs that have it, which is a
different variant (`precision=bf16`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError, SlimformerError
from .base import Predictor, artifact_for

PRECISIONS = ("f32", "bf16", "f16")


class OpenVinoPredictor(Predictor):
    runtime = "openvino"

    @classmethod
    def load(cls, path: str, threads: int | None = 1, precision: str = "f32", hint: str = "latency",
             device: str = "CPU", **_: Any) -> OpenVinoPredictor:
        import openvino as ov

        if precision not in PRECISIONS:
            raise SlimformerError(f"openvino precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
        artifact = artifact_for(path, ("onnx", "openvino"), cls.runtime)
        if any(step["technique"] == "ort-optimize" and step["stats"].get("fusion")
               for step in artifact.manifest.get("steps", [])):
            raise ModelError(f"openvino cannot run {path}: ort-optimize fused it into ONNX Runtime-only operators "
                             "(com.microsoft domain); build the openvino variant without ort-optimize")
        model_path = artifact.path / ("model.xml" if artifact.format == "openvino" else "model.onnx")
        config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": hint.upper(), "NUM_STREAMS": "1"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = str(threads)
        core = ov.Core()
        try:
            compiled = core.compile_model(core.read_model(str(model_path)), device, config)
        except Exception as e:
            detail = " ".join(ln.strip() for ln in str(e).splitlines() if ln.strip() and "Exception from" not in ln)
            raise ModelError(f"cannot load {model_path} in openvino: {detail[:300]}") from None
        predictor = cls(artifact.tokenizer(), artifact.labels, artifact.max_length or 128, threads)
        predictor.compiled, predictor.artifact, predictor.precision = compiled, artifact, precision
        predictor.request = compiled.create_infer_request()
        predictor.input_names = [i.get_any_name() for i in compiled.inputs]
        return predictor

    def forward(self, encoded: dict[str, np.ndarray]) -> np.ndarray:
        feed = {name: encoded[name].astype(np.int64, copy=False) for name in self.input_names}
        return np.array(self.request.infer(feed)[0], dtype=np.float32)

    def model_files(self) -> list[Path]:
        return self.artifact.model_files()

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"precision": self.precision,
                                     "execution_precision": str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))}
