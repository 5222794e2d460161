"""Runtime options are declared and typed: a typo or a bad value is refused before anything loads."""

import pytest
from test_cli import assert_one_line_error, run

from slimformer.errors import SlimformerError
from slimformer.runtimes import check_options, load_predictor


def test_options_are_coerced_from_text():
    assert check_options("openvino", {"precision": "BF16", "static_shapes": "false", "max_length": "64"}) == \
        {"precision": "bf16", "static_shapes": False, "max_length": 64}
    assert check_options("onnxruntime", {"fuse_skip_layer_norm": "yes", "device": "CPU"}) == \
        {"fuse_skip_layer_norm": True, "device": "cpu"}
    assert check_options("torch", {"trust_remote_code": False}) == {"trust_remote_code": False}
    assert check_options("torch", {}) == {}  # only what was given: defaults stay out of variant names


@pytest.mark.parametrize("runtime, options, message", [
    ("openvino", {"precison": "bf16"}, "the openvino runtime has no option 'precison' .options: device, hint, "
                                       "max_length, precision, static_shapes"),
    ("openvino", {"precision": "int4"}, "openvino option precision takes f32, bf16, f16; got 'int4'"),
    ("onnxruntime", {"graph_optimization_level": "max"}, "takes disabled, basic, extended, all"),
    ("onnxruntime", {"fuse_skip_layer_norm": "maybe"}, "takes true or false, got 'maybe'"),
    ("torch", {"max_length": "0"}, "torch option max_length takes a positive integer"),
    ("torch", {"precision": "bf16"}, "the torch runtime has no option 'precision'"),
    ("tensorrt", {}, "unknown runtime 'tensorrt'"),
])
def test_bad_options_are_one_line_errors(runtime, options, message):
    with pytest.raises(SlimformerError, match=message) as e:
        check_options(runtime, options)
    assert "\n" not in str(e.value)


def test_every_load_checks_its_options(tiny_onnx, tmp_path):
    from slimformer.runtimes.onnxruntime import OrtPredictor

    with pytest.raises(SlimformerError, match="has no option 'fuse_skip_layernorm'"):
        load_predictor(tmp_path / "missing", "onnxruntime", fuse_skip_layernorm="true")  # refused before loading
    with pytest.raises(SlimformerError, match="has no option 'threads_per_core'"):
        OrtPredictor.load(str(tiny_onnx), threads_per_core=2)  # a runtime's own load drops nothing either
    predictor = load_predictor(tiny_onnx, "onnxruntime", fuse_skip_layer_norm="true", graph_optimization_level="basic")
    assert predictor.disabled_optimizers == [] and predictor.level == "basic"


@pytest.mark.parametrize("option, message", [
    ("precison=bf16", "the openvino runtime has no option 'precison'"),
    ("precision=int4", "openvino option precision takes f32, bf16, f16; got 'int4'"),
])
def test_bench_refuses_bad_options_before_running(option, message, tiny_onnx, keyword_csv, tmp_path):
    out = tmp_path / "bench"
    assert_one_line_error(run("bench", "--variant", str(tiny_onnx), "--data", str(keyword_csv), "--runtime", "openvino",
                              "--option", option, "--out", str(out)), message)
    assert not out.exists()
