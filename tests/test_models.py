import json

import pytest
from conftest import TOPICS, make_tiny_classifier

from slimformer.artifacts import open_artifact
from slimformer.data import load_dataset
from slimformer.errors import ModelError, OutputError
from slimformer.models import classifier_labels, load_classifier
from slimformer.recipes import FUSED
from slimformer.runtimes import load_predictor
from slimformer.techniques import build, context_from_dataset, parse_recipe
from slimformer.training import TrainConfig, train_classifier


def test_classifier_labels_and_loading(tiny_bert):
    assert classifier_labels(str(tiny_bert)) == sorted(TOPICS)
    model, tokenizer, labels = load_classifier(str(tiny_bert))
    assert labels == sorted(TOPICS) and model.config.num_labels == 3 and not model.training


def test_not_a_classifier_and_missing_paths_are_refused(tmp_path, tiny_bert):
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    config = json.loads((tiny_bert / "config.json").read_text()) | {"architectures": ["BertModel"]}
    (encoder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="not a classification model but embedding"):
        classifier_labels(str(encoder))
    assert open_artifact(encoder).task.name == "embedding" and open_artifact(encoder).labels == []
    assert open_artifact(encoder).pooling == {"mode": "mean", "normalize": True}
    with pytest.raises(ModelError, match="model not found"):
        load_classifier(str(tmp_path / "nope" / "model"))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ModelError, match="no config.json"):
        load_classifier(str(tmp_path / "file.txt"))


def test_train_learns_keeps_best_epoch_and_reuses(tmp_path, tiny_bert, keyword_csv):
    dataset = load_dataset(str(keyword_csv))
    config = TrainConfig(epochs=6, lr=3e-3, batch_size=16, max_length=16)
    out = tmp_path / "trained"
    manifest = train_classifier(str(tiny_bert), dataset, out, config)
    assert manifest["metrics"]["test"]["accuracy"] >= 0.8  # chance is 1/3
    best = max(h["val_accuracy"] for h in manifest["history"])
    assert manifest["metrics"]["validation"]["accuracy"] == pytest.approx(best)
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    predictor = load_predictor(out)
    assert predictor.labels == dataset.labels and predictor.max_length == 16
    assert predictor.evaluate(dataset["test"])["accuracy"] == pytest.approx(manifest["metrics"]["test"]["accuracy"])
    assert train_classifier(str(tiny_bert), dataset, out, config).get("reused") is True
    with pytest.raises(OutputError, match="made differently"):
        train_classifier(str(tiny_bert), dataset, out, TrainConfig(epochs=1))
    assert not list(tmp_path.glob(".trained.*"))  # no temporary directory left behind


def test_mpnet_trains_exports_and_quantizes(tmp_path, keyword_csv):
    """mpnet-base's architecture through training, ONNX export and ORT dynamic INT8. ONNX Runtime's transformer
    fusion finds only its Gelu: its attention adds a relative position bias to the scores, its embeddings have no
    token types. (A student cut from it: test_distill.)"""
    dataset = load_dataset(str(keyword_csv))
    base = make_tiny_classifier(tmp_path / "mpnet", dataset.labels, arch="mpnet")
    config = TrainConfig(epochs=1, lr=3e-3, batch_size=16, max_length=16)
    trained = train_classifier(str(base), dataset, tmp_path / "trained", config)
    assert trained["history"][0]["train_loss"] > 0
    context = context_from_dataset(dataset, 32, 16)
    int8 = build(tmp_path / "trained", parse_recipe(f"{FUSED},int8-dynamic"), None, context)
    export, fused, _, quantized = int8.manifest["steps"]
    assert export["check"]["max_abs_logit_diff"] < 1e-4
    assert fused["stats"]["fusion"] == {"Gelu": 2, "LayerNormalization": 5}  # 2 per layer + the embeddings'
    assert quantized["stats"]["quantized_op_counts"]["MatMulInteger"] == 14  # 6 per layer, 2 in the head
