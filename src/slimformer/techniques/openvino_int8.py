"""`ov-int8`: OpenVINO's own post-training INT8 quantization (NNCF, transformer preset).

Reads the ONNX artifact, calibrates on real tokenized training texts, and writes OpenVINO IR
(model.xml + model.bin) that the openvino runtime loads. On CPUs with VNNI/AMX this beats running an
ORT-made QDQ model in OpenVINO, because NNCF places the quantizers where OpenVINO's kernels want them.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

from .base import Artifact, BuildContext, BuildError, TechniqueConfig, onnx_path, register
from .quantize_onnx import MIN_CALIBRATION_TEXTS, TextCalibrationReader

PRESETS = ("performance", "mixed")


@dataclass(frozen=True)
class OpenVinoInt8Config(TechniqueConfig):
    name = "ov-int8"
    libraries = ("openvino", "nncf", "tokenizers")  # tokenizers: the calibration inputs
    output = "openvino"
    uses_calibration = True
    preset: str = "performance"  # symmetric activations; "mixed" makes them asymmetric
    calibration_size: int = 256
    fast_bias_correction: bool = True


@register(OpenVinoInt8Config)
def quantize_openvino(config: OpenVinoInt8Config, source: Artifact, out: Path, context: BuildContext) -> dict:
    try:
        import nncf
        import openvino as ov
    except ImportError:
        raise BuildError("ov-int8 needs openvino and nncf: pip install 'slimformer[openvino]'") from None
    if config.preset not in PRESETS:
        raise BuildError(f"ov-int8: preset must be one of {', '.join(PRESETS)}, got '{config.preset}'")
    texts = context.calibration_texts[:config.calibration_size]
    if len(texts) < MIN_CALIBRATION_TEXTS:
        raise BuildError(f"ov-int8: calibration set has {len(texts)} texts; at least {MIN_CALIBRATION_TEXTS} "
                         "are needed (pass --calib-data with a training split)")
    model = ov.Core().read_model(str(onnx_path(source)))
    names = [i.get_any_name() for i in model.inputs]
    reader = TextCalibrationReader(source, texts, names)
    samples = list(iter(reader.get_next, None))
    with contextlib.redirect_stdout(io.StringIO()):  # NNCF's own progress bars; slimformer shows its own
        quantized = nncf.quantize(model, nncf.Dataset(samples), model_type=nncf.ModelType.TRANSFORMER,
                                  preset=getattr(nncf.QuantizationPreset, config.preset.upper()),
                                  subset_size=len(samples), fast_bias_correction=config.fast_bias_correction)
    ov.save_model(quantized, str(out / "model.xml"), compress_to_fp16=False)
    fake_quantize = sum(op.get_type_name() == "FakeQuantize" for op in quantized.get_ops())
    return {"calibration_texts": len(samples), "preset": config.preset, "fake_quantize_nodes": fake_quantize}
