"""int8-dynamic / int8-static (ORT) on tiny BERT and DistilBERT, calibrated on real texts."""

import pytest

from slimformer.errors import ModelError
from slimformer.runtimes import load_predictor
from slimformer.techniques import BuildContext, BuildError, build, parse_recipe


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_distilbert"])
@pytest.mark.parametrize("recipe", ["onnx,int8-dynamic", "onnx,ort-optimize,int8-dynamic:per_channel=true"])
def test_dynamic_quantization(model, recipe, request, context, texts):
    artifact = build(request.getfixturevalue(model), parse_recipe(recipe), context=context)
    stats = artifact.manifest["steps"][-1]["stats"]
    assert stats["quantized_op_counts"].get("MatMulInteger", 0) + stats["quantized_op_counts"].get(
        "DynamicQuantizeMatMul", 0) >= 1
    check = artifact.manifest["steps"][-1]["check"]
    assert 0 <= check["label_flip_rate"] <= 1 and check["max_abs_logit_diff"] > 0  # really quantized
    assert load_predictor(artifact.path, "onnxruntime").logits(texts).shape == (len(texts), 3)
    if "ort-optimize" in recipe:  # fused graphs hold ORT-only operators
        with pytest.raises(ModelError, match="openvino cannot run .* build the openvino variant without ort-optimize"):
            load_predictor(artifact.path, "openvino")
    else:
        assert load_predictor(artifact.path, "openvino").logits(texts).shape == (len(texts), 3)


@pytest.mark.parametrize("options", ["method=minmax", "method=entropy", "method=percentile:activation_type=int8",
                                     "op_types=MatMul+Gather:per_channel=true"])
def test_static_quantization_is_calibrated_on_real_texts(tiny_distilbert, options, context, texts):
    artifact = build(tiny_distilbert, parse_recipe(f"onnx,int8-static:{options}:calibration_size=32"),
                     context=context)
    stats = artifact.manifest["steps"][-1]["stats"]
    assert stats["calibration_texts"] == 32
    assert stats["quantized_op_counts"]["QuantizeLinear"] >= 1 and stats["quantized_op_counts"]["DequantizeLinear"] >= 1
    assert load_predictor(artifact.path, "openvino").logits(texts).shape == (len(texts), 3)


def test_excluded_nodes_stay_in_float(tiny_bert, context):
    import onnx

    base = build(tiny_bert, parse_recipe("onnx"), context=context)
    matmuls = [n.name for n in onnx.load(str(base.path / "model.onnx")).graph.node if n.op_type == "MatMul"]
    full = build(tiny_bert, parse_recipe("onnx,int8-dynamic"), context=context)
    partial = build(tiny_bert, parse_recipe(f"onnx,int8-dynamic:exclude={matmuls[0]}+{matmuls[1]}"), context=context)
    assert partial.manifest["steps"][-1]["stats"]["excluded"] == matmuls[:2]
    count = lambda a: a.manifest["steps"][-1]["stats"]["quantized_op_counts"]["MatMulInteger"]  # noqa: E731
    assert count(partial) == count(full) - 2


def test_calibration_set_too_small_or_missing(tiny_bert, context):
    small = BuildContext(calibration_texts=context.calibration_texts[:3], check_texts=context.check_texts)
    with pytest.raises(BuildError, match="calibration set has 3 texts; at least 8"):
        build(tiny_bert, parse_recipe("onnx,int8-static"), context=small)
    with pytest.raises(BuildError, match="needs calibration data"):
        build(tiny_bert, parse_recipe("onnx,int8-static"), context=BuildContext())


def test_quantizer_failure_names_the_step(tiny_bert, context):
    with pytest.raises(BuildError, match="int8-static: method must be one of minmax, entropy, percentile"):
        build(tiny_bert, parse_recipe("onnx,int8-static:method=kl"), context=context)


def test_openvino_int8_writes_ir_calibrated_on_real_texts(tiny_distilbert, context, texts, capsys):
    pytest.importorskip("nncf")
    artifact = build(tiny_distilbert, parse_recipe("onnx,ov-int8:calibration_size=32"), context=context)
    assert "Statistics collection" not in capsys.readouterr().out  # NNCF's own progress bars are kept out
    assert artifact.format == "openvino" and (artifact.path / "model.xml").is_file()
    stats = artifact.manifest["steps"][-1]["stats"]
    assert stats["calibration_texts"] == 32 and stats["fake_quantize_nodes"] >= 4
    predictor = load_predictor(artifact.path)  # openvino is the default runtime for IR
    assert predictor.runtime == "openvino" and predictor.logits(texts).shape == (len(texts), 3)
    assert {p.name for p in predictor.model_files()} == {"model.xml", "model.bin"}
    with pytest.raises(ModelError, match="onnxruntime runtime runs onnx models"):
        load_predictor(artifact.path, "onnxruntime")
    with pytest.raises(BuildError, match="ov-int8: calibration set has 3 texts"):
        build(tiny_distilbert, parse_recipe("onnx,ov-int8"), context=BuildContext(
            calibration_texts=context.calibration_texts[:3], check_texts=context.check_texts))
