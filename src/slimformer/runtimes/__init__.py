"""Runtimes: every one is a `Predictor`, found by name. Adding one is a module plus a line here."""

from __future__ import annotations

import importlib
from pathlib import Path

from ..errors import SlimformerError
from .base import Predictor

# name -> "module:class"; imported on first use so that `torch` users never import onnxruntime
RUNTIMES = {
    "torch": "slimformer.runtimes.torch:TorchPredictor",
    "onnxruntime": "slimformer.runtimes.onnxruntime:OrtPredictor",
    "openvino": "slimformer.runtimes.openvino:OpenVinoPredictor",
}


def predictor_class(runtime: str) -> type[Predictor]:
    if runtime not in RUNTIMES:
        raise SlimformerError(f"unknown runtime '{runtime}' (available: {', '.join(RUNTIMES)})")
    module, _, name = RUNTIMES[runtime].partition(":")
    return getattr(importlib.import_module(module), name)


def default_runtime(path: str | Path) -> str:
    from ..techniques import DEFAULT_RUNTIME, open_artifact

    return DEFAULT_RUNTIME[open_artifact(path).format]


def load_predictor(path: str | Path, runtime: str | None = None, threads: int | None = 1, **options) -> Predictor:
    """Load the artifact at `path` into `runtime`, threads fixed.

    Default runtime and options: those a bundle (`slimformer export`) records, else the format's runtime."""
    from ..bundle import bundle_settings

    settings = bundle_settings(path)
    runtime = runtime or settings.get("runtime") or default_runtime(path)
    options = {**(settings.get("options") or {}), **options} if runtime == settings.get("runtime") else options
    return predictor_class(runtime).load(str(path), threads=threads, **options)


def artifact_labels(path: str | Path) -> list[str]:
    """Label names of an artifact: its manifest's, else a Hugging Face classifier config's."""
    from ..techniques import open_artifact

    return open_artifact(path).labels


__all__ = ["artifact_labels", "default_runtime", "RUNTIMES", "Predictor", "load_predictor", "predictor_class"]
