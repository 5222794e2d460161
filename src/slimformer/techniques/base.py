"""Artifacts, technique configs and the registry that maps a config to its handler."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..cache import read_manifest
from ..errors import SlimformerError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


class BuildError(SlimformerError):
    """A technique that could not be applied; the message names the step and the cause."""


@dataclass(frozen=True)
class Artifact:
    """A model directory plus its manifest: format, labels, max_length, the steps that made it."""

    path: Path
    manifest: dict

    @property
    def format(self) -> str:
        return self.manifest.get("format", "hf")

    @property
    def labels(self) -> list[str]:
        return self.manifest["labels"]

    @property
    def max_length(self) -> int | None:
        return self.manifest.get("max_length")

    @property
    def key(self) -> str:
        """Content hash: stored for built artifacts, computed from the files for plain checkpoints."""
        return self.manifest.get("key") or content_key(self.path)

    def tokenizer(self):
        from ..models import load_tokenizer

        return load_tokenizer(str(self.path))

    def model_files(self) -> list[Path]:
        """The files that hold the model itself (weights and graph): what size on disk counts."""
        names = {"onnx": ("model.onnx", "model.onnx.data"), "openvino": ("model.xml", "model.bin"),
                 "torch-int8": ("model_int8.pt",), "hf": ("model.safetensors", "pytorch_model.bin")}
        found = [self.path / n for n in names.get(self.format, ()) if (self.path / n).is_file()]
        return found or sorted(self.path.glob("model-*.safetensors"))  # sharded checkpoints

    def deploy_files(self) -> list[Path]:
        """Everything a runtime needs to load this artifact, and nothing else (manifest aside)."""
        extra = [self.path / n for n in (*TOKENIZER_FILES, "config.json") if (self.path / n).is_file()]
        return self.model_files() + extra

    def steps_changing_weights(self) -> list[str]:
        """Names of the steps that made this artifact that changed its weights (quantized, cast)."""
        return [s["technique"] for s in self.manifest.get("steps", []) if s.get("changes_weights")]


def content_key(path: Path) -> str:
    """Hash of a model directory's files (what the model is, not where it lives)."""
    digest = hashlib.sha256()
    for p in sorted(q for q in path.iterdir() if q.is_file() and q.name != "manifest.json"):
        digest.update(p.name.encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:20]


def open_artifact(path: str | Path) -> Artifact:
    """Any slimformer artifact, or a plain Hugging Face classifier directory."""
    from ..models import classifier_labels, resolve

    path = Path(resolve(str(path)))
    manifest = read_manifest(path)
    if "format" not in manifest:  # a plain HF checkpoint (maybe from `slimformer train`)
        manifest = {"format": "hf", "labels": manifest.get("labels") or classifier_labels(str(path)),
                    "max_length": manifest.get("max_length"), "steps": [], "source": str(path)}
    return Artifact(path, manifest)


@dataclass(frozen=True)
class TechniqueConfig:
    """Base of every technique's settings. Subclasses set `name` and the formats they take and make."""

    name: ClassVar[str]
    inputs: ClassVar[tuple[str, ...]] = ("onnx",)
    output: ClassVar[str | None] = None  # None: same format as the input
    uses_calibration: ClassVar[bool] = False
    changes_weights: ClassVar[bool] = True
    revision: ClassVar[int] = 1  # bump when the handler's output changes: part of the cache key

    def to_dict(self) -> dict[str, Any]:
        return {"technique": self.name, **dataclasses.asdict(self)}

    def check_result(self, check: dict) -> None:
        """Called by the build with the new artifact's agreement with its input; raise BuildError to refuse it."""


@dataclass
class BuildContext:
    """What a handler may need besides its input: real texts for calibration and for checking outputs."""

    calibration_texts: list[str] = field(default_factory=list)
    check_texts: list[str] = field(default_factory=list)
    calibration_fingerprint: str = ""


Handler = Callable[[Any, Artifact, Path, BuildContext], dict]
TECHNIQUES: dict[str, type[TechniqueConfig]] = {}
HANDLERS: dict[type[TechniqueConfig], Handler] = {}


def register(config_cls: type[TechniqueConfig]) -> Callable[[Handler], Handler]:
    """`@register(MyConfig)` on `handler(config, source, out_dir, context) -> stats`."""

    def wrap(handler: Handler) -> Handler:
        TECHNIQUES[config_cls.name] = config_cls
        HANDLERS[config_cls] = handler
        return handler

    return wrap


def step_key(source: Artifact, config: TechniqueConfig, context: BuildContext) -> str:
    payload = {"source": source.key, "config": config.to_dict(), "revision": config.revision}
    if config.uses_calibration:
        payload["calibration"] = context.calibration_fingerprint
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def onnx_path(artifact: Artifact) -> Path:
    return artifact.path / "model.onnx"
