"""onnx export and ort-optimize on tiny BERT and DistilBERT, run in real ORT and OpenVINO sessions."""

import numpy as np
import pytest

from slimformer.errors import ModelError
from slimformer.runtimes import load_predictor
from slimformer.techniques import BuildError, build, parse_recipe


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_distilbert"])
def test_export_matches_pytorch_on_every_runtime(model, request, context, texts):
    path = request.getfixturevalue(model)
    artifact = build(path, parse_recipe("onnx"), context=context)
    assert artifact.format == "onnx" and (artifact.path / "model.onnx").is_file()
    step = artifact.manifest["steps"][0]
    assert step["check"]["max_abs_logit_diff"] < 1e-4 and step["check"]["n"] == len(context.check_texts)
    reference = load_predictor(path, "torch").logits(texts)
    for runtime, options in (("onnxruntime", {}), ("openvino", {"precision": "f32"})):
        predictor = load_predictor(artifact.path, runtime, threads=1, **options)
        assert predictor.labels == artifact.labels
        np.testing.assert_allclose(predictor.logits(texts, batch_size=4), reference, atol=1e-4)
    assert load_predictor(artifact.path).runtime == "onnxruntime"  # the default for onnx artifacts


def test_export_beyond_tolerance_is_refused_and_leaves_nothing(tiny_bert, context, tmp_path):
    from slimformer.cache import cache_dir

    with pytest.raises(BuildError, match=r"differ from PyTorch by .* above the tolerance"):
        build(tiny_bert, parse_recipe("onnx:tolerance=-1"), context=context)
    assert not list((cache_dir() / "artifacts").glob(".*partial"))


def test_exporter_failure_names_the_architecture(tiny_bert, context, monkeypatch):
    import torch

    def fail(*args, **kwargs):
        raise RuntimeError("Unsupported: ONNX export of operator foo\nmore detail")

    monkeypatch.setattr(torch.onnx, "export", fail)
    with pytest.raises(BuildError, match="onnx: the exporter cannot handle BertForSequenceClassification: "
                                         "Unsupported: ONNX export of operator foo$"):
        build(tiny_bert, parse_recipe("onnx:opset=16"), context=context)


def test_fusion_statistics_and_graph_level(tiny_bert, context, texts):
    artifact = build(tiny_bert, parse_recipe("onnx,ort-optimize:level=extended"), context=context)
    stats = artifact.manifest["steps"][-1]["stats"]
    assert stats["graph_optimization_level"] == "extended"
    assert stats["fusion"]["Attention"] == 2 and stats["fusion"]["EmbedLayerNormalization"] == 1
    # SkipLayerNormalization and BiasGelu stay unfused unless asked for (slow CPU kernel; bias kept in the MatMul)
    assert "SkipLayerNormalization" not in stats["fusion"] and "BiasGelu" not in stats["fusion"]
    assert stats["fusion"]["LayerNormalization"] >= 4
    predictor = load_predictor(artifact.path, "onnxruntime")
    assert predictor.describe()["graph_optimization_level"] == "extended"
    np.testing.assert_allclose(predictor.logits(texts), load_predictor(tiny_bert).logits(texts), atol=1e-4)
    fused = build(tiny_bert, parse_recipe("onnx,ort-optimize:skip_layer_norm=true:bias_gelu=true"), context=context)
    assert fused.manifest["steps"][-1]["stats"]["fusion"]["SkipLayerNormalization"] >= 2
    assert fused.manifest["steps"][-1]["stats"]["fusion"]["BiasGelu"] == 2
    np.testing.assert_allclose(load_predictor(fused.path).logits(texts), predictor.logits(texts), atol=1e-4)


def test_session_leaves_skip_layer_norm_unfused_on_cpu(tiny_bert, context, texts, tmp_path):
    from slimformer.runtimes.onnxruntime import open_session
    from slimformer.techniques.quantize_onnx import op_counts

    artifact = build(tiny_bert, parse_recipe("onnx,ort-optimize"), context=context)  # LayerNorms left unfused
    counts = {}
    for fuse in (False, True):
        session, disabled = open_session(artifact.path / "model.onnx", fuse_skip_layer_norm=fuse,
                                         save_optimized=tmp_path / f"{fuse}.onnx")
        counts[fuse] = op_counts(tmp_path / f"{fuse}.onnx")
        assert disabled == ([] if fuse else ["SkipLayerNormFusion"])
    assert counts[False]["SkipLayerNormalization"] == 0 and counts[False]["LayerNormalization"] >= 4
    assert counts[True]["SkipLayerNormalization"] >= 4
    default = load_predictor(artifact.path, "onnxruntime")
    assert default.describe()["disabled_optimizers"] == ["SkipLayerNormFusion"]
    fused = load_predictor(artifact.path, "onnxruntime", fuse_skip_layer_norm="true")
    np.testing.assert_allclose(default.logits(texts), fused.logits(texts), atol=1e-5)


def test_build_is_cached_by_content(tiny_bert, context, monkeypatch):
    from slimformer.techniques import base
    from slimformer.techniques.ort_optimize import OrtOptimizeConfig

    first = build(tiny_bert, parse_recipe("onnx,ort-optimize:fusion=false"), context=context)
    calls = []
    monkeypatch.setitem(base.HANDLERS, OrtOptimizeConfig, lambda *a: calls.append(a))
    again = build(tiny_bert, parse_recipe("onnx,ort-optimize:fusion=false"), context=context)
    assert again.path == first.path and calls == []


def test_corrupt_or_truncated_onnx_is_a_clear_error(tiny_bert, context, tmp_path):
    built = build(tiny_bert, parse_recipe("onnx"), out=tmp_path / "v", context=context)
    data = (built.path / "model.onnx").read_bytes()
    (built.path / "model.onnx").write_bytes(data[: len(data) // 3])
    for runtime in ("onnxruntime", "openvino"):
        with pytest.raises(ModelError, match=f"cannot load .*model.onnx in {runtime}"):
            load_predictor(built.path, runtime)


def test_format_mismatch_says_what_to_do(tiny_bert, context):
    with pytest.raises(BuildError, match=r"int8-dynamic takes onnx models, not hf \(e.g. --recipe onnx,int8-dynamic\)"):
        build(tiny_bert, parse_recipe("int8-dynamic"), context=context)
    with pytest.raises(ModelError, match="onnxruntime runtime runs onnx models"):
        load_predictor(tiny_bert, "onnxruntime")


def test_length_buckets():
    from slimformer.runtimes.openvino import length_buckets

    assert length_buckets(64) == [16, 32, 64]
    assert length_buckets(128) == [16, 32, 64, 128]
    assert length_buckets(100) == [16, 32, 64, 100]
    assert length_buckets(8) == [8]


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_distilbert"])
def test_openvino_static_shapes_pad_to_a_bucket_and_give_the_dynamic_logits(model, request, context, texts):
    artifact = build(request.getfixturevalue(model), parse_recipe("onnx"), context=context)
    static = load_predictor(artifact.path, "openvino", threads=1, precision="f32")
    dynamic = load_predictor(artifact.path, "openvino", threads=1, precision="f32", static_shapes="false")
    assert static.describe()["static_shapes"][0] == 16 and static.describe()["static_shapes"][-1] == static.max_length
    assert dynamic.describe()["static_shapes"] == []
    texts = texts + [" ".join(texts[:3]), " ".join(texts * 3)]
    lengths = {static.tokenize([t])["input_ids"].shape[1] for t in texts}
    assert len(lengths) > 1  # texts of several lengths, each padded to its bucket
    one_by_one = np.concatenate([static.logits([t]) for t in texts])  # batch 1: the static models
    # a random tiny model's logits are ~0.01: compare relatively (an unmasked pad moves them by ~1e-3 of that)
    np.testing.assert_allclose(one_by_one, dynamic.logits(texts, batch_size=1), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(static.logits(texts, batch_size=4), one_by_one, rtol=1e-4, atol=1e-7)  # dynamic
    long = static.tokenize([" ".join(texts) * 20])  # truncated at max_length: the largest bucket, no padding
    assert long["input_ids"].shape[1] == static.max_length
    np.testing.assert_allclose(static.forward(long), dynamic.forward(long), rtol=1e-4, atol=1e-7)
