"""The compression levers as optimize stages, opted into with `--compress prune,qat`: they spend training time
the user grants explicitly.

- `prune`: a student cut to `layers` (default half the teacher's) with every layer's feed-forward block pruned
  to `width` of its neurons (Taylor importance on the training texts), recovered by distillation from the
  teacher with the intermediate-layer terms (hidden states and last-layer attention) beside logit KD; one per
  seed, the best on validation (or on the selection slice) kept.
- `qat`: quantization-aware training of the smallest model of the run (the pruned student, else the distilled
  student, else the teacher itself), exported as INT8 with the trained scales for ONNX Runtime and OpenVINO.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..distill import DistillConfig
from ..errors import SlimformerError
from .qat import QatConfig

LEVERS = ("prune", "qat")


@dataclass(frozen=True)
class CompressSettings:
    levers: tuple[str, ...] = ()
    width: float = 0.5  # FFN neurons kept by `prune`
    layers: int | None = None  # depth of the pruned student (None: the run's student depth, else half the teacher's)
    hidden_weight: float = 1.0
    attention_weight: float = 1.0
    qat: QatConfig = field(default_factory=QatConfig)


def check_levers(levers: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [lever for lever in levers if lever not in LEVERS]
    if unknown:
        raise SlimformerError(f"unknown compression lever(s) {', '.join(unknown)}; choose from {', '.join(LEVERS)}")
    return levers


def pruned_config(base: DistillConfig, settings: CompressSettings) -> DistillConfig:
    return replace(base, hidden_weight=settings.hidden_weight, attention_weight=settings.attention_weight)


def qat_start(sources: dict[str, str]) -> str:
    """The source quantization-aware training starts from: the smallest model of the run."""
    return next(name for name in ("pruned", "student", "teacher") if name in sources)
