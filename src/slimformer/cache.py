"""Where slimformer keeps what it downloads or trains once, and how it writes directories safely."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import OutputError

MANIFEST = "manifest.json"


def cache_dir() -> Path:
    """`$SLIMFORMER_CACHE`, else `~/.cache/slimformer`."""
    root = os.environ.get("SLIMFORMER_CACHE") or Path.home() / ".cache" / "slimformer"
    return Path(root)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: Path, text: str) -> None:
    """Write to a temporary name in the same directory, then rename it into place."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise OutputError(f"cannot write to {path.parent}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results and bundles are for others to read
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def is_complete(directory: Path) -> bool:
    """A directory slimformer wrote is complete only when its manifest exists."""
    return (directory / MANIFEST).is_file()


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else {}


@contextmanager
def atomic_dir(final: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success rename it to `final`, on failure remove it.

    The caller writes the manifest last, so an interrupted build never looks finished.
    """
    final = Path(final)
    if final.exists() and not overwrite:
        raise OutputError(f"{final} exists already; choose another --out or pass --overwrite")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".partial"))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
    except OSError as e:
        raise OutputError(f"cannot write to {final.parent}: {e.strerror or e}") from None
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def dir_size_mb(path: Path, suffixes: tuple[str, ...] | None = None) -> float:
    """Size of the files under `path` (only those ending in `suffixes` when given), in MB (1e6 bytes)."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    total = sum(p.stat().st_size for p in files if suffixes is None or p.name.endswith(suffixes))
    return total / 1e6
