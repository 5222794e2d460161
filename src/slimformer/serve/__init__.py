"""Serve a bundle over HTTP: `slimformer serve BUNDLE` (one machine) or `--ray` (a Ray Serve deployment).

app.py is the FastAPI app, batcher.py the dynamic batcher, metrics.py the Prometheus metrics,
ray_serve.py the same classifier on Ray Serve.
"""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

from ..errors import ModelError, SlimformerError
from .app import SETTINGS_ENV, ServeSettings, create_app, invariance_line, read_manifest, settings_env

__all__ = ["ServeSettings", "check_bundle", "create_app", "run_server", "startup_lines"]


def check_bundle(bundle: str) -> dict:
    """The bundle's manifest, or a one-line error for a path that is no model directory."""
    path = Path(bundle)
    if not path.is_dir():
        raise ModelError(f"bundle not found: {bundle} (make one with `slimformer export RUN --out DIR`)")
    if not (path / "manifest.json").is_file() and not (path / "config.json").is_file():
        raise ModelError(f"{bundle} is not a bundle or model directory (no manifest.json)")
    return read_manifest(path)


def startup_lines(settings: ServeSettings) -> list[str]:
    manifest = check_bundle(settings.bundle)
    b = manifest.get("bundle") or {}
    policy = settings.policy().describe()
    wait = (f"fixed wait {settings.max_wait_ms:g} ms" if settings.max_wait_ms is not None
            else f"latency target p99 {settings.target_p99_ms:g} ms")
    return [f"{settings.bundle}: {b.get('variant') or Path(settings.bundle).name} ({manifest.get('format', 'hf')} "
            f"on {b.get('runtime') or 'its default runtime'}); {settings.worker_count()} worker(s) x "
            f"{settings.worker_threads()} thread(s)",
            f"batching: up to {policy['max_batch']} texts, {wait}, queue {policy['max_queue']} texts; "
            f"timeout {settings.timeout_s:g} s",
            invariance_line(manifest)]


def _check_key_file(path: str | None) -> None:
    if path is None:
        return
    try:
        key = Path(path).read_text().strip()
    except OSError as e:
        raise SlimformerError(f"cannot read --api-key-file {path}: {e.strerror}") from None
    if len(key) < 16:
        raise SlimformerError(f"--api-key-file {path} holds a key of {len(key)} characters; use at least 16")


def run_server(settings: ServeSettings) -> None:
    """Run until SIGTERM/SIGINT: then stop accepting, finish what is in flight, and return (exit 0)."""
    import uvicorn

    check_bundle(settings.bundle)
    _check_key_file(settings.api_key_file)
    threads = settings.worker_threads()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # tokenizers' own pool would add threads
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # torch bundles; ONNX Runtime is set explicitly
        os.environ.setdefault(var, str(threads))
    common = {"host": settings.host, "port": settings.port, "access_log": False, "log_level": "info",
              "timeout_graceful_shutdown": int(settings.timeout_s) + 5}
    # uvicorn re-raises the signal it stopped on once it is done; a handler that ignores it lets us exit 0
    signal.signal(signal.SIGTERM, lambda *_: None)
    if settings.worker_count() == 1:
        app = create_app(settings)
        server = uvicorn.Server(uvicorn.Config(app, **common))
        model = app.state.model
        model.on_failed = lambda: setattr(server, "should_exit", True)
        server.run()
        if model.state == "failed":
            raise ModelError(f"{settings.bundle} did not load: {model.error}")
        return
    with tempfile.TemporaryDirectory(prefix="slimformer-metrics-") as metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        os.environ[SETTINGS_ENV] = settings_env(settings)
        uvicorn.run("slimformer.serve.app:app_from_env", factory=True, workers=settings.worker_count(), **common)
