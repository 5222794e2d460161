"""Compression that trains: intermediate-layer distillation terms, FFN pruning (reloads, exports, quantizes),
depth/width in the distillation study, quantization-aware training and its INT8 export with the trained scales."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import TOPICS, keyword_rows, make_tiny_classifier, write_csv

from slimformer.bench.runner import DataSpec
from slimformer.compress import qat
from slimformer.compress.prune import ffn_importance, prune_ffn
from slimformer.data import load_dataset, with_selection
from slimformer.distill import (
    DistillConfig,
    SearchSpace,
    StudentSpec,
    attention_loss,
    distill,
    hidden_state_loss,
    layer_map,
    train_student,
)
from slimformer.models import load_classifier
from slimformer.runtimes import load_predictor
from slimformer.techniques import build, context_from_dataset, parse_recipe
from slimformer.training import TrainConfig, save_classifier


@pytest.fixture(scope="module")
def topics(tmp_path_factory):
    path = write_csv(tmp_path_factory.mktemp("data") / "topics300.csv", keyword_rows(300, seed=1))
    return path, load_dataset(str(path))


def test_layer_map_and_intermediate_losses_against_hand_computation():
    assert layer_map(6, 3) == [1, 3, 5] and layer_map(4, 4) == [0, 1, 2, 3]
    g = torch.Generator().manual_seed(0)
    teacher = tuple(torch.randn(2, 3, 4, generator=g) for _ in range(5))  # embeddings + 4 layers
    student = (teacher[0], teacher[2] + 1.0, teacher[4])  # layer 1 stands for teacher layer 1 (off by 1), 2 for 3
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert hidden_state_loss(student, teacher, mask).item() == pytest.approx(0.5)  # (1 + 0) / 2 layers
    assert hidden_state_loss(teacher, teacher, mask).item() == 0.0
    padded = list(student)
    padded[1] = padded[1].clone()
    padded[1][0, 2] += 100.0  # a padding position never counts
    assert hidden_state_loss(tuple(padded), teacher, mask).item() == pytest.approx(0.5)
    t = torch.softmax(torch.randn(2, 2, 3, 3, generator=g), -1)
    s = torch.softmax(torch.randn(2, 2, 3, 3, generator=g), -1)
    expected = (t * (t.log() - s.log())).sum(-1)[mask.bool().unsqueeze(1).expand(2, 2, 3)].mean()
    assert attention_loss(s, t, mask).item() == pytest.approx(expected.item(), rel=1e-5)
    assert attention_loss(t, t, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert attention_loss(s[:, :1], t, mask).item() >= 0  # different head counts: heads averaged first


def test_ffn_pruning_keeps_the_important_neurons_reloads_and_quantizes(tmp_path, teacher4, topics):
    from transformers import AutoModelForSequenceClassification

    model, tokenizer, labels = load_classifier(str(teacher4))
    scores = ffn_importance(model, tokenizer, topics[1]["train"], 16, texts=64)
    assert len(scores) == 4 and all(s.shape == (64,) and (s >= 0).all() and s.max() > 0 for s in scores)
    # the Taylor score is what removing a neuron costs to first order: the least important costs less loss
    batch = tokenizer(topics[1]["train"].texts[:64], padding=True, return_tensors="pt")
    y = torch.from_numpy(topics[1]["train"].labels[:64])

    def loss_without(layer: int, neuron: int) -> float:
        layer_module = model.bert.encoder.layer[layer]
        saved = layer_module.output.dense.weight[:, neuron].clone()
        with torch.no_grad():
            layer_module.output.dense.weight[:, neuron] = 0
            value = model(**batch, labels=y).loss.item()
            layer_module.output.dense.weight[:, neuron] = saved
        return value

    with torch.no_grad():
        base = model(**batch, labels=y).loss.item()
    top, bottom = int(np.argmax(scores[0])), int(np.argmin(scores[0]))
    assert abs(loss_without(0, top) - base) > abs(loss_without(0, bottom) - base)
    kept_rows = model.bert.encoder.layer[2].intermediate.dense.weight[np.sort(np.argsort(-scores[2])[:24])].clone()
    prune_ffn(model, 24, scores)
    assert model.config.intermediate_size == 24
    assert torch.equal(model.bert.encoder.layer[2].intermediate.dense.weight, kept_rows)
    assert all(layer.output.dense.in_features == 24 for layer in model.bert.encoder.layer)
    save_classifier(model, tokenizer, tmp_path / "pruned", {"kind": "hf-classifier", "labels": labels,
                                                            "max_length": 16})
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "pruned").eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(**batch).logits, model.eval()(**batch).logits, atol=1e-6)
    # every technique applies to it: ONNX export (checked against PyTorch) and ORT dynamic INT8
    context = context_from_dataset(topics[1], 32, 16)
    onnx_artifact = build(tmp_path / "pruned", parse_recipe("onnx,ort-optimize,cls-only"), None, context)
    int8 = build(tmp_path / "pruned", parse_recipe("onnx,ort-optimize,cls-only,int8-dynamic"), tmp_path / "int8",
                 context)
    assert onnx_artifact.manifest["steps"][0]["check"]["max_abs_logit_diff"] < 1e-4
    assert int8.manifest["steps"][-1]["stats"]["quantized_op_counts"]
    answers = load_predictor(tmp_path / "int8", "onnxruntime", threads=1).logits(topics[1]["test"].texts[:8], 4)
    assert answers.shape == (8, 3) and np.isfinite(answers).all()
    with pytest.raises(Exception, match="cannot keep"):
        prune_ffn(model, 25, scores)


def test_intermediate_terms_train_a_narrower_student_and_the_study_searches_depth_and_width(tmp_path, teacher4,
                                                                                             topics):
    config = DistillConfig(hidden_weight=1.0, attention_weight=1.0, augment=0,
                           train=TrainConfig(epochs=1, lr=3e-3, max_length=16, precision="fp32"))
    summary = distill(str(teacher4), DataSpec(str(topics[0])), tmp_path / "kd", StudentSpec(layers=2, width=0.5),
                      trials=3, config=config, space=SearchSpace(layers=(1,), widths=(0.25,)), bench=False)
    trials = json.loads((tmp_path / "kd" / "trials.json").read_text())
    assert trials[0]["params"]["layers"] == 2 and trials[0]["params"]["width"] == 0.5  # the given student first
    assert {t["params"]["layers"] for t in trials} <= {1, 2} and {t["params"]["width"] for t in trials} <= {0.25, 0.5}
    saved = json.loads((tmp_path / "kd" / "model" / "config.json").read_text())
    assert saved["num_hidden_layers"] == summary["params"]["layers"]
    assert saved["intermediate_size"] == round(64 * summary["params"]["width"])
    assert saved.get("_attn_implementation") in (None, "sdpa")
    from safetensors import safe_open

    with safe_open(tmp_path / "kd" / "model" / "model.safetensors", "pt") as f:
        assert len(list(f.keys())) > 10 and not any("distill_projection" in k for k in f.keys())


def test_projection_when_widths_differ_is_learned_and_dropped(tmp_path, teacher4, topics):
    teacher, tokenizer, labels = load_classifier(str(teacher4))
    narrow = make_tiny_classifier(tmp_path / "narrow", labels, hidden=16, layers=1)
    student, _, _ = load_classifier(str(narrow))
    dataset = topics[1]
    targets = {"logits": np.zeros((len(dataset["train"]), 3), np.float32),
               "cls": np.zeros((len(dataset["train"]), 32), np.float32)}
    config = DistillConfig(hidden_weight=1.0, train=TrainConfig(epochs=1, lr=1e-3, max_length=16, precision="fp32"))
    before = {k: v.clone() for k, v in student.state_dict().items()}
    train_student(student, tokenizer, dataset, targets, config, "narrow", teacher=teacher)
    assert not hasattr(student, "distill_projection") and set(student.state_dict()) == set(before)
    assert any(not torch.equal(before[k], v) for k, v in student.state_dict().items())
    with pytest.raises(Exception, match="need the teacher"):
        train_student(student, tokenizer, dataset, targets, config, "narrow")


def test_qat_export_runs_as_integer_matmuls_with_the_trained_scales(tmp_path, topics):
    import collections

    import onnx
    import onnxruntime as ort

    path = make_tiny_classifier(tmp_path / "m", sorted(TOPICS), layers=2, seed=5)
    model, tokenizer, labels = load_classifier(str(path))
    qat.prepare(model, scheme="static")
    batch = tokenizer(topics[1]["train"].texts[:64], padding=True, return_tensors="pt")
    model.train()
    with torch.no_grad():
        model(**batch)  # the first batch sets the activation ranges
    model.eval()
    texts = topics[1]["test"].texts[:16]
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        simulated = model(**encoded).logits.numpy()
    scales = qat.convert(model)
    assert len(scales) == 12 and all(0 <= s["zero_point"] <= 255 and s["scale"] > 0 for s in scales.values())
    with torch.no_grad():
        float_logits = model(**encoded).logits.numpy()
    save_classifier(model, tokenizer, tmp_path / "qat", {"kind": "hf-classifier", "labels": labels, "max_length": 16})
    (tmp_path / "qat" / qat.QAT_FILE).write_text(json.dumps({"inputs": scales}))
    context = context_from_dataset(topics[1], 32, 16)
    built = build(tmp_path / "qat", parse_recipe("onnx,int8-qat"), tmp_path / "int8", context)
    assert built.manifest["steps"][-1]["stats"]["quantized_matmuls"] == 12
    int8 = load_predictor(tmp_path / "int8", "onnxruntime", threads=1).logits(texts, 16)
    # the INT8 graph computes what training simulated, not the float model
    assert np.abs(int8 - simulated).max() < 0.2 * np.abs(int8 - float_logits).max() + 1e-4
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(tmp_path / "int8" / "model.onnx"), options, providers=["CPUExecutionProvider"])
    ops = collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)
    assert ops["MatMulIntegerToFloat"] == 12 and not ops["DequantizeLinear"]  # integer matmuls, nothing float left
    # after cls-only the [CLS]-row MatMuls stay float; the rest is still integer
    cls_only = build(tmp_path / "qat", parse_recipe("onnx,cls-only,int8-qat"), None, context)
    assert len(cls_only.manifest["steps"][-1]["stats"]["kept_float"]) == 3
    # OpenVINO runs the same QDQ model
    ov = load_predictor(tmp_path / "int8", "openvino", threads=1, precision="f32").logits(texts, 16)
    assert np.abs(ov - int8).max() < 0.05
    with pytest.raises(Exception, match="has no qat.json"):
        build(path, parse_recipe("onnx,int8-qat"), None, context)


def test_optimize_with_prune_and_qat_builds_and_measures_the_compressed_variants(tmp_path, teacher4, topics):
    from slimformer.bench.runner import BenchSettings
    from slimformer.compress.pipeline import CompressSettings
    from slimformer.compress.qat import QatConfig
    from slimformer.optimize import OptimizeSettings, optimize

    quick = DistillConfig(augment=0, select_fraction=0.2,
                          train=TrainConfig(epochs=1, lr=3e-3, max_length=16, precision="fp32"))
    settings = OptimizeSettings(  # as `--selection-slice 0.2` sets them: the pruned student and QAT choose on it
        threads=(1,), only=("torch-fp32",), distill_config=quick, student_layers=2,
        compress=CompressSettings(levers=("prune", "qat"), qat=QatConfig(epochs=1, augment=0, lr=1e-3,
                                                                         select_fraction=0.2)),
        bench=BenchSettings(latency_samples=10, warmup=2, batch_sizes=(1,), throughput_min_s=0.05,
                            throughput_min_texts=8, throughput_repeats=1, cold_start_runs=0, settle_s=0.0))
    selection = optimize(str(teacher4), DataSpec(str(topics[0])), tmp_path / "run", settings)
    names = {r["name"] for r in selection["rows"]}
    assert {"pruned-torch-fp32-t1", "pruned-qat-ort-int8-dynamic-t1"} <= names, names  # built for what it trained
    pruned = json.loads((tmp_path / "run" / "pruned" / "seed-42" / "model" / "config.json").read_text())
    assert pruned["num_hidden_layers"] == 2 and pruned["intermediate_size"] == 32  # half of 64
    assert json.loads((tmp_path / "run" / "qat" / "pruned" / qat.QAT_FILE).read_text())["scheme"] == "dynamic"
    trained = json.loads((tmp_path / "run" / "qat" / "pruned" / "manifest.json").read_text())
    n_slice = len(with_selection(topics[1], 0.2, seed=42)["selection"])
    assert trained["metrics"]["selection"]["n"] == n_slice and trained["recipe"]["config"]["select_fraction"] == 0.2
    assert trained["train_samples"] == len(topics[1]["train"]) - n_slice  # QAT keeps the slice out too
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["pruned"]["seeds"][0]["seed"] == 42 and results["pruned"]["seeds"][0]["chosen_on"] == "selection"
    assert "select_fraction" not in qat.recorded(QatConfig())  # QAT runs made before the slice still resume
    with pytest.raises(Exception, match="unknown compression lever"):
        from slimformer.compress.pipeline import check_levers

        check_levers(("prune", "lora"))


@pytest.mark.parametrize("weights", ["int8", "uint8"])  # VNNI CPUs; the others
def test_dynamic_qat_simulates_ort_dynamic_int8_of_the_fused_graph(tmp_path, topics, weights):
    path = make_tiny_classifier(tmp_path / "m", sorted(TOPICS), layers=2, seed=6)
    model, tokenizer, labels = load_classifier(str(path))
    qat.prepare(model, scheme="dynamic", weight_type=weights)
    wrapped = {n: m for n, m in model.named_modules() if hasattr(m, "group")}
    assert len(wrapped) == 14  # 6 per layer, pooler, classifier
    assert len(wrapped["bert.encoder.layer.0.attention.self.key"].group) == 3  # one scale: ORT's fused QKV weight
    assert [n for n, m in wrapped.items() if m.first_row] == [  # what cls-only runs on the [CLS] row
        "bert.encoder.layer.1.attention.output.dense", "bert.encoder.layer.1.intermediate.dense",
        "bert.encoder.layer.1.output.dense"]
    model.eval()
    texts = topics[1]["test"].texts[:12]

    def encode(batch):
        return tokenizer(batch, padding=True, truncation=True, max_length=16, return_tensors="pt")

    with torch.no_grad():
        alone = np.concatenate([model(**encode([t])).logits.numpy() for t in texts])
        padded = model(**encode(texts)).logits.numpy()
    assert np.abs(padded - alone).max() < 1e-5  # padding is left out of the simulated ranges, as at batch 1
    qat.convert(model)
    assert not any(hasattr(m, "group") for m in model.modules())
    assert not hasattr(model.bert.embeddings.word_embeddings, "parametrizations")
    with torch.no_grad():
        float_logits = np.concatenate([model(**encode([t])).logits.numpy() for t in texts])
    save_classifier(model, tokenizer, tmp_path / "qat", {"kind": "hf-classifier", "labels": labels, "max_length": 16})
    (tmp_path / "qat" / qat.QAT_FILE).write_text(json.dumps({"scheme": "dynamic"}))
    context = context_from_dataset(topics[1], 32, 16)
    from slimformer.recipes import FUSED

    recipe = parse_recipe(f"{FUSED},int8-dynamic:weight_type={weights}")
    built = build(tmp_path / "qat", recipe, tmp_path / "int8", context)
    ops = built.manifest["steps"][-1]["stats"]["quantized_op_counts"]  # everything the simulation covers
    assert (ops["QAttention"], ops["QEmbedLayerNormalization"], ops["MatMulInteger"]) == (2, 1, 8), ops
    predictor = load_predictor(tmp_path / "int8", "onnxruntime", threads=1)
    int8 = np.concatenate([predictor.logits([t], 16) for t in texts])
    # ORT's INT8 answers are what training simulated, not what the float weights give
    assert np.abs(int8 - alone).max() < min(1e-4, 0.1 * np.abs(int8 - float_logits).max())
    with pytest.raises(Exception, match="trained for ONNX Runtime's dynamic INT8"):
        build(tmp_path / "qat", parse_recipe("onnx,int8-qat"), None, context)
    with pytest.raises(qat.QatError, match="unknown QAT scheme 'fp8'"):
        qat.check_scheme("fp8")
    # runs recorded before the schemes existed (static QAT, or none) resume: their settings read the same
    assert "scheme" in qat.recorded(qat.QatConfig()) and "scheme" not in qat.recorded(qat.QatConfig(), used=False)
    assert "weight_type" not in qat.recorded(qat.QatConfig(scheme="static"))
