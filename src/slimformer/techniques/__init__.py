"""Techniques: each is a config dataclass plus a registered handler that turns one artifact into another.

`build(model, recipe)` applies a recipe (a list of configs) step by step. Every step's output is
cached by content hash (input artifact + config + calibration data), written to a temporary
directory and renamed into place with its manifest last, and checked against its input on real
texts (check.check_step: label flips and logit moves, or cosines for vectors, per task) so every artifact
says what it cost. Techniques reach runtimes only through that check (slimformer.check).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
import typing
from contextlib import contextmanager
from pathlib import Path

from ..artifacts import DEFAULT_RUNTIME, save_tokenizer_files
from ..cache import atomic_dir, cache_dir, copy_tree, is_complete, write_json
from ..check import check_step
from ..errors import DiskFullError, SlimformerError, disk_full, first_line, missing_library
from . import (  # noqa: F401  (registers)
    cls_only,
    int8_qat,
    onnx_export,
    openvino_int8,
    ort_optimize,
    quantize_onnx,
    torch_precision,
)
from .base import (
    HANDLERS,
    TECHNIQUES,
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


def recipe_text(recipe: list[TechniqueConfig]) -> str:
    """The recipe as `parse_recipe` reads it (options that differ from their defaults only):
    parse_recipe(recipe_text(r)) == r."""
    items = []
    for config in recipe:
        options = []
        for f in dataclasses.fields(config):
            value = getattr(config, f.name)
            if value == f.default:
                continue
            text = "+".join(value) if isinstance(value, tuple) else str(value).lower() if isinstance(value, bool) \
                else str(value)
            if any(c in text for c in ",:=") or (isinstance(value, tuple) and any("+" in v for v in value)):
                raise SlimformerError(f"{config.name}:{f.name}={text} cannot be written as a recipe")
            options.append(f":{f.name}={text}")
        items.append(config.name + "".join(options))
    return ",".join(items)


def _merged_settings(before: dict, step: dict) -> dict:
    """runtime_settings after a step: the step's options per runtime and operator domains over its input's."""
    options = {r: dict(o) for r, o in (before.get("options") or {}).items()}
    for runtime, given in (step.get("options") or {}).items():
        options[runtime] = {**options.get(runtime, {}), **given}
    domains = {**(step.get("operator_domains") or {}), **(before.get("operator_domains") or {})}  # first wins
    return {**({"options": options} if options else {}), **({"operator_domains": domains} if domains else {})}


def _refuse_misplaced(task, recipe: list[TechniqueConfig], model) -> None:
    for config in recipe:
        if not config.applies_to(task):
            raise BuildError(f"{config.name} applies to {' and '.join(config.tasks)} models only; {model} is a "
                             f"{task.name} model (drop {config.name} from the recipe)")


def write_step(source: Artifact, config: TechniqueConfig, out: Path, context: BuildContext) -> Artifact:
    """Apply one technique to `source` into the directory `out` (which must exist), unchecked and uncached: its
    handler, the tokenizer and config copied beside the model, and the manifest (the task, labels, steps and
    runtime settings carried over). `apply_step` does this inside the cache; the mixed-precision fallback's
    throw-away probes do it in temporary directories."""
    if source.format not in config.inputs:
        hint = f" (e.g. --recipe onnx,{config.name})" if "onnx" in config.inputs else ""
        raise BuildError(f"{config.name} takes {' or '.join(config.inputs)} models, not {source.format}{hint}")
    _refuse_misplaced(source.task, [config], source.path)
    started = time.perf_counter()
    try:
        with _quiet_root_logger():  # ORT's quantizer warns per tensor on the root logger
            stats = HANDLERS[type(config)](config, source, out, context)
        tokenizer_files = save_tokenizer_files(source, out)
    except SlimformerError:
        raise
    except Exception as e:  # a quantizer or converter failure: name the step and the cause
        if full := disk_full(e):
            raise DiskFullError(full, out) from None
        if missing := missing_library(e):  # a light install: name the extra to install
            raise BuildError(f"{config.name}: {missing}") from None
        raise BuildError(f"{config.name} failed: {first_line(e)}") from e
    if (source.path / "config.json").is_file() and not (out / "config.json").exists():
        shutil.copy2(source.path / "config.json", out / "config.json")
    step = {**config.to_dict(), "changes_weights": config.changes_weights, "stats": stats,
            "seconds": round(time.perf_counter() - started, 2)}
    settings = _merged_settings(source.runtime_settings, config.runtime_settings(stats))
    manifest = {"source": source.manifest.get("source", str(source.path)), "task": source.task.name,
                "labels": source.labels, "max_length": source.max_length,
                **({"pooling": source.pooling} if source.pooling else {}),
                "format": config.output or source.format, "tokenizer_files": tokenizer_files,
                **({"runtime_settings": settings} if settings else {}),
                "steps": [*source.manifest.get("steps", []), step]}
    write_json(out / "manifest.json", manifest)
    return Artifact(out, manifest)


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
    """One technique on one artifact, cached by content hash and checked against its input (check.check_step)."""
    key = step_key(source, config, context)
    target = cache_dir() / "artifacts" / key
    if is_complete(target):
        return open_artifact(target)
    with atomic_dir(target, overwrite=True) as tmp:
        built = write_step(source, config, tmp, context)  # the temporary directory is loadable; not yet complete
        manifest = {**built.manifest, "key": key}
        if context.check_texts:
            check = check_step(source, Artifact(tmp, manifest), context.check_texts)
            manifest["steps"][-1]["check"] = check
            config.check_result(check)
        write_json(tmp / "manifest.json", manifest)
    return open_artifact(target)


def build(model: str | Path, recipe: list[TechniqueConfig], out: Path | None = None,
          context: BuildContext | None = None, overwrite: bool = False) -> Artifact:
    """Apply `recipe` to `model`; with `out`, copy the final artifact there (complete or absent)."""
    context = context or BuildContext()
    if any(c.uses_calibration for c in recipe) and not context.calibration_texts:
        raise BuildError("int8-static needs calibration data: pass --calib-data (a dataset with a train split)")
    artifact = open_artifact(model)
    _refuse_misplaced(artifact.task, recipe, model)  # before any step is built
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
           "context_from_dataset", "open_artifact", "parse_recipe", "recipe_key", "recipe_text", "write_step"]
