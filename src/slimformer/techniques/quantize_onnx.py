"""`int8-dynamic` and `int8-static`: ONNX Runtime quantization of an ONNX model.

Dynamic: weights to int8 ahead of time, activations quantized on the fly (QInt8 weights by default,
which suit VNNI CPUs). Static: QDQ format, activation ranges calibrated on real tokenized texts from
the training split with MinMax, Entropy or Percentile.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from ..artifacts import default_max_length
from .base import Artifact, BuildContext, BuildError, TechniqueConfig, onnx_path, register

QUANT_TYPES = ("int8", "uint8")
METHODS = ("minmax", "entropy", "percentile")
QUANTIZED_OPS = {"MatMulInteger", "DynamicQuantizeMatMul", "QAttention", "QLinearMatMul", "QGemm",
                 "DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear", "QEmbedLayerNormalization",
                 "MatMulIntegerToFloat"}
MIN_CALIBRATION_TEXTS = 8


@dataclass(frozen=True)
class DynamicQuantConfig(TechniqueConfig):
    name = "int8-dynamic"
    libraries = ("onnxruntime", "onnx")
    revision = 2  # Gemm nodes honoured in exclude/only
    weight_type: str = "int8"  # QInt8; uint8 is slower on VNNI CPUs
    per_channel: bool = False
    op_types: tuple[str, ...] = ()  # empty: every op type ORT can quantize
    exclude: tuple[str, ...] = ()  # node names kept in float
    only: tuple[str, ...] = ()  # quantize just these nodes (sensitivity probes); empty: all

    def probe(self, node: str) -> DynamicQuantConfig:
        return replace(self, exclude=(), only=(node,))


@dataclass(frozen=True)
class StaticQuantConfig(TechniqueConfig):
    name = "int8-static"
    libraries = ("onnxruntime", "onnx", "tokenizers")  # tokenizers: the calibration inputs
    revision = 2
    uses_calibration = True
    method: str = "minmax"
    activation_type: str = "uint8"
    weight_type: str = "int8"
    per_channel: bool = False
    op_types: tuple[str, ...] = ("MatMul",)  # Gather/Add inputs of fused graphs have no valid scale
    exclude: tuple[str, ...] = ()
    only: tuple[str, ...] = ()
    calibration_size: int = 256

    def probe(self, node: str) -> StaticQuantConfig:  # a smaller calibration set: one probe per node
        return replace(self, exclude=(), only=(node,), calibration_size=min(64, self.calibration_size))


def op_counts(path: Path) -> Counter:
    import onnx

    return Counter(node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node)


def _quant_type(value: str, what: str):
    from onnxruntime.quantization import QuantType

    if value not in QUANT_TYPES:
        raise BuildError(f"{what} must be int8 or uint8, got '{value}'")
    return QuantType.QInt8 if value == "int8" else QuantType.QUInt8


def _stats(source: Path, out: Path, config) -> dict:
    before, after = op_counts(source), op_counts(out)
    return {"matmuls_before": before.get("MatMul", 0) + before.get("Attention", 0),
            "quantized_op_counts": {k: v for k, v in sorted(after.items()) if k in QUANTIZED_OPS},
            "excluded": list(config.exclude)}


def _node_names(names: tuple[str, ...]) -> list[str]:
    """Node names as the quantizer sees them: it rewrites a Gemm into a MatMul named NAME_MatMul first."""
    return [*names, *(f"{n}_MatMul" for n in names if n.endswith("Gemm"))]


def _extra_options() -> dict:
    import onnx

    # fused graphs hide some weight types from the quantizer ("Unable to find data type for weight_name")
    return {"DefaultTensorType": onnx.TensorProto.FLOAT}


@register(DynamicQuantConfig)
def quantize_dynamic(config: DynamicQuantConfig, source: Artifact, out: Path, context: BuildContext) -> dict:
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    ort_quantize_dynamic(str(onnx_path(source)), str(out / "model.onnx"),
                         weight_type=_quant_type(config.weight_type, "int8-dynamic weight_type"),
                         per_channel=config.per_channel, op_types_to_quantize=list(config.op_types) or None,
                         nodes_to_exclude=_node_names(config.exclude),
                         nodes_to_quantize=_node_names(config.only) or None,
                         extra_options=_extra_options())
    return _stats(onnx_path(source), out / "model.onnx", config)


class TextCalibrationReader:
    """Feeds real tokenized texts, one at a time (no padding in the ranges), to ORT's calibrator.

    Tokenized as the runtimes will: the artifact's encoder at the model's default max_length."""

    def __init__(self, source: Artifact, texts: list[str], input_names: list[str]) -> None:
        encoder = source.encoder(default_max_length(source.path))
        self._batches = iter([{k: v for k, v in encoder([t]).items() if k in input_names} for t in texts])

    def get_next(self):
        return next(self._batches, None)

    def rewind(self) -> None:  # ORT calls it for some methods; one pass is all we feed
        pass


@register(StaticQuantConfig)
def quantize_static(config: StaticQuantConfig, source: Artifact, out: Path, context: BuildContext) -> dict:
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    texts = context.calibration_texts[:config.calibration_size]
    if len(texts) < MIN_CALIBRATION_TEXTS:
        raise BuildError(f"int8-static: calibration set has {len(texts)} texts; at least {MIN_CALIBRATION_TEXTS} "
                         "are needed (pass --calib-data with a training split)")
    if config.method not in METHODS:
        raise BuildError(f"int8-static: method must be one of {', '.join(METHODS)}, got '{config.method}'")
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[config.method]
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path(source)), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    reader = TextCalibrationReader(source, texts, names)
    CalibrationDataReader.register(TextCalibrationReader)
    ort_quantize_static(str(onnx_path(source)), str(out / "model.onnx"), reader, quant_format=QuantFormat.QDQ,
                        activation_type=_quant_type(config.activation_type, "int8-static activation_type"),
                        weight_type=_quant_type(config.weight_type, "int8-static weight_type"),
                        calibrate_method=method, per_channel=config.per_channel,
                        op_types_to_quantize=list(config.op_types) or None,
                        nodes_to_exclude=_node_names(config.exclude),
                        nodes_to_quantize=_node_names(config.only) or None, extra_options=_extra_options())
    return {"calibration_texts": len(texts), "method": config.method, **_stats(onnx_path(source),
                                                                                  out / "model.onnx", config)}
