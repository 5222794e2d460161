"""Energy of a measured scenario: CPU package energy from RAPL (`/sys/class/powercap`), GPU energy from NVML.

Both are cumulative hardware counters read before and after the scenario; what they cover is the whole CPU package
and the whole GPU (idle draw and every other process on them included), so a figure is the machine's cost of the
work while it ran, not the model's share of it. A counter that cannot be read here is reported with the reason
(`null`, never 0): most VMs expose no RAPL, and since Linux 5.10 `energy_uj` is readable by root only.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..hardware import nvml_handle

POWERCAP = Path("/sys/class/powercap")


class Unreadable(Exception):
    """A counter this machine does not give; the message says why, in words a report can print."""


class RaplCounter:
    """The package zones of Intel RAPL (also what AMD's driver exposes): `intel-rapl:N/energy_uj` in µJ, which wraps
    at `max_energy_range_uj`. Sub-zones (core, uncore, dram) and `psys` are left out: they overlap the packages."""

    source = "rapl"

    def __init__(self, root: Path = POWERCAP) -> None:
        root = Path(root)
        zones = sorted(z for z in root.glob("intel-rapl:*") if z.name.count(":") == 1
                       and _read(z / "name", "").startswith("package"))
        if not zones:
            raise Unreadable(f"no RAPL package counters here ({root}/intel-rapl:N absent: a VM or a non-Linux host)")
        self.zones = zones
        try:
            self.ranges = [int(_read(z / "max_energy_range_uj")) for z in zones]
            self.read()
        except (OSError, ValueError) as e:
            reason = "readable by root only" if isinstance(e, PermissionError) else f"unreadable ({e})"
            raise Unreadable(f"RAPL energy_uj {reason}") from None

    def read(self) -> list[int]:
        return [int(_read(z / "energy_uj")) for z in self.zones]

    def joules(self, before: list[int], after: list[int]) -> float:
        """Energy between two readings, each zone's wrap-around undone (at most one wrap between readings: at
        ~260 J per wrap per package, minutes apart even at full load)."""
        total = 0
        for b, a, span in zip(before, after, self.ranges, strict=True):
            total += a - b if a >= b else span - b + a
        return total / 1e6


class NvmlCounter:
    """The GPU's total energy since the driver loaded, in mJ (NVML, Volta and later): the first GPU CUDA sees."""

    source = "nvml"

    def __init__(self) -> None:
        try:
            import pynvml
        except ImportError:
            raise Unreadable("nvidia-ml-py is not installed: pip install 'slimformer[nvml]'") from None
        self.nvml = pynvml
        try:
            pynvml.nvmlInit()
            self.handle = nvml_handle(pynvml)
            self.read()
        except (pynvml.NVMLError, ValueError) as e:
            raise Unreadable(f"NVML gives no energy counter here ({e})") from None

    def read(self) -> int:
        return self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)

    def joules(self, before: int, after: int) -> float:
        return (after - before) / 1e3


def _read(path: Path, default: str | None = None) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        if default is None:
            raise
        return default


class EnergyMeter:
    """Reads every counter this machine gives around a scenario; `not_readable` says why the others are missing.

    `gpu`: whether to read NVML (a machine with an NVIDIA GPU); without one there is nothing to report for it."""

    def __init__(self, rapl_root: Path = POWERCAP, gpu: bool = False) -> None:
        self.counters, self.not_readable = [], {}
        makers = [lambda: RaplCounter(rapl_root)] + ([NvmlCounter] if gpu else [])
        for source, make in zip(("rapl", "nvml"), makers, strict=False):
            try:
                self.counters.append(make())
            except Unreadable as e:
                self.not_readable[source] = str(e)

    def start(self) -> tuple[float, list]:
        return time.perf_counter(), [c.read() for c in self.counters]

    def stop(self, started: tuple[float, list], texts: int) -> dict:
        """Joules per 1,000 texts per source and summed over the sources read (null when none was), the mean power,
        and the reason for each source not read. A counter that did not move is not readable, not zero."""
        after = [c.read() for c in self.counters]
        seconds = time.perf_counter() - started[0]
        sources, missing = {}, dict(self.not_readable)
        for counter, before, now in zip(self.counters, started[1], after, strict=True):
            joules = counter.joules(before, now)
            if joules <= 0:
                missing[counter.source] = f"the {counter.source} counter did not advance in {seconds:.2f} s"
                continue
            sources[counter.source] = {"joules": round(joules, 3), "watts": round(joules / seconds, 2),
                                       "joules_per_1k_texts": round(1000 * joules / texts, 3)}
        total = sum(s["joules_per_1k_texts"] for s in sources.values()) if sources else None
        return {"texts": texts, "seconds": round(seconds, 3),
                "joules_per_1k_texts": round(total, 3) if total is not None else None,
                "sources": sources, "not_readable": missing}


def energy_text(energy: dict | None) -> str:
    """A report cell: `123.4 J (rapl+nvml)`, or why it is not known."""
    if not energy:
        return "-"
    if energy["joules_per_1k_texts"] is None:
        return "not readable here"
    only = " only" if energy["not_readable"] else ""  # a source missing: the sum is partial, and says so
    return f"{energy['joules_per_1k_texts']:.4g} J ({'+'.join(energy['sources'])}{only})"
