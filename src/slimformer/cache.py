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

from .errors import DiskFullError, OutputError, disk_full

MANIFEST = "manifest.json"


def cache_dir() -> Path:
    """`$SLIMFORMER_CACHE`, else `~/.cache/slimformer`."""
    root = os.environ.get("SLIMFORMER_CACHE") or Path.home() / ".cache" / "slimformer"
    return Path(root)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def output_error(what: str, error: OSError) -> OutputError:
    """The one-line error for a failed write of `what` ("PATH" or "to DIR"); disk full is its own kind."""
    if disk_full(error):
        return DiskFullError(f"{error.strerror or error} writing {what.removeprefix('to ')}")
    return OutputError(f"cannot write {what}: {error.strerror or error}")


def write_text(path: Path, text: str) -> None:
    """Write to a temporary name in the same directory, then rename it into place."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise output_error(f"to {path.parent}", e) from None
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results and bundles are for others to read
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise output_error(str(path), e) from None
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
        raise output_error(f"to {final.parent}", e) from None
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if not isinstance(e, DiskFullError) and (full := disk_full(e)):
            raise DiskFullError(full, final) from None
        raise


def copy_tree(source: Path, target: Path) -> None:
    """Copy a directory's files into `target`, stopping at the first failure with its OSError (shutil.copytree
    gathers failures into one shutil.Error and loses their errno, e.g. the disk-full one)."""
    for path in sorted(Path(source).rglob("*")):
        dest = Path(target) / path.relative_to(source)
        if path.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
        else:
            shutil.copy2(path, dest)


def dir_size_mb(path: Path, suffixes: tuple[str, ...] | None = None) -> float:
    """Size of the files under `path` (only those ending in `suffixes` when given), in MB (1e6 bytes)."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    total = sum(p.stat().st_size for p in files if suffixes is None or p.name.endswith(suffixes))
    return total / 1e6
