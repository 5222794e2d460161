"""cls-only: the layers after the last attention run on the [CLS] row alone, with the same logits."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from slimformer.runtimes import load_predictor
from slimformer.techniques import BuildError, build, parse_recipe
from slimformer.techniques import cls_only as cls_only_module
from slimformer.techniques.cls_only import POSITION_WISE, _constants, _token_index, select_token_early


def token_gathers(path) -> list[tuple[str, int]]:
    """(op that makes the gathered tensor, how many nodes read that tensor) for every constant-token Gather."""
    graph = onnx.load(str(path / "model.onnx")).graph
    constants = _constants(graph)
    producers = {o: n for n in graph.node for o in n.output}
    return [(producers[n.input[0]].op_type, sum(n.input[0] in m.input for m in graph.node)) for n in graph.node
            if _token_index(n, constants) is not None]


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_distilbert"])
def test_the_token_is_selected_right_after_the_last_attention_and_logits_do_not_move(model, request, context, texts):
    path = request.getfixturevalue(model)
    plain = build(path, parse_recipe("onnx"), context=context)
    pruned = build(path, parse_recipe("onnx,cls-only"), context=context)
    step = pruned.manifest["steps"][-1]
    assert step["stats"]["operators_moved"] >= 7  # out projection, 2 residual Adds, 2 LayerNorms, 2 FFN MatMuls...
    assert step["check"]["max_abs_logit_diff"] < 1e-5
    # before: the head reads a LayerNorm of every token; after: the row is taken where attention hands it over
    assert token_gathers(plain.path) == [("LayerNormalization", 1)]
    # after: one row of the attention output, and one of the residual stream (which the attention reads too)
    assert sorted(made_by not in POSITION_WISE for made_by, _ in token_gathers(pruned.path)) == [False, True]
    assert all(made_by not in POSITION_WISE or readers > 1 for made_by, readers in token_gathers(pruned.path))
    for runtime, options in (("onnxruntime", {}), ("openvino", {"precision": "f32"})):
        reference = load_predictor(plain.path, runtime, threads=1, **options)
        candidate = load_predictor(pruned.path, runtime, threads=1, **options)
        for batch in (1, 4):  # one text at a time and padded batches
            np.testing.assert_allclose(candidate.logits(texts, batch), reference.logits(texts, batch), atol=1e-5)


def test_after_fusion_the_row_is_taken_from_the_fused_attention_and_int8_builds_on_it(tiny_bert, context, texts):
    fused = build(tiny_bert, parse_recipe("onnx,ort-optimize"), context=context)
    pruned = build(tiny_bert, parse_recipe("onnx,ort-optimize,cls-only"), context=context)
    assert sorted(token_gathers(pruned.path)) == [("Attention", 1), ("LayerNormalization", 2)]
    np.testing.assert_allclose(load_predictor(pruned.path).logits(texts), load_predictor(fused.path).logits(texts),
                               atol=1e-5)
    int8 = build(tiny_bert, parse_recipe("onnx,ort-optimize,cls-only,int8-dynamic"), context=context)
    assert int8.manifest["steps"][-1]["check"]["label_flip_rate"] <= 0.1


def test_a_graph_changed_beyond_the_tolerance_is_refused(tiny_bert, context, monkeypatch):
    real = cls_only_module.select_token_early

    def wrong_rewrite(model):  # a broken rewrite: it also changes a bias
        moved = real(model)
        floats = [i for i in model.graph.initializer if i.data_type == TensorProto.FLOAT and len(i.dims) == 1]
        bias = floats[-1]
        bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + 1.0, bias.name))
        return moved

    monkeypatch.setattr(cls_only_module, "select_token_early", wrong_rewrite)
    with pytest.raises(BuildError, match="cls-only: logits moved by .* above the tolerance"):
        build(tiny_bert, parse_recipe("onnx,cls-only:tolerance=0.00001"), context=context)


def _graph(tail: list, extra_outputs: tuple[str, ...] = ()):
    """x [B, L, 4] -> MatMul -> Add bias -> <tail> -> y, as an ONNX model."""
    inits = [numpy_helper.from_array(np.eye(4, dtype=np.float32), "w"),
             numpy_helper.from_array(np.ones(4, np.float32), "b"), numpy_helper.from_array(np.array(0), "zero")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["hb"]), *tail]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", *extra_outputs)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "L", 4])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_only_position_wise_operators_are_passed():
    # a token Gather: moves above Add and MatMul, to the graph input
    model = _graph([helper.make_node("Gather", ["hb", "zero"], ["y"], axis=1)])
    assert select_token_early(model) == 2
    assert [n.op_type for n in model.graph.node] == ["Gather", "MatMul", "Add"]
    # the tensor is also a graph output: every position is needed, nothing moves
    model = _graph([helper.make_node("Gather", ["hb", "zero"], ["y"], axis=1)], extra_outputs=("hb",))
    assert select_token_early(model) == 0
    # a Gather over the hidden axis, and one after an operator that mixes positions: nothing moves
    assert select_token_early(_graph([helper.make_node("Gather", ["hb", "zero"], ["y"], axis=2)])) == 0
    model = _graph([helper.make_node("Softmax", ["hb"], ["s"], axis=1),
                    helper.make_node("Gather", ["s", "zero"], ["y"], axis=1)])
    assert select_token_early(model) == 0
