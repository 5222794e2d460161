"""Runtimes: every one is a `Predictor`, found by name. Adding one is a module plus a line here."""

from __future__ import annotations

import importlib
from pathlib import Path

from ..cache import read_manifest
from ..errors import SlimformerError
from .base import Predictor

# name -> "module:class"; imported on first use so that `torch` users never import onnxruntime
RUNTIMES = {
    "torch": "slimformer.runtimes.torch:TorchPredictor",
}


def predictor_class(runtime: str) -> type[Predictor]:
    if runtime not in RUNTIMES:
        raise SlimformerError(f"unknown runtime '{runtime}' (available: {', '.join(RUNTIMES)})")
    module, _, name = RUNTIMES[runtime].partition(":")
    return getattr(importlib.import_module(module), name)


def load_predictor(path: str | Path, runtime: str = "torch", threads: int | None = 1, **options) -> Predictor:
    """Load the artifact at `path` into `runtime` with its thread count fixed."""
    return predictor_class(runtime).load(str(path), threads=threads, **options)


def artifact_labels(path: str | Path) -> list[str]:
    """Label names of an artifact: its manifest's, else a Hugging Face classifier config's."""
    from ..models import classifier_labels, resolve

    resolved = resolve(str(path))
    return read_manifest(Path(resolved)).get("labels") or classifier_labels(resolved)


__all__ = ["artifact_labels", "RUNTIMES", "Predictor", "load_predictor", "predictor_class"]
