"""Quantization-aware training: fine-tune with fake INT8 quantization, then export an INT8 ONNX model with the
scales the training settled on.

Every Linear of the encoder is wrapped while training: its weight is fake-quantized per output channel,
symmetric int8 (scale = max|w| / 127, recomputed from the current weight at every step), its input per tensor,
asymmetric uint8 (the u8s8 kernels VNNI CPUs run fastest), from a moving average of the batches' min and max.
Gradients pass straight through the rounding. The loss is distillation from the teacher's cached logits on the
transfer set (distill.train_student), so a student or the teacher itself can be trained this way; the accuracy
after each epoch (on validation, or on the selection slice the student was chosen on) is that of the simulated
INT8 model. Afterwards the wrappers are removed: the
checkpoint is a standard HF model with the trained weights, plus `qat.json` holding every Linear's input scale
and zero point. The `int8-qat` technique (techniques_qat.py) writes those, and the weights' per-channel scales,
as QuantizeLinear/DequantizeLinear pairs into the exported ONNX graph, which ONNX Runtime runs as integer
matmuls and OpenVINO as its own INT8.

That graph is not fused (ORT's Attention fusion works on float graphs), so it runs at the speed of static INT8.
The `dynamic` scheme instead simulates exactly what `ort-int8-dynamic` (the fused graph, quantized by ORT's
`quantize_dynamic`) computes, so the trained checkpoint is built with that recipe and runs at its speed:
- every Linear (encoder, pooler, classifier) has its input quantized per text from the text's own range (uint8,
  DynamicQuantizeLinear; padding left out, as at batch 1) and its weight per tensor (int8, symmetric,
  scale = max|w| / 127; uint8 from min and max on CPUs without VNNI, as the recipe picks), one scale for the
  query, key and value weights, which ORT fuses into one QAttention;
- the embedding tables and the embeddings' LayerNorm weight and bias are stored as uint8 per tensor
  (asymmetric, from their min and max), as QEmbedLayerNormalization stores them;
- after `cls-only` the last layer runs its attention output and feed-forward Linears on the [CLS] row alone, so
  their input ranges are that row's.
Those quantizers are functions of the float weights ORT reads, so nothing but the checkpoint is needed.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..cache import write_json
from ..errors import SlimformerError

QAT_FILE = "qat.json"
WEIGHT_MAX = 127  # symmetric int8 weights in [-127, 127]
SCHEMES = ("static", "dynamic")  # the INT8 model is built as: int8-qat (QDQ, trained scales); ort-int8-dynamic
QKV = ({"query", "key", "value"}, {"q_lin", "k_lin", "v_lin"})  # BERT's, DistilBERT's: ORT fuses them into one

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
    scheme: str = "dynamic"  # see SCHEMES
    weight_type: str = "int8"  # dynamic scheme: the weights ort-int8-dynamic stores (recipes.int8_weight_type)
    select_fraction: float = 0.0  # > 0: choose the epoch on this slice of the training texts (DistillConfig's)

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

    class DynamicFakeQuantLinear(torch.nn.Module):
        """A Linear as ORT's dynamic INT8 runs it: input per text (uint8, its own range), weight per tensor (int8,
        symmetric), the scale shared by the Linears of `group` (query/key/value: one fused weight in ORT)."""

        def __init__(self, linear, group: tuple, mask: dict, first_row: bool = False, weights: str = "int8"):
            super().__init__()
            self.linear, self.first_row, self.weights = linear, first_row, weights
            self.group, self.mask = group, mask  # plain attributes: not submodules, not state

        def forward(self, x):
            x = x.float()
            mask = self.mask.get("attention_mask")
            rows = (x[:, :1] if self.first_row and x.dim() == 3 else x).detach().reshape(x.shape[0], -1)
            if self.first_row:  # after cls-only the graph runs this Linear on the [CLS] row alone
                low, high = rows.amin(1), rows.amax(1)
            elif mask is not None and x.dim() == 3 and tuple(mask.shape) == tuple(x.shape[:2]):
                keep = mask.bool().unsqueeze(-1).expand_as(x).reshape(x.shape[0], -1)  # padding: not in the range
                low = rows.masked_fill(~keep, float("inf")).amin(1)
                high = rows.masked_fill(~keep, float("-inf")).amax(1)
            else:
                low, high = rows.amin(1), rows.amax(1)
            shape = (-1,) + (1,) * (x.dim() - 1)
            x = straight_through(x, fake_uint8(x, low.view(shape), high.view(shape)))
            weight, held = self.linear.weight.float(), [m.weight.detach() for m in self.group]
            if self.weights == "int8":
                quantized = fake_int8(weight, torch.stack([w.abs().max() for w in held]).max())
            else:  # uint8 weights (CPUs without VNNI): asymmetric over the group's range
                quantized = fake_uint8(weight, torch.stack([w.min() for w in held]).min(),
                                       torch.stack([w.max() for w in held]).max(), initializer=True)
            weight = straight_through(weight, quantized)
            return F.linear(x, weight, None if self.linear.bias is None else self.linear.bias.float())

    class FakeUInt8(torch.nn.Module):
        """A parametrization: the tensor as ORT stores an initializer in uint8 (per tensor, from its min and max)."""

        def forward(self, value):
            held = value.detach()
            return straight_through(value, fake_uint8(value, held.min(), held.max(), initializer=True))

    return FakeQuantLinear, DynamicFakeQuantLinear, FakeUInt8

def straight_through(value, quantized):
    """`quantized` forward, identity backward (the straight-through estimator)."""
    return value + (quantized - value).detach()

def fake_uint8(x, low, high, initializer: bool = False):
    """Quantize-dequantize to asymmetric uint8 over [low, high] widened to hold 0 (scale = range / 255, zero point
    = round(-low / scale)): ONNX DynamicQuantizeLinear computes it in float32; ORT's quantizer, for initializers,
    in float64, storing the scale as float32 (`initializer`)."""
    import torch

    low, high = low.clamp(max=0.0), high.clamp(min=0.0)
    if initializer:
        low, high = low.double(), high.double()
    scale = ((high - low) / 255.0).clamp_min(1e-8)
    zero = torch.round(-low / scale).clamp(0, 255).float()
    scale = scale.float()
    return (torch.clamp(torch.round(x / scale) + zero, 0, 255) - zero) * scale

def fake_int8(weight, absmax):
    """Quantize-dequantize to symmetric int8 in [-127, 127] with scale absmax / 127 (ORT's int8 weights)."""
    import torch

    scale = (absmax / WEIGHT_MAX).clamp_min(1e-8)
    return torch.clamp(torch.round(weight / scale), -WEIGHT_MAX, WEIGHT_MAX) * scale

def encoder_linears(model) -> dict[str, object]:
    """The Linears inside the transformer layers (attention projections and feed-forward), by module name."""
    import torch

    return {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layer." in name}

def _swap(model, name: str, module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent), attr, module)

def recorded(config: QatConfig, used: bool = True) -> dict:
    """The settings a run records to resume by: without the scheme fields where the static scheme (or no QAT) is
    used, so runs made before the schemes existed still resume."""
    return {k: v for k, v in asdict(config).items() if ((used and config.scheme != "static") or
            k not in ("scheme", "weight_type")) and (k != "select_fraction" or v)}

def check_scheme(scheme: str) -> str:
    if scheme not in SCHEMES:
        raise QatError(f"unknown QAT scheme '{scheme}'; choose from {', '.join(SCHEMES)}")
    return scheme

def _qkv_groups(linears: dict[str, object]) -> dict[str, tuple]:
    """Each Linear's weight-scale group: its query/key/value siblings where it is one of them, else itself."""
    groups = {}
    for name in linears:
        parent, _, attr = name.rpartition(".")
        names = next((n for n in QKV if attr in n and all(f"{parent}.{s}" in linears for s in n)), {attr})
        groups[name] = tuple(linears[f"{parent}.{s}" if parent else s] for s in sorted(names))
    return groups

def _last_layer(linears: dict[str, object]) -> str:
    """The prefix of the last transformer layer's modules ("bert.encoder.layer.5.")."""
    found = [(int(m.group(2)), m.group(1)) for name in linears if (m := re.match(r"(.*\.layer\.)(\d+)\.", name))]
    index, prefix = max(found)
    return f"{prefix}{index}."

def prepare(model, momentum: float = 0.05, scheme: str = "dynamic", weight_type: str = "int8"):
    """Wrap the Linears for fake quantization (in place; `scheme`: see SCHEMES; `weight_type` int8 or uint8, the
    dynamic scheme's weights); returns the model."""
    import torch
    from torch.nn.utils import parametrize

    check_scheme(scheme)
    if weight_type not in ("int8", "uint8"):
        raise QatError(f"QAT weight type must be int8 or uint8, got '{weight_type}'")
    static, dynamic, uint8 = _fake_quant_modules()
    linears = encoder_linears(model)
    if not linears:
        raise QatError(f"no Linear layers found inside the transformer layers of a {model.config.model_type} model")
    if scheme == "static":
        for name, linear in linears.items():
            _swap(model, name, static(linear, momentum))
        return model
    linears = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    mask: dict = {}  # the batch's attention mask, for the wrappers to leave padding out of the ranges

    def remember_mask(module, args, kwargs):
        mask["attention_mask"] = kwargs.get("attention_mask")

    model._qat_mask_hook = model.register_forward_pre_hook(remember_mask, with_kwargs=True)
    last, groups = _last_layer(linears), _qkv_groups(linears)
    if not any(len(group) == 3 for group in groups.values()):
        raise QatError(f"dynamic QAT: no query/key/value projections found in a {model.config.model_type} model; "
                       "use --qat-scheme static")
    for name, group in groups.items():
        first_row = name.startswith(last) and len(group) == 1  # cls-only: all but the query/key/value projections
        _swap(model, name, dynamic(linears[name], group, mask, first_row, weight_type))
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Embedding) or (isinstance(module, torch.nn.LayerNorm) and
                                                      name.endswith("embeddings.LayerNorm")):
            for tensor in ("weight", "bias"):
                if getattr(module, tensor, None) is not None:
                    parametrize.register_parametrization(module, tensor, uint8())
    return model

def convert(model) -> dict[str, dict]:
    """Remove the fake quantization (in place), returning each Linear's input scale and zero point by module name
    (static scheme; the dynamic one has none: ORT computes them from each input)."""
    from torch.nn.utils import parametrize

    static, dynamic, _ = _fake_quant_modules()
    if hook := getattr(model, "_qat_mask_hook", None):
        hook.remove()
        del model._qat_mask_hook
    for module in list(model.modules()):
        if parametrize.is_parametrized(module):
            for tensor in list(module.parametrizations):
                parametrize.remove_parametrizations(module, tensor, leave_parametrized=False)
    scales = {}
    for name, module in list(model.named_modules()):
        if isinstance(module, dynamic):
            _swap(model, name, module.linear)
        elif isinstance(module, static):
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
              "teacher_key": content_key(Path(resolve(teacher))), "data": asdict(data), "config": recorded(config)}
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
    if config.select_fraction:  # the slice the student was chosen on: the epoch is chosen there too
        from ..data import with_selection

        dataset = with_selection(dataset, config.select_fraction, data.seed)
    max_length = check_max_length(Path(resolve(teacher)), config.max_length)
    transfer, labelled = transfer_set(dataset, config.augment, tokenizer.mask_token, config.seed)
    targets = teacher_targets(recipe["teacher_key"], teacher_model, tokenizer, transfer["train"].texts, max_length)
    train = TrainConfig(epochs=config.epochs, lr=config.lr, max_length=max_length, seed=config.seed,
                        precision="fp32")  # bf16 autocast would blur the simulated int8 grid
    distill_config = replace(DistillConfig(), alpha=config.alpha, temperature=config.temperature, train=train)
    before = evaluate_splits(model, tokenizer, dataset, max_length)
    prepare(model, config.momentum, config.scheme, config.weight_type)
    trained = train_student(model, tokenizer, transfer, targets, distill_config,
                            f"quantization-aware training of {Path(start).name}", labelled=labelled)
    simulated = evaluate_splits(model, tokenizer, dataset, max_length)  # the fake-quantized model
    quantized = sum(1 for m in model.modules() if hasattr(m, "linear"))
    scales = convert(model)
    manifest = {"kind": "hf-classifier", "created_by": "slimformer qat", "recipe": recipe, "labels": labels,
                "max_length": max_length, **trained, "metrics": evaluate_splits(model, tokenizer, dataset, max_length),
                "simulated_int8_metrics": simulated, "start_metrics": before, "quantized_linears": quantized}
    save_classifier(model, tokenizer, out, manifest)
    if config.scheme == "dynamic":
        write_json(out / QAT_FILE, {"scheme": "dynamic", "weight_type": config.weight_type, "build": "ort-int8-dynamic "
                                    f"(the fused graph, ORT quantize_dynamic, {config.weight_type} weights): it "
                                    "computes what training simulated"})
    else:
        write_json(out / QAT_FILE, {"scheme": "static", "weights": "per-channel symmetric int8 [-127, 127], "
                                    "scale = max|w| / 127", "activations": "per-tensor asymmetric uint8",
                                    "inputs": scales})
    return manifest

__all__ = ["QAT_FILE", "SCHEMES", "QatConfig", "QatError", "check_scheme", "convert", "encoder_linears", "fake_int8",
           "fake_uint8", "prepare", "quantization_aware", "recorded"]
