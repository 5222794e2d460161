"""What a model is for: the model-facing half of a task (which transformers head loads it, what its graph
outputs, whether its answers are labels or vectors, one per text or one per word).

This half sits below techniques and runtimes (they export and run heads by it) and imports nothing heavy. How a
task's answers are scored (metrics, the budget metric, agreement with a reference) lives above the bench.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError


@dataclass(frozen=True)
class Task:
    name: str  # as written in manifests and given to --task
    auto_class: str  # the transformers Auto class that loads a model of this task
    architectures: tuple[str, ...]  # suffixes of config.architectures that name a model of this task
    output: str  # the name of the exported graph's one output
    labelled: bool  # answers are labels (a label set in the manifest) or vectors
    per_token: bool  # one answer per word (token classification) or one per text
    description: str = ""


CLASSIFICATION = Task("classification", "AutoModelForSequenceClassification", ("ForSequenceClassification",),
                      "logits", labelled=True, per_token=False, description="one label per text")
NER = Task("ner", "AutoModelForTokenClassification", ("ForTokenClassification",), "logits", labelled=True,
           per_token=True, description="one IOB2 tag per word (token classification)")
EMBEDDING = Task("embedding", "AutoModel", ("Model",), "embeddings", labelled=False, per_token=False,
                 description="one vector per text (pooled and normalised as the model's own config says)")
TASKS = {t.name: t for t in (CLASSIFICATION, NER, EMBEDDING)}
DEFAULT_POOLING = {"mode": "mean", "normalize": True}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ModelError(f"unknown task '{name}' (tasks: {', '.join(TASKS)})")
    return TASKS[name]


def _json(path: Path):
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None


def task_from_config(path: str | Path) -> Task:
    """The task of a plain Hugging Face checkpoint, from its config's architectures (a sentence-transformers
    directory, or a bare encoder, is an embedding model)."""
    config = _json(Path(path) / "config.json") or {}
    archs = config.get("architectures") or []
    for task in (CLASSIFICATION, NER):
        if any(a.endswith(task.architectures) for a in archs):
            return task
    if (Path(path) / "modules.json").is_file() or any(a.endswith("Model") for a in archs):
        return EMBEDDING
    raise ModelError(f"{path} is neither a classifier, a token classifier nor an encoder (architectures: "
                     f"{', '.join(archs) or 'none'}); fine-tune it first with `slimformer train`")


def pooling_from_config(path: str | Path) -> dict:
    """How a sentence-transformers directory pools token states into one vector ({"mode", "normalize"}): its
    1_Pooling/config.json and modules.json; mean pooling, normalised, where it says nothing."""
    path = Path(path)
    modules = _json(path / "modules.json") or []
    pooling_dir = next((m.get("path") for m in modules if m.get("type", "").endswith("Pooling")), "1_Pooling")
    config = _json(path / pooling_dir / "config.json") if pooling_dir else None
    if not config:
        return dict(DEFAULT_POOLING)
    modes = [m for m in ("cls_token", "mean_tokens", "max_tokens") if config.get(f"pooling_mode_{m}")]
    if len(modes) != 1:
        raise ModelError(f"{path}: pooling {', '.join(modes) or 'none'} is not supported (one of cls, mean, max)")
    normalize = any(m.get("type", "").endswith("Normalize") for m in modules) if modules else True
    return {"mode": modes[0].split("_")[0], "normalize": normalize}


__all__ = ["CLASSIFICATION", "EMBEDDING", "NER", "TASKS", "Task", "get_task", "pooling_from_config",
           "task_from_config"]
