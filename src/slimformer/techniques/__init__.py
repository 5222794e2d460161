"""Techniques: each is a config dataclass plus a registered handler that turns one artifact into another.

`build(model, recipe)` applies a recipe (a list of configs) step by step. Every step's output is
cached by content hash (input artifact + config + calibration data), written to a temporary
directory and renamed into place with its manifest last, and checked against its input on real
texts (label flips, max logit difference) so every artifact says what it cost.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
import typing
from contextlib import contextmanager
from pathlib import Path

from ..artifacts import DEFAULT_RUNTIME
from ..cache import atomic_dir, cache_dir, copy_tree, is_complete, write_json
from ..compress import qat_onnx  # noqa: F401  (registers int8-qat)
from ..errors import DiskFullError, SlimformerError, disk_full, first_line, missing_library
from ..metrics import agreement
from . import cls_only, onnx_export, openvino_int8, ort_optimize, quantize_onnx, torch_precision  # noqa: F401  (registers)
from .base import (
    HANDLERS,
    TECHNIQUES,
    TOKENIZER_FILES,
    Artifact,
    BuildContext,
    BuildError,
    TechniqueConfig,
    open_artifact,
    step_key,
)

CHECK_TEXTS = 64


def _coerce(value: str, annotation, option: str):
    kind = typing.get_origin(annotation) or annotation
    if kind in (bool, "bool"):
        if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise SlimformerError(f"{option} takes true/false, got '{value}'")
        return value.lower() in ("true", "1", "yes")
    if kind in (int, "int"):
        return int(value)
    if kind in (float, "float"):
        return float(value)
    if kind in (tuple, "tuple[str, ...]"):
        return tuple(v for v in value.split("+") if v)
    return value


def parse_recipe(text: str) -> list[TechniqueConfig]:
    """`onnx,ort-optimize,int8-static:method=entropy:activation_type=int8` -> configs.

    Options are `:key=value`; tuple options take `+`-separated items (op_types=MatMul+Gather).
    """
    recipe = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, *options = item.split(":")
        if name not in TECHNIQUES:
            raise SlimformerError(f"unknown technique '{name}' (available: {', '.join(TECHNIQUES)})")
        cls = TECHNIQUES[name]
        fields = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for option in options:
            key, sep, value = option.partition("=")
            if not sep or key not in fields:
                raise SlimformerError(f"{name} has no option '{key}' (options: {', '.join(fields) or 'none'})")
            try:
                kwargs[key] = _coerce(value, hints[key], f"{name}:{key}")
            except ValueError:
                raise SlimformerError(f"{name}:{key} cannot take '{value}'") from None
        recipe.append(cls(**kwargs))
    if not recipe:
        raise SlimformerError("empty recipe: name at least one technique, e.g. onnx,int8-dynamic")
    return recipe


def _copy_model_metadata(source: Artifact, out: Path) -> None:
    for name in (*TOKENIZER_FILES, "config.json"):
        if (source.path / name).is_file() and not (out / name).exists():
            shutil.copy2(source.path / name, out / name)


def _check(source: Artifact, built: Artifact, texts: list[str]) -> dict:
    """Agreement of the new artifact with its input on real texts, each on its default runtime."""
    from ..runtimes import load_predictor

    reference = load_predictor(source.path, DEFAULT_RUNTIME[source.format], threads=None)
    candidate = load_predictor(built.path, DEFAULT_RUNTIME[built.format], threads=None)
    return {**agreement(candidate.logits(texts, 16), reference.logits(texts, 16)), "n": len(texts)}


@contextmanager
def _quiet_root_logger():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def apply_step(source: Artifact, config: TechniqueConfig, context: BuildContext) -> Artifact:
    """One technique on one artifact, cached by content hash."""
    if source.format not in config.inputs:
        hint = f" (e.g. --recipe onnx,{config.name})" if "onnx" in config.inputs else ""
        raise BuildError(f"{config.name} takes {' or '.join(config.inputs)} models, not {source.format}{hint}")
    key = step_key(source, config, context)
    target = cache_dir() / "artifacts" / key
    if is_complete(target):
        return open_artifact(target)
    with atomic_dir(target, overwrite=True) as tmp:
        _copy_model_metadata(source, tmp)
        started = time.perf_counter()
        try:
            with _quiet_root_logger():  # ORT's quantizer warns per tensor on the root logger
                stats = HANDLERS[type(config)](config, source, tmp, context)
        except SlimformerError:
            raise
        except Exception as e:  # a quantizer or converter failure: name the step and the cause
            if full := disk_full(e):
                raise DiskFullError(full, target) from None
            if missing := missing_library(e):  # a light install: name the extra to install
                raise BuildError(f"{config.name}: {missing}") from None
            raise BuildError(f"{config.name} failed: {first_line(e)}") from e
        step = {**config.to_dict(), "changes_weights": config.changes_weights, "stats": stats,
                "seconds": round(time.perf_counter() - started, 2)}
        manifest = {"source": source.manifest.get("source", str(source.path)), "labels": source.labels,
                    "max_length": source.max_length, "format": config.output or source.format, "key": key,
                    "steps": [*source.manifest.get("steps", []), step]}
        write_json(tmp / "manifest.json", manifest)  # the temporary directory is loadable; not yet complete
        if context.check_texts:
            step["check"] = _check(source, Artifact(tmp, manifest), context.check_texts)
            config.check_result(step["check"])
            write_json(tmp / "manifest.json", manifest)
    return open_artifact(target)


def build(model: str | Path, recipe: list[TechniqueConfig], out: Path | None = None,
          context: BuildContext | None = None, overwrite: bool = False) -> Artifact:
    """Apply `recipe` to `model`; with `out`, copy the final artifact there (complete or absent)."""
    context = context or BuildContext()
    if any(c.uses_calibration for c in recipe) and not context.calibration_texts:
        raise BuildError("int8-static needs calibration data: pass --calib-data (a dataset with a train split)")
    artifact = open_artifact(model)
    for config in recipe:
        artifact = apply_step(artifact, config, context)
    if out is not None:
        with atomic_dir(Path(out), overwrite=overwrite) as tmp:
            copy_tree(artifact.path, tmp)
        artifact = open_artifact(out)
    return artifact


def recipe_key(source_key: str, recipe: list[TechniqueConfig], context: BuildContext) -> str:
    """The cache key `build` gives the final artifact of `recipe` applied to the model whose key is `source_key`,
    without building (step_key, step after step): a built artifact whose manifest holds another key was made by
    another recipe, slimformer version, library version, check setting or calibration set."""
    key = source_key
    for config in recipe:
        key = step_key(Artifact(Path(), {"key": key}), config, context)
    return key


def context_from_dataset(dataset, calibration_size: int = 256, check_size: int = CHECK_TEXTS) -> BuildContext:
    """Calibration texts from the training split, check texts from validation (both real, both fixed)."""
    return BuildContext(calibration_texts=dataset["train"].texts[:calibration_size],
                        check_texts=dataset["validation"].texts[:check_size],
                        calibration_fingerprint=f"{dataset.fingerprint}:{calibration_size}")


__all__ = ["DEFAULT_RUNTIME", "TECHNIQUES", "Artifact", "BuildContext", "BuildError", "TechniqueConfig", "build",
           "context_from_dataset", "open_artifact", "parse_recipe", "recipe_key"]
