"""torch-int8-dynamic, bf16, fp16 and nf4: checkpoints the torch runtime loads."""

import numpy as np
import pytest
from conftest import make_tiny_classifier

from slimformer.runtimes import load_predictor
from slimformer.techniques import BuildError, build, parse_recipe
from slimformer.techniques.torch_precision import INT8_STATE

from .conftest import LABELS


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_distilbert"])
def test_torch_int8_dynamic(model, request, context, texts):
    artifact = build(request.getfixturevalue(model), parse_recipe("torch-int8-dynamic"), context=context)
    assert artifact.format == "torch-int8" and (artifact.path / INT8_STATE).is_file()
    assert artifact.manifest["steps"][0]["stats"]["quantized_linear_layers"] >= 8  # 2 layers x 6 + head
    predictor = load_predictor(artifact.path)
    assert predictor.runtime == "torch" and "Linear" in " ".join(predictor.describe()["quantized_modules"])
    assert predictor.logits(texts).shape == (len(texts), 3)


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_distilbert"])
@pytest.mark.parametrize("recipe, dtype", [("bf16", "bfloat16"), ("fp16", "float16")])
def test_half_precision_checkpoints(model, request, context, texts, recipe, dtype):
    tiny_bert = request.getfixturevalue(model)
    artifact = build(tiny_bert, parse_recipe(recipe), context=context)
    predictor = load_predictor(artifact.path)
    assert predictor.describe()["precision"] == dtype
    # half the bytes of the float32 weights
    assert predictor.model_files()[0].stat().st_size < 0.6 * (tiny_bert / "model.safetensors").stat().st_size
    np.testing.assert_allclose(predictor.logits(texts), load_predictor(tiny_bert).logits(texts), atol=0.1)


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_distilbert"])
def test_onnx_fp16_keeps_float_io(model, request, context, texts):
    artifact = build(request.getfixturevalue(model), parse_recipe("onnx,fp16"), context=context)
    assert artifact.manifest["steps"][-1]["check"]["max_abs_logit_diff"] < 0.05
    assert load_predictor(artifact.path).logits(texts).dtype == np.float32


# bert: 2 layers x 6 + pooler; distilbert: 2 x 6 (pre_classifier matches "classifier": kept in float)
@pytest.mark.parametrize("arch, layers", [("bert", 13), ("distilbert", 12)])
def test_nf4_quantizes_linear_layers_and_reloads(tmp_path_factory, context, texts, arch, layers):
    pytest.importorskip("bitsandbytes")
    # bitsandbytes' CPU kernel works on blocked shapes: hidden 64 rather than 32
    model = make_tiny_classifier(tmp_path_factory.mktemp("m") / f"nf4-{arch}", LABELS, arch=arch, hidden=64)
    artifact = build(model, parse_recipe("nf4"), context=context)
    stats = artifact.manifest["steps"][0]["stats"]
    assert stats["nf4_linear_layers"] == layers and stats["kept_in_float"] == ["classifier"]
    predictor = load_predictor(artifact.path)
    assert "Linear4bit" in predictor.describe()["quantized_modules"]
    assert predictor.logits(texts).shape == (len(texts), 3)


def test_quantized_models_are_not_requantized(tiny_bert, context):
    int8 = build(tiny_bert, parse_recipe("bf16"), context=context)
    with pytest.raises(BuildError, match="made by bf16"):
        build(int8.path, parse_recipe("onnx"), context=context)
