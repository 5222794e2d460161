"""Accuracy-aware mixed precision: when an INT8 variant breaks the accuracy budget, find the nodes whose
quantization hurts most and quantize again with them kept in float.

Sensitivity of a node = how far the model's outputs move (mean KL divergence of the softmax, on real
validation texts) when that node alone is quantized. Nodes are then kept in float in order of
sensitivity, 1, 2, 4, 8, ... of them, until the validation accuracy is inside the budget. The decision is
taken on the validation split; the test split stays for the benchmark that reports the result.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from .. import check
from ..metrics import log_softmax
from ..techniques import build, write_step
from ..techniques.base import Artifact, BuildContext, TechniqueConfig

WEIGHT_OPS = {"MatMul", "Gemm", "Attention", "Gather", "EmbedLayerNormalization"}
PROBE_TEXTS = 128


def can_fall_back(recipe: list[TechniqueConfig]) -> bool:
    """Whether the recipe's last step can keep nodes in float: it can be applied to one node alone (a probe)."""
    return bool(recipe) and recipe[-1].probe("") is not None


def quantizable_nodes(artifact: Artifact, config: TechniqueConfig) -> list[str]:
    """Nodes the quantizer would touch: ops of the configured types that take a weight initializer."""
    import onnx

    graph = onnx.load(str(artifact.path / "model.onnx"), load_external_data=False).graph
    weights = {i.name for i in graph.initializer}
    kinds = set(config.op_types) or WEIGHT_OPS
    return [n.name for n in graph.node if n.op_type in kinds and any(i in weights for i in n.input)
            and n.name not in config.exclude]


def _mean_kl(logits: np.ndarray, reference: np.ndarray) -> float:
    p = log_softmax(reference)
    return float((np.exp(p) * (p - log_softmax(logits))).sum(-1).mean())


def sensitivity(float_artifact: Artifact, config: TechniqueConfig, context: BuildContext, texts: list[str],
                progress=lambda *a, **k: None) -> list[dict]:
    """Every quantizable node, most sensitive first: {node, kl, flips} with only that node quantized."""
    task = float_artifact.task
    reference = check.outputs(check.load(float_artifact), texts, task)
    scores, nodes = [], quantizable_nodes(float_artifact, config)
    for i, node in enumerate(nodes, 1):
        with tempfile.TemporaryDirectory(prefix="slimformer-probe-") as tmp:
            probed = write_step(float_artifact, config.probe(node), Path(tmp), context)
            logits = check.outputs(check.load(probed), texts, task)
        scores.append({"node": node, "kl": _mean_kl(logits, reference),
                       "flips": int((logits.argmax(-1) != reference.argmax(-1)).sum())})
        progress(status=f"node {i}/{len(nodes)} quantized alone")
    return sorted(scores, key=lambda s: (-s["kl"], -s["flips"], s["node"]))


def mixed_precision(float_artifact: Artifact, config: TechniqueConfig, context: BuildContext, validation,
                    baseline_accuracy: float, max_drop: float, out: Path, progress=lambda *a, **k: None) -> dict:
    """Re-quantize keeping the most sensitive nodes in float until validation accuracy is within `max_drop`
    points of `baseline_accuracy`. Writes the chosen artifact to `out` (`config` with the kept nodes added to its
    `exclude`); returns what was done."""
    ranking = sensitivity(float_artifact, config, context, validation.texts[:PROBE_TEXTS], progress)
    tried, chosen, k = [], None, 1
    while ranking:
        k = min(k, len(ranking))
        excluded = tuple(r["node"] for r in ranking[:k])
        candidate = replace(config, exclude=tuple(config.exclude) + excluded)
        artifact = build(float_artifact.path, [candidate], None, context)  # cached by content hash
        accuracy = check.load(artifact).evaluate(validation)["accuracy"]
        drop = 100 * (baseline_accuracy - accuracy)
        tried.append({"kept_in_float": k, "validation_accuracy": accuracy, "drop_points": round(drop, 3)})
        progress(status=f"{k} of {len(ranking)} kept in float: validation {-drop:+.2f} pts")
        if drop <= max_drop + 1e-9 or k == len(ranking):
            build(float_artifact.path, [candidate], out, context, overwrite=True)
            chosen = {"excluded": list(excluded), "within": drop <= max_drop + 1e-9}
            break
        k *= 2
    return {"technique": config.name, "ranking": ranking[:20], "nodes": len(ranking), "tried": tried,
            "validation_baseline_accuracy": baseline_accuracy, **(chosen or {"excluded": [], "within": False})}
