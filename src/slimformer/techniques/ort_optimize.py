"""`ort-optimize`: ONNX Runtime's offline transformer fusion plus the session's graph optimization level.

Fusion (EmbedLayerNorm, Attention, SkipLayerNorm, BiasGelu...) rewrites the model file and its counts
go into the manifest; the graph optimization level is a session setting the artifact carries for the
onnxruntime runtime. Whether fused beats unfused is for the benchmark to say: on some CPUs it is slower.

SkipLayerNormalization and BiasGelu are left unfused by default: ONNX Runtime 1.32's CPU kernel for
SkipLayerNormalization is 2-6x slower than the Add + LayerNormalization it replaces (measured at 13-128
tokens, hidden 384), and unfused, a quantizer folds the Gelu's bias into the MatMul before it
(DynamicQuantizeMatMul takes a bias), which BiasGelu prevents. The onnxruntime runtime likewise turns
off ORT's own online SkipLayerNorm fusion on CPU (option fuse_skip_layer_norm).

The optimizer's model type, heads and hidden size come from the model's config.json: BERT, DistilBERT, RoBERTa
(and XLM-R, CamemBERT), MiniLM (a BERT), MPNet (Gelu only) and friends all go through ONNX Runtime's 'bert'
optimizer; another type is refused in one line (fusion=false still records the graph level). The artifact's
runtime_settings carry the level (ONNX Runtime loads it with that level) and, when fused, the com.microsoft operator
domain its graph now needs, so a runtime without ONNX Runtime's contrib operators (OpenVINO) refuses it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .base import Artifact, BuildContext, BuildError, TechniqueConfig, onnx_path, operator_domains, register

LEVELS = ("disabled", "basic", "extended", "all")
# config.json model_type -> ONNX Runtime's optimizer model type (onnxruntime.transformers.optimizer.MODEL_TYPES):
# its BertOnnxModel fuses every encoder of this shape (there is no 'distilbert' or 'roberta' type). MPNet only in
# part: Gelu and SkipLayerNormalization, not its attention (a relative position bias is added to the scores) nor its
# embeddings (no token types; positions counted from the padding)
ORT_MODEL_TYPES = dict.fromkeys(("bert", "distilbert", "roberta", "xlm-roberta", "camembert", "mpnet"), "bert")


@dataclass(frozen=True)
class OrtOptimizeConfig(TechniqueConfig):
    changes_weights = False
    name = "ort-optimize"
    libraries = ("onnxruntime", "onnx")
    revision = 3  # 2: SkipLayerNormalization and BiasGelu no longer fused by default; 3: runtime_settings
    level: str = "all"
    fusion: bool = True
    skip_layer_norm: bool = False  # fuse Add + LayerNormalization into SkipLayerNormalization (slow on CPU)
    bias_gelu: bool = False  # fuse Add + Gelu into BiasGelu (keeps the bias out of the quantized MatMul)

    def runtime_settings(self, stats: dict) -> dict:
        return {"options": {"onnxruntime": {"graph_optimization_level": self.level}},
                "operator_domains": dict.fromkeys(stats.get("operator_domains", ()), self.name)}


def fusion_settings(model_dir: Path) -> tuple[str, int, int]:
    """(ORT optimizer model type, num_heads, hidden_size) from a model's config.json."""
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BuildError(f"ort-optimize: cannot read {model_dir / 'config.json'}: {e}") from None
    model_type = config.get("model_type")
    if model_type not in ORT_MODEL_TYPES:
        raise BuildError(f"ort-optimize: ONNX Runtime's transformer fusion does not support model type "
                         f"'{model_type}' (supported: {', '.join(ORT_MODEL_TYPES)}); drop ort-optimize or pass "
                         "ort-optimize:fusion=false")
    heads = config.get("num_attention_heads") or config.get("n_heads")
    hidden = config.get("hidden_size") or config.get("dim")
    if not heads or not hidden:
        raise BuildError(f"ort-optimize: {model_dir / 'config.json'} names no attention heads/hidden size")
    return ORT_MODEL_TYPES[model_type], int(heads), int(hidden)


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

    model_type, heads, hidden = fusion_settings(source.path)
    options = FusionOptions(model_type)
    options.enable_skip_layer_norm = options.enable_bias_skip_layer_norm = config.skip_layer_norm
    options.enable_bias_gelu = config.bias_gelu
    # opt_level 0: fusion only, the session applies the graph optimization level at load time
    fused = optimizer.optimize_model(str(onnx_path(source)), model_type=model_type, num_heads=heads,
                                     hidden_size=hidden, opt_level=0, use_gpu=False, optimization_options=options)
    fused.save_model_to_file(str(out / "model.onnx"))
    stats |= {"model_type": model_type, "num_heads": heads, "hidden_size": hidden,
              "fusion": {k: v for k, v in fused.get_fused_operator_statistics().items() if v},
              "operator_domains": operator_domains(out / "model.onnx")}
    return stats
