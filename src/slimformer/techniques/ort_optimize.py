"""`ort-optimize`: ONNX Runtime's offline transformer fusion plus the session's graph optimization level.

Fusion (EmbedLayerNorm, Attention, SkipLayerNorm, BiasGelu...) rewrites the model file and its counts
go into the manifest; the graph optimization level is a session setting the artifact carries for the
onnxruntime runtime. Whether fused beats unfused is for the benchmark to say: on some CPUs it is slower.

SkipLayerNormalization and BiasGelu are left unfused by default: ONNX Runtime 1.32's CPU kernel for
SkipLayerNormalization is 2-6x slower than the Add + LayerNormalization it replaces (measured at 13-128
tokens, hidden 384), and unfused, a quantizer folds the Gelu's bias into the MatMul before it
(DynamicQuantizeMatMul takes a bias), which BiasGelu prevents. The onnxruntime runtime likewise turns
off ORT's own online SkipLayerNorm fusion on CPU (option fuse_skip_layer_norm).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .base import Artifact, BuildContext, BuildError, TechniqueConfig, onnx_path, register

LEVELS = ("disabled", "basic", "extended", "all")


@dataclass(frozen=True)
class OrtOptimizeConfig(TechniqueConfig):
    changes_weights = False
    name = "ort-optimize"
    libraries = ("onnxruntime", "onnx")
    revision = 2  # SkipLayerNormalization and BiasGelu no longer fused by default
    level: str = "all"
    fusion: bool = True
    skip_layer_norm: bool = False  # fuse Add + LayerNormalization into SkipLayerNormalization (slow on CPU)
    bias_gelu: bool = False  # fuse Add + Gelu into BiasGelu (keeps the bias out of the quantized MatMul)


def attention_shape(model_dir: Path) -> tuple[int, int]:
    """(num_heads, hidden_size) from a BERT- or DistilBERT-style config.json."""
    config = json.loads((model_dir / "config.json").read_text())
    heads = config.get("num_attention_heads") or config.get("n_heads")
    hidden = config.get("hidden_size") or config.get("dim")
    if not heads or not hidden:
        raise BuildError("ort-optimize: config.json names no attention heads/hidden size for fusion")
    return int(heads), int(hidden)


@register(OrtOptimizeConfig)
def optimize(config: OrtOptimizeConfig, source: Artifact, out: Path, context: BuildContext) -> dict:
    if config.level not in LEVELS:
        raise BuildError(f"ort-optimize: level must be one of {', '.join(LEVELS)}, got '{config.level}'")
    stats: dict = {"graph_optimization_level": config.level}
    if not config.fusion:
        (out / "model.onnx").write_bytes(onnx_path(source).read_bytes())
        return stats
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    heads, hidden = attention_shape(source.path)
    options = FusionOptions("bert")
    options.enable_skip_layer_norm = options.enable_bias_skip_layer_norm = config.skip_layer_norm
    options.enable_bias_gelu = config.bias_gelu
    # model_type 'bert' also fuses DistilBERT (there is no 'distilbert' type); opt_level 0: fusion only,
    # the session applies the graph optimization level at load time
    fused = optimizer.optimize_model(str(onnx_path(source)), model_type="bert", num_heads=heads, hidden_size=hidden,
                                     opt_level=0, use_gpu=False, optimization_options=options)
    fused.save_model_to_file(str(out / "model.onnx"))
    stats["fusion"] = {k: v for k, v in fused.get_fused_operator_statistics().items() if v}
    return stats
