"""Which variants are worth building on this machine, and why: derived from the hardware fingerprint.

`doctor` prints this; the techniques benchmark (and later `optimize`) builds from it. Nothing else in
the code decides defaults from the instruction set.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import hardware


@dataclass(frozen=True)
class Candidate:
    name: str
    recipe: str  # "" = the model as it is
    runtime: str
    why: str
    options: dict = field(default_factory=dict)


# Every ONNX variant runs the layers after the last attention on the [CLS] row alone (exact: the build checks
# the logits; techniques/cls_only.py), after fusion where there is fusion.
ONNX = "onnx,cls-only"
FUSED = "onnx,ort-optimize,cls-only"


def _has(isa: list[str], *names: str) -> bool:
    return any(n in isa for n in names)


def advice(cpu: dict | None = None, gpu: str | None = None) -> list[str]:
    """What the fingerprint implies, one line each."""
    cpu = cpu or hardware.cpu()
    isa = cpu["isa"]
    lines = []
    if _has(isa, "AVX512-VNNI", "AVX-VNNI", "AMX-INT8"):
        lines.append("VNNI present: INT8 pays; quantize weights as QInt8 (signed), activations uint8 on ONNX "
                     "Runtime; OpenVINO runs int8-activation QDQ models fastest.")
    else:
        lines.append("no VNNI: INT8 matmuls have no fast path here and may not pay; measure before deploying.")
    if _has(isa, "AVX512-BF16", "AMX-BF16"):
        lines.append("BF16 present: bf16 variants (PyTorch bf16 weights, OpenVINO precision=bf16) are worth trying; "
                     "note OpenVINO picks bf16 by default here, so FP32 is requested explicitly.")
    else:
        lines.append("no BF16 instructions: bf16 would be emulated; bf16 variants skipped.")
    if _has(isa, "AMX"):
        lines.append("AMX present: PyTorch's oneDNN path uses it for bf16/int8, which makes the FP32 eager "
                     "baseline and bf16 unusually strong here.")
    lines.append(f"CUDA GPU: {gpu} — fp16 variants and the CUDA execution provider apply." if gpu else
                 "no CUDA GPU: fp16 is no faster on CPU; NF4 (bitsandbytes) runs on CPU but is slower than FP32 "
                 "and is timed only when asked for.")
    lines.append(f"{cpu['cores']} cores: measure at 1 thread and at {cpu['cores']} threads.")
    return lines


def candidates(cpu: dict | None = None, gpu: str | None = None, include_slow: bool = False) -> list[Candidate]:
    """The variant matrix for this machine, baseline first."""
    cpu = cpu or hardware.cpu()
    isa = cpu["isa"]
    vnni = _has(isa, "AVX512-VNNI", "AVX-VNNI", "AMX-INT8")
    weights = "int8" if vnni else "uint8"
    out = [
        Candidate("torch-fp32", "", "torch", "baseline: PyTorch FP32 eager"),
        Candidate("ort-fp32", ONNX, "onnxruntime", "ONNX Runtime FP32, graph optimization level all"),
        Candidate("ort-fused", FUSED, "onnxruntime", "offline transformer fusion: measured, not assumed"),
        Candidate("ort-int8-dynamic", f"{FUSED},int8-dynamic:weight_type={weights}", "onnxruntime",
                  f"dynamic INT8, {'QInt8' if vnni else 'QUInt8'} weights"),
        Candidate("ort-int8-static", f"{ONNX},int8-static", "onnxruntime",
                  "static INT8 QDQ, uint8 activations calibrated on the training split"),
        Candidate("ov-fp32", ONNX, "openvino", "OpenVINO with FP32 requested explicitly", {"precision": "f32"}),
        Candidate("ov-int8-static", f"{ONNX},int8-static:activation_type=int8", "openvino",
                  "static INT8 QDQ (ORT-made, int8 activations) run by OpenVINO", {"precision": "f32"}),
        Candidate("ov-int8", f"{ONNX},ov-int8", "openvino",
                  "OpenVINO's own INT8 (NNCF, transformer preset) calibrated on the training split",
                  {"precision": "f32"}),
        Candidate("torch-int8-dynamic", "torch-int8-dynamic", "torch", "PyTorch dynamic INT8 on nn.Linear"),
    ]
    if _has(isa, "AVX512-BF16", "AMX-BF16"):
        out += [Candidate("torch-bf16", "bf16", "torch", "PyTorch bf16 weights (BF16 instructions present)"),
                Candidate("ov-bf16", ONNX, "openvino", "OpenVINO bf16 inference precision", {"precision": "bf16"}),
                Candidate("ov-int8-bf16", f"{ONNX},ov-int8", "openvino",
                          "OpenVINO's own INT8, the operations left unquantized (softmax, layer norm...) in bf16",
                          {"precision": "bf16"})]
    if gpu:
        out += [Candidate("torch-fp16-cuda", "fp16", "torch", "fp16 on the GPU"),
                Candidate("ort-fp16-cuda", f"{ONNX},fp16", "onnxruntime", "ORT fp16 with the CUDA EP",
                          {"device": "cuda"})]
    if gpu or include_slow:
        out.append(Candidate("torch-nf4", "nf4", "torch", "bitsandbytes 4-bit NF4 (slow on CPU: shown for size)"))
    if include_slow and not gpu:
        out.append(Candidate("ort-fp16", f"{ONNX},fp16", "onnxruntime", "ORT fp16 on CPU (no faster: shown for size)"))
    return out
