"""Resident memory of this process (Linux /proc), and peak VRAM where a GPU is used (torch's allocator, NVML)."""

from __future__ import annotations

import sys
import threading


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
    """Peak GPU memory torch's CUDA allocator handed out in this process (None when torch never used the GPU)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return None


class GpuMemorySampler:
    """Peak GPU memory in use above what it was when sampling started, as NVML sees the device: the CUDA context,
    allocator caches and ONNX Runtime's arena included, which torch's allocator figure misses. Sampled every
    `interval` s on a thread; started before the model loads, in a process of its own (one variant at a time).
    `peak_mb()` is None where NVML is not installed or sees no GPU."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval, self.peak, self.base = interval, None, None
        self._stop = threading.Event()
        try:
            import pynvml

            from ..hardware import nvml_handle

            pynvml.nvmlInit()
            self._handle = nvml_handle(pynvml)
            self._used = lambda: pynvml.nvmlDeviceGetMemoryInfo(self._handle).used
            self.base = self.peak = self._used()
        except Exception:  # ImportError, NVMLError: no figure, not a zero
            return
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._used())

    def peak_mb(self) -> float | None:
        if self.base is None:
            return None
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._used())
        return round((self.peak - self.base) / 2**20, 1)
