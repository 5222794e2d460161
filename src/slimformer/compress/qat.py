"""Quantization-aware training: fine-tune with fake INT8 quantization, then export an INT8 ONNX model with the
scales the training settled on.

Every Linear of the encoder is wrapped while training: its weight is fake-quantized per output channel,
symmetric int8 (scale = max|w| / 127, recomputed from the current weight at every step), its input per tensor,
asymmetric uint8 (the u8s8 kernels VNNI CPUs run fastest), from a moving average of the batches' min and max.
Gradients pass straight through the rounding. The loss is distillation from the teacher's cached logits on the
transfer set (distill.train_student), so a student or the teacher itself can be trained this way; validation
accuracy after each epoch is that of the simulated INT8 model. Afterwards the wrappers are removed: the
checkpoint is a standard HF model with the trained weights, plus `qat.json` holding every Linear's input scale
and zero point. The `int8-qat` technique (techniques_qat.py) writes those, and the weights' per-channel scales,
as QuantizeLinear/DequantizeLinear pairs into the exported ONNX graph, which ONNX Runtime runs as integer
matmuls and OpenVINO as its own INT8.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..cache import write_json
from ..errors import SlimformerError

QAT_FILE = "qat.json"
WEIGHT_MAX = 127  # symmetric int8 weights in [-127, 127]

class QatError(SlimformerError):
    """A quantization-aware training request that cannot work."""

@dataclass(frozen=True)
class QatConfig:
    epochs: int = 2
    lr: float = 3e-5
    alpha: float = 0.5  # as distillation: weight of the labels; 1 - alpha: the teacher's soft targets
    temperature: float = 2.0
    augment: int = 0  # perturbed copies per training text (distillation uses 2; QAT starts from a trained model)
    momentum: float = 0.05  # of the activation ranges' moving average
    seed: int = 42
    max_length: int | None = None

@functools.cache
def _fake_quant_modules():
    import torch
    import torch.nn.functional as F

    class FakeQuantLinear(torch.nn.Module):
        """A Linear whose weight (per channel, int8) and input (per tensor, uint8) go through fake quantization."""

        def __init__(self, linear, momentum: float) -> None:
            super().__init__()
            self.linear, self.momentum = linear, momentum
            self.register_buffer("input_min", torch.tensor(float("inf")))
            self.register_buffer("input_max", torch.tensor(float("-inf")))

        def input_qparams(self):
            low, high = self.input_min.clamp(max=0.0), self.input_max.clamp(min=0.0)
            scale = ((high - low) / 255.0).clamp_min(1e-8)
            return scale, int(torch.round(-low / scale).clamp(0, 255))

        def forward(self, x):
            x = x.float()
            if self.training:
                with torch.no_grad():
                    low, high = x.min(), x.max()
                    first, m = torch.isinf(self.input_min), self.momentum
                    self.input_min.copy_(torch.where(first, low, self.input_min + m * (low - self.input_min)))
                    self.input_max.copy_(torch.where(first, high, self.input_max + m * (high - self.input_max)))
            scale, zero_point = self.input_qparams()
            x = torch.fake_quantize_per_tensor_affine(x, float(scale), zero_point, 0, 255)
            weight = self.linear.weight.float()
            w_scale = (weight.detach().abs().amax(1) / WEIGHT_MAX).clamp_min(1e-8)
            zero = torch.zeros_like(w_scale, dtype=torch.int32)
            weight = torch.fake_quantize_per_channel_affine(weight, w_scale, zero, 0, -WEIGHT_MAX, WEIGHT_MAX)
            return F.linear(x, weight, None if self.linear.bias is None else self.linear.bias.float())

    return FakeQuantLinear

def encoder_linears(model) -> dict[str, object]:
    """The Linears inside the transformer layers (attention projections and feed-forward), by module name."""
    import torch

    return {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layer." in name}

def _swap(model, name: str, module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent), attr, module)

def prepare(model, momentum: float = 0.05):
    """Wrap every encoder Linear for fake quantization (in place); returns the model."""
    wrapper = _fake_quant_modules()
    linears = encoder_linears(model)
    if not linears:
        raise QatError(f"no Linear layers found inside the transformer layers of a {model.config.model_type} model")
    for name, linear in linears.items():
        _swap(model, name, wrapper(linear, momentum))
    return model

def convert(model) -> dict[str, dict]:
    """Remove the wrappers (in place), returning each Linear's input scale and zero point by module name."""
    wrapper = _fake_quant_modules()
    scales = {}
    for name, module in list(model.named_modules()):
        if isinstance(module, wrapper):
            if not bool(module.input_min.isfinite()):
                raise QatError(f"{name} saw no input while training: its range is unknown")
            scale, zero_point = module.input_qparams()
            scales[name] = {"scale": float(scale), "zero_point": zero_point}
            _swap(model, name, module.linear)
    return scales

def torch_isfinite(value) -> bool:
    import torch

    return bool(torch.isfinite(value).all())

def quantization_aware(start: str, teacher: str, data, out: Path, config: QatConfig = QatConfig()) -> dict:
    """Fine-tune the classifier `start` (a student or the teacher) with fake INT8 quantization, distilling from
    `teacher` on `data` (a bench DataSpec); write the checkpoint and qat.json to `out`. Returns its manifest."""
    from ..artifacts import check_max_length
    from ..cache import is_complete, read_manifest
    from ..data import in_label_space, load_dataset
    from ..distill import DistillConfig, teacher_targets, train_student, transfer_set
    from ..models import load_classifier, quiet_transformers, resolve
    from ..techniques.base import content_key
    from ..training import TrainConfig, evaluate_splits, save_classifier

    out = Path(out)
    recipe = {"start": str(Path(resolve(start)).resolve()), "start_key": content_key(Path(resolve(start))),
              "teacher_key": content_key(Path(resolve(teacher))), "data": asdict(data), "config": asdict(config)}
    if is_complete(out):
        manifest = read_manifest(out)
        if manifest.get("recipe") == json.loads(json.dumps(recipe)):
            return manifest
        from ..errors import OutputError

        raise OutputError(f"{out} holds another quantization-aware training; choose another --out")
    quiet_transformers()
    dataset = load_dataset(data.source, data.text_column, data.label_column, data.split_column, data.seed)
    teacher_model, tokenizer, labels = load_classifier(teacher)
    model, _, start_labels = load_classifier(start)
    if start_labels != labels:
        raise QatError(f"{start} and the teacher {teacher} have different labels")
    dataset = in_label_space(dataset, labels, teacher)
    max_length = check_max_length(Path(resolve(teacher)), config.max_length)
    transfer, labelled = transfer_set(dataset, config.augment, tokenizer.mask_token, config.seed)
    targets = teacher_targets(recipe["teacher_key"], teacher_model, tokenizer, transfer["train"].texts, max_length)
    train = TrainConfig(epochs=config.epochs, lr=config.lr, max_length=max_length, seed=config.seed,
                        precision="fp32")  # bf16 autocast would blur the simulated int8 grid
    distill_config = replace(DistillConfig(), alpha=config.alpha, temperature=config.temperature, train=train)
    before = evaluate_splits(model, tokenizer, dataset, max_length)
    prepare(model, config.momentum)
    trained = train_student(model, tokenizer, transfer, targets, distill_config,
                            f"quantization-aware training of {Path(start).name}", labelled=labelled)
    simulated = evaluate_splits(model, tokenizer, dataset, max_length)  # the fake-quantized model
    scales = convert(model)
    manifest = {"kind": "hf-classifier", "created_by": "slimformer qat", "recipe": recipe, "labels": labels,
                "max_length": max_length, **trained, "metrics": evaluate_splits(model, tokenizer, dataset, max_length),
                "simulated_int8_metrics": simulated, "start_metrics": before, "quantized_linears": len(scales)}
    save_classifier(model, tokenizer, out, manifest)
    write_json(out / QAT_FILE, {"weights": "per-channel symmetric int8 [-127, 127], scale = max|w| / 127",
                                "activations": "per-tensor asymmetric uint8", "inputs": scales})
    return manifest

__all__ = ["QAT_FILE", "QatConfig", "QatError", "convert", "encoder_linears", "prepare", "quantization_aware"]
