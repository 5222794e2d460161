"""Runtimes: every one is a `Predictor`, found by name. Adding one is a module, its options class
(runtimes/options.py) and a line here.

Importing this package imports neither slimformer.techniques nor any runtime library: an ONNX model is
served with onnxruntime, tokenizers and numpy alone."""

from __future__ import annotations

import importlib
from pathlib import Path

from ..artifacts import DEFAULT_RUNTIME, open_artifact
from ..errors import SlimformerError, missing_library
from .base import Predictor
from .options import OPTIONS, check_options

# name -> "module:class"; imported on first use so that `torch` users never import onnxruntime
RUNTIMES = {
    "torch": "slimformer.runtimes.torch:TorchPredictor",
    "onnxruntime": "slimformer.runtimes.onnxruntime:OrtPredictor",
    "openvino": "slimformer.runtimes.openvino:OpenVinoPredictor",
}
assert set(RUNTIMES) == set(OPTIONS), "every runtime declares its options"


def predictor_class(runtime: str) -> type[Predictor]:
    if runtime not in RUNTIMES:
        raise SlimformerError(f"unknown runtime '{runtime}' (available: {', '.join(RUNTIMES)})")
    module, _, name = RUNTIMES[runtime].partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as e:  # a light install without this runtime's library
        if missing := missing_library(e):
            raise missing from None
        raise


def default_runtime(path: str | Path) -> str:
    return DEFAULT_RUNTIME[open_artifact(path).format]


def load_predictor(path: str | Path, runtime: str | None = None, threads: int | None = 1,
                   max_length: int | None = None, **options) -> Predictor:
    """Load the artifact at `path` into `runtime`, threads fixed, texts truncated at `max_length` tokens.

    Defaults: the runtime, options and max_length a bundle (`slimformer export`) records, else the format's
    runtime and the model's max_length (artifacts.default_max_length); the runtime also applies what the artifact's
    runtime_settings ask of it. Options are checked (check_options): an unknown option or a bad value is refused
    before anything loads."""
    if runtime is not None:
        check_options(runtime, options)  # refused before anything is opened
    artifact = open_artifact(path)
    settings = artifact.bundle
    runtime = runtime or settings.get("runtime") or DEFAULT_RUNTIME[artifact.format]
    options = {**(settings.get("options") or {}), **options} if runtime == settings.get("runtime") else options
    if max_length is not None:
        options["max_length"] = max_length
    options = check_options(runtime, options)
    predictor = predictor_class(runtime).load(str(path), threads=threads, **options)
    predictor.task = artifact.task  # what its answers are (tasks/scoring.py)
    return predictor


def artifact_labels(path: str | Path) -> list[str]:
    """Label names of an artifact: its manifest's, else a Hugging Face classifier config's."""
    return open_artifact(path).labels


__all__ = ["artifact_labels", "check_options", "default_runtime", "RUNTIMES", "Predictor", "load_predictor",
           "predictor_class"]
