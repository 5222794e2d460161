"""Technique configs, the registry that maps a config to its handler, and the cache key of a step."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

# the artifact contract lives below both techniques and runtimes; re-exported here for existing imports
from ..artifacts import TOKENIZER_FILES, Artifact, content_key, open_artifact  # noqa: F401
from ..errors import SlimformerError


class BuildError(SlimformerError):
    """A technique that could not be applied; the message names the step and the cause."""


@dataclass(frozen=True)
class TechniqueConfig:
    """Base of every technique's settings. Subclasses set `name` and the formats they take and make."""

    name: ClassVar[str]
    inputs: ClassVar[tuple[str, ...]] = ("onnx",)
    output: ClassVar[str | None] = None  # None: same format as the input
    uses_calibration: ClassVar[bool] = False
    changes_weights: ClassVar[bool] = True
    revision: ClassVar[int] = 1  # bump when the handler's output changes: part of the cache key
    # distributions whose code makes the output (their versions are part of the cache key)
    libraries: ClassVar[tuple[str, ...]] = ()
    tasks: ClassVar[tuple[str, ...] | None] = None  # names of the tasks (tasks/) it applies to; None: every task

    def to_dict(self) -> dict[str, Any]:
        return {"technique": self.name, **dataclasses.asdict(self)}

    def applies_to(self, task) -> bool:
        """Whether this technique can be applied to a model of `task` (a tasks.Task)."""
        return self.tasks is None or task.name in self.tasks

    def check_result(self, check: dict) -> None:
        """Called by the build with the new artifact's agreement with its input (check.compare: max_abs_diff for
        every task, label flips for labelled ones, cosines for vectors); raise BuildError to refuse it."""

    def probe(self, node: str) -> TechniqueConfig | None:
        """This step applied to one graph node alone, for the mixed-precision fallback's sensitivity ranking
        (optimize/fallback.py): None (the default) where the technique cannot select nodes. One that can also
        takes the nodes to keep out of it as `exclude`."""
        return None

    def runtime_settings(self, stats: dict) -> dict:
        """What the artifact this step made requires of runtimes, from the handler's stats (the manifest's
        `runtime_settings`, see artifacts.py): {"options": {runtime: {option: value}}, "operator_domains":
        {domain: self.name}}. Merged over the input's settings; runtimes read it, never the step's name."""
        return {}


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


def library_version(distribution: str) -> str | None:
    """The installed version of a distribution (None: not installed)."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def step_key(source: Artifact, config: TechniqueConfig, context: BuildContext) -> str:
    """The cache key of `config` applied to `source`: the input, the settings, the handler's revision, the
    versions of the libraries that build it, whether the output is checked, and the calibration data.

    A step built by other library versions is rebuilt, and an unchecked build is never taken for a checked one."""
    payload = {"source": source.key, "config": config.to_dict(), "revision": config.revision,
               "libraries": {name: library_version(name) for name in config.libraries},
               "checked": bool(context.check_texts)}
    if config.uses_calibration:
        payload["calibration"] = context.calibration_fingerprint
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def onnx_path(artifact: Artifact) -> Path:
    return artifact.path / "model.onnx"


def operator_domains(path: Path) -> list[str]:
    """The operator domains beyond standard ONNX that an ONNX file's nodes use (e.g. com.microsoft)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return sorted({n.domain for n in graph.node} - {"", "ai.onnx"})
