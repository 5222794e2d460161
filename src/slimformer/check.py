"""The one check interface: how a technique's build (techniques.apply_step) and the mixed-precision fallback
(optimize/fallback.py) run an artifact and compare its outputs with another's. Nothing below the CLI other than
this module loads a runtime for a technique; the runtimes know nothing of techniques.

Outputs are compared per task (tasks.Task): a labelled task's by the labels that flip and the largest logit
move, an embedding model's by the cosine of each vector to its reference and the largest coordinate move. A
per-token task (ner: logits of shape (batch, sequence, labels)) is compared token by token over the real tokens
only (attention mask 1), so padding, whose rows mean nothing, never counts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .artifacts import DEFAULT_RUNTIME, Artifact, open_artifact
from .errors import ModelError
from .metrics import agreement, cosine_rows
from .runtimes import Predictor, load_predictor
from .tasks import Task

BATCH_SIZE = 16


def load(artifact: Artifact | str | Path, runtime: str | None = None, threads: int | None = None) -> Predictor:
    """A predictor for `artifact` on `runtime` (default: its format's), at the library's default thread count."""
    artifact = artifact if isinstance(artifact, Artifact) else open_artifact(artifact)
    return load_predictor(artifact.path, runtime or DEFAULT_RUNTIME[artifact.format], threads=threads)


def outputs(predictor: Predictor, texts: list[str], task: Task, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """The model's outputs on `texts`, one row per text (per-text tasks) or per real token, in text order
    (per-token tasks: padding dropped by the attention mask), as float32."""
    rows = []
    for i in range(0, len(texts), batch_size):
        encoded = predictor.tokenize(texts[i:i + batch_size])
        out = np.asarray(predictor.forward(encoded), dtype=np.float32)
        if task.per_token:
            mask = encoded["attention_mask"].astype(bool)
            if out.shape[:2] != mask.shape:
                raise ModelError(f"a {task.name} model answers one row per token; got shape {out.shape} for "
                                 f"inputs of shape {mask.shape}")
            out = out[mask]
        rows.append(out.reshape(len(out), -1))
    return np.concatenate(rows) if rows else np.zeros((0, 0), np.float32)


def compare(task: Task, candidate: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """How far `candidate`'s outputs are from `reference`'s (rows as `outputs` gives them), as `task` reads them:
    labelled tasks {label_flip_rate, max_abs_logit_diff}, vectors {mean_cosine, min_cosine}; both max_abs_diff
    (what a technique's tolerance is checked against)."""
    if candidate.shape != reference.shape:
        raise ModelError(f"outputs of shape {candidate.shape} cannot be compared with {reference.shape} (a per-token "
                         "model whose two tokenizations differ?)")
    if not len(reference):
        return {"max_abs_diff": 0.0, **({"label_flip_rate": 0.0, "max_abs_logit_diff": 0.0} if task.labelled else
                                         {"mean_cosine": 1.0, "min_cosine": 1.0})}
    if task.labelled:
        found = agreement(candidate, reference)
        return {**found, "max_abs_diff": found["max_abs_logit_diff"]}
    cosine = cosine_rows(candidate, reference)
    return {"mean_cosine": float(cosine.mean()), "min_cosine": float(cosine.min()),
            "max_abs_diff": float(np.abs(candidate - reference).max())}


def check_step(source: Artifact, built: Artifact, texts: list[str]) -> dict:
    """Agreement of a built artifact with its input on real texts, each on its default runtime (the build's check).
    `n` is the number of texts; per-token tasks add `tokens`, the number of real tokens compared."""
    task = source.task
    reference = outputs(load(source), texts, task)
    candidate = outputs(load(built), texts, task)
    return {**compare(task, candidate, reference), "n": len(texts),
            **({"tokens": len(reference)} if task.per_token else {})}


__all__ = ["check_step", "compare", "load", "outputs"]
