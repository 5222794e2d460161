"""Each runtime's options: declared with their type, allowed values and default, checked before anything runs.

An option a runtime does not have, or a value it does not allow, is refused with one line naming what is
valid: a typo in `bench --option` must never give a measurement labelled with an option that was not applied.
Values may come as text (`--option static_shapes=false`, `max_length=64`) and are coerced to their types.
This module imports no runtime library, so options are checked before any is loaded.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import SlimformerError

TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


@dataclass(frozen=True)
class RuntimeOptions:
    """Options every runtime takes. Subclasses add theirs; `choices` names the allowed values of str options."""

    runtime: ClassVar[str] = ""
    choices: ClassVar[dict[str, tuple[str, ...]]] = {}
    threads: int | None = 1  # intra-op threads (None: the library's default); given apart, never as an option
    max_length: int | None = None  # tokens per text (default: the model's, see artifacts.default_max_length)


@dataclass(frozen=True)
class TorchOptions(RuntimeOptions):
    runtime = "torch"
    choices = {"device": ("cpu", "cuda")}
    trust_remote_code: bool = False
    device: str = "cpu"  # cuda: model and inputs on the first GPU (never chosen silently)


@dataclass(frozen=True)
class OrtOptions(RuntimeOptions):
    runtime = "onnxruntime"
    choices = {"graph_optimization_level": ("disabled", "basic", "extended", "all"),
               "device": ("cpu", "cuda", "tensorrt")}
    graph_optimization_level: str = "all"  # an artifact's runtime_settings may set it (ort-optimize records its level)
    device: str = "cpu"  # cuda: the CUDA execution provider; tensorrt: TensorRT EP (fp16 engines), CUDA behind it
    fuse_skip_layer_norm: bool | None = None  # None: fused on a GPU only (the CPU kernel is slow)
    io_binding: bool | None = None  # None: on a GPU (output kept on the device, one copy back per batch)


@dataclass(frozen=True)
class OpenVinoOptions(RuntimeOptions):
    runtime = "openvino"
    choices = {"precision": ("f32", "bf16", "f16"), "hint": ("latency", "throughput", "cumulative_throughput"),
               "device": ("CPU", "GPU", "NPU", "AUTO")}
    precision: str = "f32"
    hint: str = "latency"
    device: str = "CPU"
    static_shapes: bool | None = None  # None: on for CPU (batch 1 on models compiled per length bucket)


OPTIONS: dict[str, type[RuntimeOptions]] = {c.runtime: c for c in (TorchOptions, OrtOptions, OpenVinoOptions)}


def _kind(annotation: Any) -> type:
    """bool, int, float or str out of an annotation such as `bool | None`."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    return args[0]


def _coerce(runtime: str, name: str, value: Any, kind: type, choices: tuple[str, ...] | None) -> Any:
    where = f"{runtime} option {name}"
    if value is None:
        return None
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text not in TRUE + FALSE:
            raise SlimformerError(f"{where} takes true or false, got '{value}'")
        return text in TRUE
    if kind is int:
        try:
            number = int(value) if not isinstance(value, bool | float) else None
        except ValueError:
            number = None
        if number is None or number < 1:
            raise SlimformerError(f"{where} takes a positive integer, got '{value}'")
        return number
    text = str(value)
    if choices:
        match = next((c for c in choices if c.lower() == text.strip().lower()), None)
        if match is None:
            raise SlimformerError(f"{where} takes {', '.join(choices)}; got '{value}'")
        return match
    return text


def check_options(runtime: str, options: dict[str, Any]) -> dict[str, Any]:
    """`options` coerced to their declared types (text from the command line included), or one line refusing an
    option the runtime does not have or a value it does not allow. Only the options given are returned."""
    if runtime not in OPTIONS:
        raise SlimformerError(f"unknown runtime '{runtime}' (available: {', '.join(OPTIONS)})")
    declared = OPTIONS[runtime]
    hints = typing.get_type_hints(declared)
    fields = {f.name for f in dataclasses.fields(declared)} - {"threads"}
    checked = {}
    for name, value in options.items():
        if name == "threads":
            raise SlimformerError(f"threads is not a {runtime} option: give the thread count on its own (--threads)")
        if name not in fields:
            valid = ", ".join(sorted(fields))
            raise SlimformerError(f"the {runtime} runtime has no option '{name}' (options: {valid})")
        checked[name] = _coerce(runtime, name, value, _kind(hints[name]), declared.choices.get(name))
    return checked


def runtime_options(runtime: str, options: dict[str, Any], threads: int | None = 1, recorded: dict | None = None):
    """The runtime's options object, every field checked and coerced: `recorded` (what the artifact's
    runtime_settings ask of this runtime) under the given `options`, `threads` (None: the library's default),
    the rest at their defaults."""
    given = {k: v for k, v in check_options(runtime, options).items() if v is not None}  # None: not given
    return OPTIONS[runtime](threads=_coerce(runtime, "threads", threads, int, None),
                            **{**check_options(runtime, recorded or {}), **given})
