"""Resident memory of this process (Linux /proc and getrusage), and peak VRAM where CUDA is used."""

from __future__ import annotations

import sys


def _status_mb(field: str) -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def rss_mb() -> float:
    return _status_mb("VmRSS")


def peak_rss_mb() -> float:
    """Peak resident set size of this process (VmHWM).

    Not getrusage's ru_maxrss: that survives fork+exec, so a worker would report its parent's peak.
    """
    return _status_mb("VmHWM")


def peak_vram_mb() -> float | None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return None
