"""OpenVINO: reads ONNX artifacts directly, and the IR that `ov-int8` writes.

FP32 means FP32 (explicit precision hint): OpenVINO otherwise picks bf16 on CPUs that have it, which is a
different variant (`precision=bf16`).

Static shapes (`static_shapes`, on by default on CPU): OpenVINO's CPU plugin runs a model compiled for one
fixed input shape faster than the same model compiled with dynamic shapes (measured on this project's
Intel Xeon: a 3-layer MiniLM INT8 student on TREC-6 questions 1.33 -> 0.83 ms per text, a DistilBERT-base
INT8 at 128 tokens 7.1-7.6 -> 6.3 ms at 2 threads). So batch-1 calls run on models compiled for [1, L]
with L a length bucket (16, 32, 64, ... up to max_length): the text is padded to its bucket (attention mask
0 on the padding, which leaves the logits of the real tokens as they are). Other batch sizes run on the
dynamic model. The cost is paid at load time (one compilation per bucket) and in memory; cold start and
peak RSS in every benchmark include it. `static_shapes=false` turns it off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from .base import Predictor

SMALLEST_BUCKET = 16
PAD_VALUES = {"input_ids": "pad_token_id", "attention_mask": None, "token_type_ids": "pad_token_type_id"}


def length_buckets(max_length: int) -> list[int]:
    """16, 32, 64, ... below max_length, then max_length itself."""
    buckets, length = [], SMALLEST_BUCKET
    while length < max_length:
        buckets.append(length)
        length *= 2
    return buckets + [max_length]


def _ov_error(e: Exception) -> str:
    return " ".join(ln.strip() for ln in str(e).splitlines() if ln.strip() and "Exception from" not in ln)[:300]


class OpenVinoPredictor(Predictor):
    runtime = "openvino"
    formats = ("onnx", "openvino")
    operator_domains = ()  # standard ONNX only: graphs fused into ONNX Runtime's own operators are refused

    @classmethod
    def load(cls, path: str, threads: int | None = 1, max_length: int | None = None,
             **options: Any) -> OpenVinoPredictor:
        import openvino as ov

        artifact, opts, max_length = cls.open(path, threads, {"max_length": max_length, **options})
        device, threads = opts.device, opts.threads
        model_path = artifact.path / ("model.xml" if artifact.format == "openvino" else "model.onnx")
        config = {"INFERENCE_PRECISION_HINT": opts.precision, "PERFORMANCE_HINT": opts.hint.upper(),
                  "NUM_STREAMS": "1"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = str(threads)
        core = ov.Core()
        try:
            model = core.read_model(str(model_path))
            compiled = core.compile_model(model, device, config)
        except Exception as e:
            raise ModelError(f"cannot load {model_path} in openvino: {_ov_error(e)}") from None
        predictor = cls(artifact.encoder(max_length), artifact.labels, max_length, threads)
        predictor.compiled, predictor.artifact, predictor.precision = compiled, artifact, opts.precision
        predictor.request = compiled.create_infer_request()
        predictor.input_names = [i.get_any_name() for i in compiled.inputs]
        predictor.check_inputs(predictor.input_names)
        predictor.static = {}  # bucket length -> infer request of the model compiled for [1, length]
        predictor.static_error = None
        wanted = device == "CPU" if opts.static_shapes is None else opts.static_shapes
        paddable = "attention_mask" in predictor.input_names and set(predictor.input_names) <= set(PAD_VALUES)
        if wanted and paddable and predictor.encoder.pad_token_id is not None:
            for length in length_buckets(predictor.max_length):
                try:
                    fixed = model.clone()
                    fixed.reshape({name: [1, length] for name in predictor.input_names})
                    predictor.static[length] = core.compile_model(fixed, device, config).create_infer_request()
                except Exception as e:  # a graph that cannot take a fixed shape runs dynamic, as before
                    predictor.static, predictor.static_error = {}, _ov_error(e)
                    break
        return predictor

    def _pad(self, encoded: dict[str, np.ndarray], length: int) -> dict[str, np.ndarray]:
        """Pad a batch of one to `length` on the tokenizer's padding side: pad ids, mask 0, type ids as padding."""
        missing = length - encoded["input_ids"].shape[1]
        tok = self.encoder
        width = ((0, 0), (missing, 0) if tok.padding_side == "left" else (0, missing))
        return {name: np.pad(encoded[name].astype(np.int64, copy=False), width,
                             constant_values=getattr(tok, PAD_VALUES[name]) if PAD_VALUES[name] else 0)
                for name in self.input_names}

    def forward(self, encoded: dict[str, np.ndarray]) -> np.ndarray:
        batch, length = encoded["input_ids"].shape
        bucket = next((b for b in self.static if b >= length), None) if batch == 1 else None
        if bucket is not None:
            out = np.array(self.static[bucket].infer(self._pad(encoded, bucket))[0], dtype=np.float32)
            if out.ndim == 3:  # one row per token (ner): the bucket's padding goes again
                out = out[:, -length:] if self.encoder.padding_side == "left" else out[:, :length]
            return out
        feed = {name: encoded[name].astype(np.int64, copy=False) for name in self.input_names}
        return np.array(self.request.infer(feed)[0], dtype=np.float32)

    def model_files(self) -> list[Path]:
        return self.artifact.model_files()

    def describe(self) -> dict[str, Any]:
        return super().describe() | {
            "precision": self.precision,
            "execution_precision": str(self.compiled.get_property("INFERENCE_PRECISION_HINT")),
            "static_shapes": sorted(self.static),
            **({"static_shapes_error": self.static_error} if self.static_error else {})}
