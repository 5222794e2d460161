import pytest

from slimformer.errors import SlimformerError
from slimformer.techniques import parse_recipe
from slimformer.techniques.onnx_export import OnnxExportConfig
from slimformer.techniques.quantize_onnx import DynamicQuantConfig, StaticQuantConfig


def test_parse_recipe_with_typed_options():
    recipe = parse_recipe("onnx:opset=18, int8-dynamic:per_channel=true:exclude=a+b, int8-static:method=entropy")
    assert recipe[0] == OnnxExportConfig(opset=18)
    assert recipe[1] == DynamicQuantConfig(per_channel=True, exclude=("a", "b"))
    assert recipe[2] == StaticQuantConfig(method="entropy")
    assert recipe[2].to_dict()["technique"] == "int8-static"


@pytest.mark.parametrize("text, message", [
    ("onnx,int9", "unknown technique 'int9'"),
    ("onnx:opsett=3", "onnx has no option 'opsett'"),
    ("int8-dynamic:per_channel=maybe", "true/false"),
    ("onnx:opset=x", "cannot take 'x'"),
    (" , ", "empty recipe"),
])
def test_recipe_mistakes_are_one_line_errors(text, message):
    with pytest.raises(SlimformerError, match=message):
        parse_recipe(text)
