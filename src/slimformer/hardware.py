"""The machine fingerprint that goes into every result: CPU, instruction set, cores, GPU, versions."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from functools import cache
from typing import Any

# /proc/cpuinfo flag -> name shown to users
ISA_FLAGS = {
    "avx2": "AVX2",
    "fma": "FMA",
    "avx512f": "AVX-512",
    "avx512_vnni": "AVX512-VNNI",
    "avx_vnni": "AVX-VNNI",
    "avx512_bf16": "AVX512-BF16",
    "avx512_fp16": "AVX512-FP16",
    "amx_tile": "AMX",
    "amx_bf16": "AMX-BF16",
    "amx_int8": "AMX-INT8",
}

LIBRARIES = ("torch", "transformers", "tokenizers", "numpy", "onnx", "onnxruntime", "openvino",
             "optuna", "bitsandbytes", "onnxruntime-gpu", "nvidia-ml-py")


def _cpuinfo() -> tuple[str, set[str]]:
    """Model name and ISA flags of the first CPU listed in /proc/cpuinfo."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            fields = dict(line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines() if ":" in line)
    except OSError:
        return model, flags
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    return fields.get("model name", model), set(fields.get("flags", "").split())


def cores_available() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


# where a Linux machine shows an NVIDIA driver; without any of them there is no CUDA device to ask about
NVIDIA_DEVICE_FILES = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/dxg")


def nvidia_driver_present() -> bool:
    system = platform.system()
    return system == "Windows" or (system == "Linux" and any(os.path.exists(p) for p in NVIDIA_DEVICE_FILES))


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _visible_devices() -> list[str] | None:
    """CUDA_VISIBLE_DEVICES as a list (None: unset, every device visible). NVML ignores it; CUDA honours it."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    devices = [d.strip() for d in value.split(",") if d.strip()]
    return devices[:devices.index("-1")] if "-1" in devices else devices


def nvml_handle(pynvml):
    """NVML's handle of the first GPU CUDA sees (NVML numbers every device; CUDA_VISIBLE_DEVICES may hide some)."""
    first = (_visible_devices() or ["0"])[0]
    return pynvml.nvmlDeviceGetHandleByIndex(int(first)) if first.isdigit() else \
        pynvml.nvmlDeviceGetHandleByUUID(first)


def _gpu_from_nvml() -> dict[str, Any] | None:
    """The first visible NVIDIA GPU as NVML sees it (nvidia-ml-py), or None when NVML is not installed or finds
    none."""
    visible = _visible_devices()
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        count = pynvml.nvmlDeviceGetCount() if visible is None else len(visible)
        if not count:
            return None
        handle = nvml_handle(pynvml)
        major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
        cuda = pynvml.nvmlSystemGetCudaDriverVersion()
        return {"name": _text(pynvml.nvmlDeviceGetName(handle)),
                "memory_mb": round(pynvml.nvmlDeviceGetMemoryInfo(handle).total / 2**20),
                "driver": _text(pynvml.nvmlSystemGetDriverVersion()),
                "cuda_driver": f"{cuda // 1000}.{cuda % 1000 // 10}",
                "compute_capability": f"{major}.{minor}", "count": count, "source": "nvml"}
    except (pynvml.NVMLError, ValueError, TypeError):
        return None
    finally:
        pynvml.nvmlShutdown()


def _gpu_from_torch() -> dict[str, Any] | None:
    """The first CUDA device as torch sees it, or None (torch not installed, a CPU build, or no device)."""
    import importlib.util

    if "torch" not in sys.modules and importlib.util.find_spec("torch") is None:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    driver = None
    try:  # "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15 ..."
        with open("/proc/driver/nvidia/version") as f:
            driver = next((w for w in f.readline().split() if w[:1].isdigit() and "." in w), None)
    except OSError:
        pass
    return {"name": props.name, "memory_mb": round(props.total_memory / 2**20), "driver": driver,
            "cuda_driver": None, "compute_capability": f"{props.major}.{props.minor}",
            "count": torch.cuda.device_count(), "source": "torch"}


def _gpu_execution_providers() -> list[str]:
    """ONNX Runtime's GPU execution providers usable here: CUDA with onnxruntime-gpu, TensorRT when its library is
    there too (onnxruntime-gpu lists TensorRT even without it, and would fall back at session creation)."""
    import ctypes.util
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None:
        return []
    import onnxruntime

    available = onnxruntime.get_available_providers()
    out = [p for p in ("CUDAExecutionProvider",) if p in available]
    if "TensorrtExecutionProvider" in available and (importlib.util.find_spec("tensorrt") is not None
                                                     or ctypes.util.find_library("nvinfer")):
        out.append("TensorrtExecutionProvider")
    return out


@cache
def gpu() -> dict[str, Any] | None:
    """The first CUDA GPU (name, memory_mb, driver, cuda_driver, compute_capability, count, source, and the ONNX
    Runtime GPU execution providers usable with it), or None.

    Works in every command: NVML first where nvidia-ml-py is installed, then torch where torch is installed. On a
    Linux machine without an NVIDIA driver nothing is imported (torch's import alone costs seconds)."""
    if not nvidia_driver_present() or _visible_devices() == []:  # no driver, or every GPU hidden from CUDA
        return None
    info = _gpu_from_nvml() or _gpu_from_torch()
    if info is not None:
        info["execution_providers"] = _gpu_execution_providers()
    return info


def gpu_text(info: dict | str | None) -> str:
    """A fingerprint's GPU in one phrase (results written before the GPU was a record held only its name)."""
    if not info:
        return "none"
    if isinstance(info, str):
        return info
    parts = [f"{info['memory_mb'] / 1024:.0f} GiB", f"compute capability {info['compute_capability']}"]
    parts += [f"driver {info['driver']}"] if info.get("driver") else []
    count = f"{info['count']} x " if info.get("count", 1) > 1 else ""
    return f"{count}{info['name']} ({', '.join(parts)})"


@cache
def cpu() -> dict[str, Any]:
    model, flags = _cpuinfo()
    return {
        "model": model,
        "arch": platform.machine(),
        "isa": [name for flag, name in ISA_FLAGS.items() if flag in flags],
        "cores": cores_available(),
    }


def fingerprint(threads: int | None = None) -> dict[str, Any]:
    """Everything needed to judge whether two results are comparable."""
    info = {
        "cpu": cpu(),
        "os": f"{platform.system()} {platform.release()}",
        "gpu": dict(gpu()) if gpu() else None,
        "libraries": library_versions(),
    }
    if threads is not None:
        info["threads"] = threads
    return info


def has_isa(name: str) -> bool:
    return name in cpu()["isa"]
