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


# throughput batch sizes: a GPU is only busy at large batches; on a CPU 32 is past the knee already
CPU_BATCH_SIZES = (1, 8, 32)
GPU_BATCH_SIZES = (1, 8, 32, 128, 256)
MISSING_CUDA_EP = ("this onnxruntime has no CUDA execution provider: pip uninstall -y onnxruntime && "
                   "pip install 'slimformer[gpu]' (onnxruntime-gpu) to add the ONNX Runtime CUDA variants")


def _has(isa: list[str], *names: str) -> bool:
    return any(n in isa for n in names)


def _vnni(isa: list[str]) -> bool:
    return _has(isa, "AVX512-VNNI", "AVX-VNNI", "AMX-INT8")


def _bf16_gpu(gpu: dict) -> bool:
    """bf16 tensor cores: compute capability 8.0 (Ampere) and later."""
    major = (gpu.get("compute_capability") or "0").partition(".")[0]
    return major.isdigit() and int(major) >= 8


def batch_sizes(gpu: dict | None) -> tuple[int, ...]:
    """Throughput batch sizes for this machine's matrix."""
    return GPU_BATCH_SIZES if gpu else CPU_BATCH_SIZES


def advice(cpu: dict | None = None, gpu: dict | None = None) -> list[str]:
    """What the fingerprint implies, one line each."""
    cpu = cpu or hardware.cpu()
    isa = cpu["isa"]
    lines = []
    if _vnni(isa):
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
    if gpu:
        eps = gpu.get("execution_providers") or []
        lines.append(f"CUDA GPU: {hardware.gpu_text(gpu)} — PyTorch fp32/fp16"
                     + ("/bf16" if _bf16_gpu(gpu) else " (no bf16: compute capability below 8.0)")
                     + " and NF4 (bitsandbytes) on the GPU; throughput up to batch "
                     f"{GPU_BATCH_SIZES[-1]}; energy from NVML.")
        lines.append("ONNX Runtime GPU providers: " + ", ".join(eps) + " (dynamic INT8 is measured there too: it is "
                     "often slower than fp16 on a GPU)" if eps else MISSING_CUDA_EP + ".")
    else:
        lines.append("no CUDA GPU: fp16 is no faster on CPU; NF4 (bitsandbytes) runs on CPU but is slower than FP32 "
                     "and is timed only when asked for.")
    lines.append(f"{cpu['cores']} cores: measure at 1 thread and at {cpu['cores']} threads.")
    return lines


def int8_weight_type(cpu: dict | None = None) -> str:
    """The weights of ort-int8-dynamic: int8 where VNNI runs u8s8 natively, uint8 elsewhere (u8s8 saturates in
    AVX2's 16-bit accumulation)."""
    return "int8" if _vnni((cpu or hardware.cpu())["isa"]) else "uint8"


def candidates(cpu: dict | None = None, gpu: dict | None = None, include_slow: bool = False) -> list[Candidate]:
    """The variant matrix for this machine, baseline first; with a GPU (hardware.gpu()) its variants follow the
    CPU ones, so one table compares both."""
    cpu = cpu or hardware.cpu()
    isa = cpu["isa"]
    weights = int8_weight_type(cpu)
    out = [
        Candidate("torch-fp32", "", "torch", "baseline: PyTorch FP32 eager"),
        Candidate("ort-fp32", ONNX, "onnxruntime", "ONNX Runtime FP32, graph optimization level all"),
        Candidate("ort-fused", FUSED, "onnxruntime", "offline transformer fusion: measured, not assumed"),
        Candidate("ort-int8-dynamic", f"{FUSED},int8-dynamic:weight_type={weights}", "onnxruntime",
                  f"dynamic INT8, {'QInt8' if weights == 'int8' else 'QUInt8'} weights"),
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
    if include_slow:
        out.append(Candidate("torch-nf4", "nf4", "torch", "bitsandbytes 4-bit NF4 (slow on CPU: shown for size)"))
        out.append(Candidate("ort-fp16", f"{ONNX},fp16", "onnxruntime", "ORT fp16 on CPU (no faster: shown for size)"))
    if gpu:
        out += _gpu_candidates(gpu)
    return out


def _gpu_candidates(gpu: dict) -> list[Candidate]:
    cuda = {"device": "cuda"}
    out = [Candidate("torch-fp32-cuda", "", "torch", "PyTorch FP32 on the GPU: the GPU's own baseline", cuda),
           Candidate("torch-fp16-cuda", "fp16", "torch", "PyTorch fp16 weights on the GPU (tensor cores)", cuda)]
    if _bf16_gpu(gpu):
        out.append(Candidate("torch-bf16-cuda", "bf16", "torch", "PyTorch bf16 weights on the GPU", cuda))
    out.append(Candidate("torch-nf4-cuda", "nf4", "torch", "bitsandbytes 4-bit NF4 with double quantization: about "
                         "a quarter of the weight memory; it dequantizes per matmul, so it is rarely faster", cuda))
    eps = gpu.get("execution_providers") or []
    if "CUDAExecutionProvider" in eps:
        out += [Candidate("ort-fp32-cuda", ONNX, "onnxruntime", "ONNX Runtime CUDA EP, FP32, IO binding", cuda),
                Candidate("ort-fp16-cuda", f"{ONNX},fp16", "onnxruntime", "ONNX Runtime CUDA EP, fp16 (numerically "
                          "unsafe ops kept in fp32), IO binding", cuda),
                Candidate("ort-int8-dynamic-cuda", f"{FUSED},int8-dynamic:weight_type=int8", "onnxruntime",
                          "dynamic INT8 on the CUDA EP, measured to show it honestly: its integer ops have few GPU "
                          "kernels (some run on the CPU), so it is usually slower than fp16 there", cuda)]
    if "TensorrtExecutionProvider" in eps:
        out.append(Candidate("ort-trt-fp16", ONNX, "onnxruntime", "ONNX Runtime TensorRT EP, FP16 engines (built at "
                             "first load, then cached)", {"device": "tensorrt"}))
    return out


def qat_candidates(scheme: str = "static", cpu: dict | None = None) -> list[Candidate]:
    """What a quantization-aware-trained model is built as (compress/qat.py): for the static scheme INT8 with its
    trained scales; for the dynamic one the matrix's own ort-int8-dynamic, whose computation training simulated."""
    if scheme == "dynamic":
        return [c for c in candidates(cpu) if c.name == "ort-int8-dynamic"]
    return [Candidate("ort-int8-qat", f"{ONNX},int8-qat", "onnxruntime",
                      "QAT INT8: QDQ with the trained scales, integer matmuls in ONNX Runtime"),
            Candidate("ov-int8-qat", "onnx,int8-qat", "openvino",  # OpenVINO 2026.4 crashes compiling it after cls-only
                      "QAT INT8: the QDQ model (every layer on every token) run by OpenVINO", {"precision": "f32"})]
