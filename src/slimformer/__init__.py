"""slimformer: make transformer text classifiers fast and small for inference, with honest numbers.

The public API is imported lazily so that `import slimformer` (and the CLI's --help) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "load_dataset": "slimformer.data",
    "load_predictor": "slimformer.runtimes",
    "train_classifier": "slimformer.training",
    "TrainConfig": "slimformer.training",
    "run_benchmark": "slimformer.bench.runner",
    "Variant": "slimformer.bench.runner",
    "DataSpec": "slimformer.bench.runner",
    "BenchSettings": "slimformer.bench.runner",
    "SlimformerError": "slimformer.errors",
}


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'slimformer' has no attribute {name!r}")


__all__ = ["__version__", *_API]
