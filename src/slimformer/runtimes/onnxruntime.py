"""ONNX Runtime: CPU execution provider, or the CUDA / TensorRT ones when asked for (`device`), threads fixed.

On a GPU the batch goes through IO binding: inputs copied to the device once, logits left there and copied back
once per batch; that copy waits for the GPU, so a timed `forward` covers the GPU's work.

On CPU the session's own SkipLayerNorm fusion is off by default: ONNX Runtime 1.32's CPU
SkipLayerNormalization kernel is 2-6x slower than the Add + LayerNormalization it replaces (see
techniques/ort_optimize.py); `fuse_skip_layer_norm=true` turns it back on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..cache import cache_dir
from ..errors import MissingLibraryError, ModelError, first_line, missing_library
from .base import Predictor

# the provider each device asks for first (the CPU provider always comes last, for the ops a GPU one lacks)
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
NO_CUDA_EP = ("device {device} needs onnxruntime-gpu; this onnxruntime has only {available}: pip uninstall -y "
              "onnxruntime && pip install 'slimformer[gpu]'")
TRT_MAX_BATCH = 256  # the largest batch a TensorRT engine is built for (recipes.GPU_BATCH_SIZES)
LEVELS = {"disabled": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
          "all": "ORT_ENABLE_ALL"}


def providers(device: str, available: list[str], model: Path | None = None, max_length: int = 512) -> list:
    """The execution providers for `device`, GPU ones first; one line naming the extra when they are missing."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    wanted = [PROVIDERS[device]] + (["CUDAExecutionProvider"] if device == "tensorrt" else [])
    if any(p not in available for p in wanted):
        raise MissingLibraryError(NO_CUDA_EP.format(device=device, available=", ".join(available)))
    out: list = [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    if device == "tensorrt":
        # one optimization profile from 1 x 1 to TRT_MAX_BATCH x max_length: without it the engine is rebuilt
        # whenever a batch is longer or larger than any before, in the middle of a timed run
        names = _input_names(model) if model else []
        shapes = {k: ",".join(f"{n}:{b}x{t}" for n in names) for k, (b, t) in
                  {"min": (1, 1), "opt": (1, max_length), "max": (TRT_MAX_BATCH, max_length)}.items()}
        options = {"device_id": 0, "trt_fp16_enable": True, "trt_engine_cache_enable": True,
                   "trt_engine_cache_path": str(cache_dir() / "tensorrt")}
        if names:
            options |= {f"trt_profile_{k}_shapes": v for k, v in shapes.items()}
        out.insert(0, ("TensorrtExecutionProvider", options))
    return out


def _input_names(model: Path) -> list[str]:
    """Graph inputs of an ONNX file (initializers excluded), read without starting a session."""
    try:
        import onnx
    except ModuleNotFoundError as e:
        raise (missing_library(e) or e) from None

    graph = onnx.load(str(model), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    return [i.name for i in graph.input if i.name not in initializers]


def open_session(model: Path, threads: int | None = 1, level: str = "all", device: str = "cpu",
                 fuse_skip_layer_norm: bool | None = None, save_optimized: Path | None = None,
                 max_length: int = 512):
    """(session, disabled optimizers) for one ONNX file: sequential, `threads` intra-op threads, one inter-op.

    `save_optimized` writes the graph as the session runs it (what the tests inspect). A GPU `device` whose
    provider ONNX Runtime cannot start (no GPU, CUDA or TensorRT libraries missing) is refused, never run on the
    CPU under a GPU label."""
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
    chosen = providers(device, ort.get_available_providers(), model, max_length)
    # the GPU kernel is fast; the CPU one is not
    fuse_skip_layer_norm = device != "cpu" if fuse_skip_layer_norm is None else fuse_skip_layer_norm
    disabled = [] if fuse_skip_layer_norm else ["SkipLayerNormFusion"]
    try:
        session = ort.InferenceSession(str(model), options, providers=chosen, disabled_optimizers=disabled)
    except Exception as e:  # InvalidProtobuf, InvalidGraph, NoSuchFile...: the file is the problem
        raise ModelError(f"cannot load {model} in onnxruntime: {first_line(e)[:300]}") from None
    if session.get_providers()[0] != PROVIDERS[device]:
        raise ModelError(f"ONNX Runtime could not start {PROVIDERS[device]} for device {device} (it fell back to "
                         f"{session.get_providers()[0]}): no GPU visible, or its CUDA/cuDNN/TensorRT libraries "
                         "are missing")
    return session, disabled


class OrtPredictor(Predictor):
    runtime = "onnxruntime"
    formats = ("onnx",)

    @classmethod
    def load(cls, path: str, threads: int | None = 1, max_length: int | None = None, **options: Any) -> OrtPredictor:
        artifact, opts, max_length = cls.open(path, threads, {"max_length": max_length, **options})
        threads, level = opts.threads, opts.graph_optimization_level
        session, disabled = open_session(artifact.path / "model.onnx", threads, level, opts.device,
                                         opts.fuse_skip_layer_norm, max_length=max_length)
        predictor = cls(artifact.encoder(max_length), artifact.labels, max_length, threads)
        predictor.session, predictor.artifact, predictor.level = session, artifact, level
        predictor.disabled_optimizers, predictor.device = disabled, opts.device
        predictor.io_binding = opts.device != "cpu" if opts.io_binding is None else opts.io_binding
        predictor.input_names = [i.name for i in session.get_inputs()]
        predictor.output_name = session.get_outputs()[0].name
        predictor.check_inputs(predictor.input_names)
        return predictor

    def forward(self, encoded: dict[str, np.ndarray]) -> np.ndarray:
        feed = {name: encoded[name].astype(np.int64, copy=False) for name in self.input_names}
        if not self.io_binding:
            return self.session.run([self.output_name], feed)[0].astype(np.float32, copy=False)
        binding = self.session.io_binding()
        for name, array in feed.items():
            binding.bind_cpu_input(name, array)  # copied to the provider's device once
        binding.bind_output(self.output_name, "cpu" if self.device == "cpu" else "cuda")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0].astype(np.float32, copy=False)  # waits for the device

    def model_files(self) -> list[Path]:
        return self.artifact.model_files()

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"graph_optimization_level": self.level,
                                     "disabled_optimizers": self.disabled_optimizers,
                                     "providers": self.session.get_providers(), "device": self.device,
                                     "io_binding": self.io_binding}
