"""Structured pruning of feed-forward neurons, ranked by first-order Taylor importance on the training data.

A neuron's importance is |sum of weight * gradient| over the parameters that belong to it (its row of the
intermediate Linear and bias, its column of the output Linear), accumulated in absolute value per batch: the
first-order estimate of how much the loss changes when the neuron is removed (Molchanov et al. 2019). Pruning is
physical: the two Linears are replaced by smaller ones holding the kept rows and columns, and the config's
intermediate size is updated, so the result saves and reloads as a standard checkpoint. BERT-like configs have a
single intermediate size, so every layer keeps the same number of neurons (each layer its own most important).

Attention heads are not pruned: transformers 5 dropped `prune_heads`/`config.pruned_heads`, and a BERT config
ties the head size to hidden_size / num_attention_heads, so a checkpoint with fewer heads of the same size
cannot be expressed. Depth is cut by keeping every k-th layer (distill.student_from_teacher).
"""

from __future__ import annotations

import numpy as np

from ..data import Split
from ..errors import ModelError

FFN_SIZE_FIELDS = ("intermediate_size", "hidden_dim")  # BERT-likes, DistilBERT


def ffn_size(config) -> int:
    for name in FFN_SIZE_FIELDS:
        if isinstance(getattr(config, name, None), int):
            return getattr(config, name)
    raise ModelError(f"cannot tell the feed-forward size of a {config.model_type} model")


def ffn_linears(model) -> list[tuple]:
    """(intermediate Linear, output Linear) of every transformer layer, in order."""
    pairs = []
    for _, module in model.named_modules():
        if hasattr(module, "intermediate") and hasattr(module, "output") and hasattr(module.intermediate, "dense"):
            pairs.append((module.intermediate.dense, module.output.dense))  # BERT, RoBERTa, MiniLM
        elif hasattr(module, "ffn") and hasattr(module.ffn, "lin1"):
            pairs.append((module.ffn.lin1, module.ffn.lin2))  # DistilBERT
    if not pairs:
        raise ModelError(f"cannot find the feed-forward layers of a {model.config.model_type} model")
    return pairs


def ffn_importance(model, tokenizer, split: Split, max_length: int, texts: int = 512,
                   batch_size: int = 32) -> list[np.ndarray]:
    """Taylor importance of every feed-forward neuron per layer, from the cross-entropy on the first `texts`
    labelled texts of `split` (gradients only; the model is left unchanged)."""
    import torch

    pairs = ffn_linears(model)
    scores = [torch.zeros(first.out_features, dtype=torch.float64) for first, _ in pairs]
    was_training = model.training
    model.eval()  # no dropout: the gradient of the model as it will be used
    n = min(texts, len(split))
    try:
        for start in range(0, n, batch_size):
            batch = tokenizer(split.texts[start:min(n, start + batch_size)], padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt")
            labels = torch.from_numpy(split.labels[start:min(n, start + batch_size)])
            model.zero_grad(set_to_none=True)
            model(**batch, labels=labels).loss.backward()
            with torch.no_grad():
                for score, (first, second) in zip(scores, pairs, strict=True):
                    contribution = ((first.weight * first.weight.grad).sum(1)
                                    + (second.weight * second.weight.grad).sum(0))
                    if first.bias is not None:
                        contribution = contribution + first.bias * first.bias.grad
                    score += contribution.abs().double()
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return [s.numpy() for s in scores]


def _linear(weight, bias):
    import torch

    layer = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def _replace(model, old, new) -> None:
    for parent in model.modules():
        for name, child in parent.named_children():
            if child is old:
                setattr(parent, name, new)
                return


def prune_ffn(model, keep: int, scores: list[np.ndarray]):
    """Keep the `keep` most important neurons of every layer's feed-forward block (in place); returns the model."""
    import torch

    pairs = ffn_linears(model)
    if len(scores) != len(pairs):
        raise ModelError(f"{len(scores)} importance vectors for {len(pairs)} layers")
    size = ffn_size(model.config)
    if not 1 <= keep <= size:
        raise ModelError(f"cannot keep {keep} of {size} feed-forward neurons")
    for (first, second), score in zip(pairs, scores, strict=True):
        index = torch.from_numpy(np.sort(np.argsort(-score, kind="stable")[:keep]))
        _replace(model, first, _linear(first.weight[index], None if first.bias is None else first.bias[index]))
        _replace(model, second, _linear(second.weight[:, index], second.bias))
    for name in FFN_SIZE_FIELDS:
        if isinstance(getattr(model.config, name, None), int):
            setattr(model.config, name, keep)
    return model


__all__ = ["ffn_importance", "ffn_linears", "ffn_size", "prune_ffn"]
