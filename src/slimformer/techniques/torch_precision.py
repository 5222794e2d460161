"""PyTorch-side weight techniques: `torch-int8-dynamic`, `fp16`, `bf16`, `nf4`.

Each writes a checkpoint the torch runtime loads: int8 as a quantized state dict (loaded with
weights_only=True), fp16/bf16 as half-width safetensors, nf4 through transformers' bitsandbytes
integration (4-bit NF4 with double quantization; the classifier head stays in float).
`fp16` on an ONNX model converts it with ORT's float16 converter, keeping unsafe ops in float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..models import INT8_STATE, load_model, quantize_int8_dynamic
from .base import Artifact, BuildContext, BuildError, TechniqueConfig, onnx_path, register


@dataclass(frozen=True)
class TorchInt8Config(TechniqueConfig):
    name = "torch-int8-dynamic"
    libraries = ("torch", "transformers")
    inputs = ("hf",)
    output = "torch-int8"


@dataclass(frozen=True)
class Fp16Config(TechniqueConfig):
    name = "fp16"
    libraries = ("torch", "transformers", "onnxruntime", "onnx")  # hf: torch cast; onnx: ORT's converter
    inputs = ("hf", "onnx")


@dataclass(frozen=True)
class Bf16Config(TechniqueConfig):
    name = "bf16"
    libraries = ("torch", "transformers")
    inputs = ("hf",)


@dataclass(frozen=True)
class Nf4Config(TechniqueConfig):
    name = "nf4"
    libraries = ("torch", "transformers", "bitsandbytes")
    inputs = ("hf",)
    double_quant: bool = True
    keep: tuple[str, ...] = ("classifier",)  # modules kept in float (bnb's CPU kernel needs blocked shapes)


def _float_model(source: Artifact):
    if source.steps_changing_weights():
        raise BuildError(f"start from a float model; {source.path} was made by "
                         f"{', '.join(source.steps_changing_weights())}")
    model, _, _ = load_model(str(source.path), source.task)
    return model


@register(TorchInt8Config)
def torch_int8(config: TorchInt8Config, source: Artifact, out: Path, context: BuildContext) -> dict:
    import torch

    model = quantize_int8_dynamic(_float_model(source))
    model.config.save_pretrained(out)
    torch.save(model.state_dict(), out / INT8_STATE)
    n = sum(1 for m in model.modules() if type(m).__name__ == "Linear" and "quantized" in type(m).__module__)
    return {"quantized_linear_layers": n}


def _save_cast(source: Artifact, out: Path, dtype) -> dict:
    model = _float_model(source).to(dtype)
    model.save_pretrained(out)
    return {"dtype": str(dtype).removeprefix("torch.")}


@register(Bf16Config)
def bf16(config: Bf16Config, source: Artifact, out: Path, context: BuildContext) -> dict:
    import torch

    return _save_cast(source, out, torch.bfloat16)


@register(Fp16Config)
def fp16(config: Fp16Config, source: Artifact, out: Path, context: BuildContext) -> dict:
    import torch

    if source.format == "hf":
        return _save_cast(source, out, torch.float16)
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(onnx_path(source))), keep_io_types=True,
                                     op_block_list=DEFAULT_OP_BLOCK_LIST)
    onnx.save(model, str(out / "model.onnx"))
    return {"dtype": "float16", "kept_in_float32": sorted(DEFAULT_OP_BLOCK_LIST)}


@register(Nf4Config)
def nf4(config: Nf4Config, source: Artifact, out: Path, context: BuildContext) -> dict:
    import torch
    import transformers
    from transformers import BitsAndBytesConfig

    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise BuildError("nf4 needs bitsandbytes and accelerate: pip install 'slimformer[nf4]'") from None
    _float_model(source)  # refuses already-quantized input
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                      bnb_4bit_use_double_quant=config.double_quant,
                                      bnb_4bit_compute_dtype=torch.float32, llm_int8_skip_modules=list(config.keep))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    auto = getattr(transformers, source.task.auto_class)
    model = auto.from_pretrained(str(source.path), quantization_config=quantization, device_map=device)
    model.save_pretrained(out)
    n = sum(1 for m in model.modules() if type(m).__name__ == "Linear4bit")
    return {"nf4_linear_layers": n, "double_quant": config.double_quant, "kept_in_float": list(config.keep)}
