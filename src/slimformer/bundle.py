"""Deployable bundles: one variant of an optimize run with everything `predict` (and a server) needs.

A bundle is a directory: the model file(s), the tokenizer, config where the runtime needs it, and
manifest.json (format, labels, max_length, the steps that made it, the runtime settings it was measured
with, its metrics, and provenance). `load_predictor(bundle)` uses the recorded runtime and options.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

from . import __version__
from .artifacts import open_artifact
from .cache import MANIFEST, atomic_dir, write_json
from .errors import OutputError, SlimformerError
from .metrics import merged_invariance


def _results(run: Path) -> dict:
    path = Path(run) / "results.json"
    if not path.is_file():
        raise SlimformerError(f"{run} is not an optimize run (no results.json)")
    results = json.loads(path.read_text())
    if "selection" not in results:
        raise SlimformerError(f"{run} has not finished its selection yet; run `slimformer optimize ... --resume`")
    return results


def _in_run(run: Path, recorded: str) -> Path:
    """A variant's directory as recorded or, for a run directory moved since, the same place inside `run`."""
    path = Path(recorded)
    parts = path.parts
    for anchor in ("variants", "distill"):  # where optimize puts what it builds
        if not path.exists() and anchor in parts:
            moved = Path(run).joinpath(*parts[len(parts) - 1 - parts[::-1].index(anchor):])
            if moved.exists():
                return moved
    return path


def export_bundle(run: Path, out: Path, variant: str | None = None, overwrite: bool = False) -> dict:
    """Copy `variant` (default: the recommended one) of an optimize run to `out`; returns its manifest."""
    results = _results(run)
    selection = results["selection"]
    name = variant or selection["recommended"]
    if name is None:
        closest = selection["closest"]["name"]
        raise SlimformerError(f"no variant of {run} met the budget, so none is recommended; pass --variant "
                              f"(the closest was {closest})")
    entries = {v["name"]: v for v in results["variants"]}
    if name not in entries:
        raise SlimformerError(f"{run} has no variant '{name}' (has: {', '.join(entries)})")
    entry, row = entries[name], next(r for r in selection["rows"] if r["name"] == name)
    artifact = open_artifact(_in_run(run, entry["model"]))
    if Path(out).exists() and not overwrite:
        raise OutputError(f"{out} exists already; choose another --out or pass --overwrite")
    files = artifact.deploy_files()
    manifest = {
        "format": artifact.format, "task": artifact.task.name, "labels": artifact.labels,
        **({"pooling": artifact.pooling} if artifact.pooling else {}), "max_length": entry["predictor"]["max_length"],
        "steps": artifact.manifest.get("steps", []), "source": artifact.manifest.get("source", str(artifact.path)),
        "runtime_settings": artifact.runtime_settings,
        "tokenizer_files": [f.name for f in artifact.tokenizer_files()],
        "bundle": {
            "variant": name, "runtime": entry["runtime"], "threads": entry["threads"], "options": entry["options"],
            "metrics": {"decision_split": row["decision_split"], "task": results.get("task", "classification"),
                        "metric": row["metric"], row["metric"]: row["quality"], "drop_points": row["drop_points"],
                        "splits": row["splits"], "speedup": row["speedup"],
                        "batch_invariance": merged_invariance([q["batch_invariance"]
                                                               for q in entry["quality"].values()]),
                        "latency_ms_end_to_end": entry["latency_ms"]["end_to_end"],
                        "size_mb": entry["size_mb"], "throughput": entry["throughput"],
                        "peak_rss_mb": entry["memory"]["peak_rss_mb"], "cold_start": entry.get("cold_start")},
            "dataset": {k: results["dataset"][k] for k in ("name", "fingerprint", "decision_split", "held_out", "n")},
            "machine": {"cpu": results["machine"]["cpu"], "libraries": results["machine"]["libraries"]},
            "run": str(Path(run).resolve()), "recommended": name == selection["recommended"],
            "created": datetime.now(UTC).isoformat(timespec="seconds"), "tool": f"slimformer {__version__}",
        },
    }
    with atomic_dir(Path(out), overwrite=True) as tmp:
        for f in files:
            shutil.copy2(f, tmp / f.name)
        write_json(tmp / MANIFEST, manifest)
    return manifest


def bundle_settings(path: str | Path) -> dict:
    """{runtime, threads, options} recorded in a bundle's manifest; {} for any other artifact (Artifact.bundle)."""
    return open_artifact(path).bundle if (Path(path) / MANIFEST).is_file() else {}
