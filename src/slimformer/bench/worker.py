"""One variant, measured in a fresh process: `python -m slimformer.bench.worker SPEC_JSON`.

A fresh process per variant is what keeps thread pools (OpenMP, ORT, OpenVINO) that keep spinning
after a run from slowing the next variant, and makes peak RSS belong to this variant alone.
Protocol: JSON lines on stdout ({"event": "progress"|"result"|"error", ...}); anything the
libraries print goes to stderr.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(spec: dict, emit) -> None:
    from ..data import load_dataset
    from ..errors import SlimformerError, disk_full
    from ..hardware import fingerprint, nvidia_driver_present
    from .memory import GpuMemorySampler, peak_rss_mb, peak_vram_mb, rss_mb

    try:
        from ..cache import dir_size_mb
        from ..runtimes import load_predictor
        from . import scenarios

        settings = spec["settings"]
        last = [0.0]

        def progress(stage: str, done: int, total: int) -> None:
            now = time.monotonic()
            if done == total or now - last[0] > 0.2:
                last[0] = now
                emit({"event": "progress", "stage": stage, "done": done, "total": total})

        data = spec["data"]
        dataset = load_dataset(data["source"], data["text_column"], data["label_column"], data["split_column"],
                               data["seed"])
        rss_before = rss_mb()
        nvidia = nvidia_driver_present()  # NVML's counters only where a driver is (no torch import to find out)
        vram = GpuMemorySampler() if nvidia else None
        progress("loading", 0, 1)
        started = time.perf_counter()
        # the run's token limit, unless the variant sets its own
        options = {**({"max_length": settings["max_length"]} if settings["max_length"] else {}), **spec["options"]}
        predictor = load_predictor(spec["model"], spec["runtime"], spec["threads"], **options)
        load_s = time.perf_counter() - started
        progress("loading", 1, 1)

        run = scenarios.Run(predictor, dataset, settings, spec, progress, gpu=nvidia)
        parts = {}
        for name in settings["scenarios"]:  # each returns the part of the result it owns
            parts |= scenarios.SCENARIOS[name].run(run)
        files = predictor.model_files()
        emit({"event": "result", "result": {
            "predictor": predictor.describe(),
            **parts,
            "size_mb": round(sum(dir_size_mb(f) for f in files), 3) if files else None,
            "memory": {"rss_before_load_mb": round(rss_before, 1), "peak_rss_mb": round(peak_rss_mb(), 1),
                       "peak_vram_mb": peak_vram_mb(), "peak_vram_nvml_mb": vram.peak_mb() if vram else None},
            "load_s": round(load_s, 3),
            "machine": fingerprint(spec["threads"]),
        }})
    except SlimformerError as e:
        emit({"event": "error", "message": str(e)})
    except OSError as e:
        if not (full := disk_full(e)):
            raise
        where = full.filename or os.path.dirname(spec["latencies_path"])
        emit({"event": "error", "message": f"{full.strerror} writing {where}", "kind": "disk_full"})


if __name__ == "__main__":
    # keep the protocol on the real stdout; send everything else (library prints) to stderr
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def emit(event: dict) -> None:
        protocol.write(json.dumps(event) + "\n")

    main(json.loads(sys.argv[1]), emit)
