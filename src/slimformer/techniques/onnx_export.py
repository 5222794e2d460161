"""`onnx`: export a Hugging Face model, its task's head (models.task_head), with torch.onnx.export (one file).

The TorchScript exporter (dynamo=False) is used because its graph gets ORT's full transformer fusion
(Attention included); the dynamo export does not (FINDINGS.md). The build checks the exported logits
against PyTorch on real texts and refuses an export beyond `tolerance`.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..errors import first_line
from ..models import load_model, task_head
from .base import Artifact, BuildContext, BuildError, TechniqueConfig, register

INPUT_ORDER = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class OnnxExportConfig(TechniqueConfig):
    changes_weights = False
    name = "onnx"
    inputs = ("hf",)
    output = "onnx"
    libraries = ("torch", "transformers", "onnx")
    opset: int = 17
    tolerance: float = 1e-4  # max abs output difference to PyTorch on the check texts (logits or vectors)

    def check_result(self, check: dict) -> None:
        if check["max_abs_diff"] > self.tolerance:
            moved = (f"labels flipped on {100 * check['label_flip_rate']:.1f}%" if "label_flip_rate" in check else
                     f"lowest cosine {check['min_cosine']:.4f}") + f" of {check['n']} texts"
            raise BuildError(f"onnx: exported outputs differ from PyTorch by {check['max_abs_diff']:.2e}, "
                             f"above the tolerance {self.tolerance:.0e} ({moved})")


@register(OnnxExportConfig)
def export_onnx(config: OnnxExportConfig, source: Artifact, out: Path, context: BuildContext) -> dict:
    import torch

    if source.steps_changing_weights():
        raise BuildError(f"onnx: export a float model; {source.path} was made by "
                         f"{', '.join(source.steps_changing_weights())}")
    task = source.task
    # eager attention: the SDPA graph hides the attention pattern from ORT's Attention fusion
    model, tokenizer, _ = load_model(str(source.path), task, attn_implementation="eager")
    model = model.float().eval()
    accepted = set(inspect.signature(model.forward).parameters)
    names = [n for n in INPUT_ORDER if n in tokenizer.model_input_names and n in accepted]
    sample = tokenizer(["a short example text", "and a second, somewhat longer example text"], padding=True,
                       return_tensors="pt")
    head = task_head(model, task, source.pooling)

    class Positional(torch.nn.Module):  # positional inputs in a fixed order, the task's output out
        def __init__(self) -> None:
            super().__init__()
            self.head = head

        def forward(self, *args):
            return self.head(**dict(zip(names, args, strict=True)))

    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {
        task.output: {0: "batch", 1: "sequence"} if task.per_token else {0: "batch"}}
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings about Python control flow on shapes
            torch.onnx.export(Positional(), tuple(sample[n] for n in names), str(out / "model.onnx"),
                              input_names=names, output_names=[task.output], dynamic_axes=axes,
                              opset_version=config.opset, dynamo=False)
    except Exception as e:
        arch = ", ".join(model.config.architectures or [type(model).__name__])
        raise BuildError(f"onnx: the exporter cannot handle {arch}: {first_line(e)}") from None
    return {"opset": config.opset, "inputs": names, "output": task.output}
