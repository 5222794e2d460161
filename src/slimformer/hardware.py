"""The machine fingerprint that goes into every result: CPU, instruction set, cores, GPU, versions."""

from __future__ import annotations

import importlib.metadata
import os
import platform
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
             "optuna", "bitsandbytes")


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


def gpu() -> str | None:
    """Name of the first CUDA device, or None. Only asks torch when it is already imported."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return None


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
        "gpu": gpu(),
        "libraries": library_versions(),
    }
    if threads is not None:
        info["threads"] = threads
    return info


def has_isa(name: str) -> bool:
    return name in cpu()["isa"]
