"""The contract below techniques and runtimes: runtime_settings that techniques write and runtimes read, one check
interface, per-task checks (labels, vectors, per-token outputs with padding masked), tasks a technique applies to,
the tokenizer's own files, and an import graph without cycles."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FILLER, SPECIAL, TOPICS, keyword_rows

from slimformer.artifacts import open_artifact
from slimformer.errors import ModelError, SlimformerError
from slimformer.runtimes import check_options, load_predictor
from slimformer.tasks import CLASSIFICATION, EMBEDDING, NER
from slimformer.techniques import BuildContext, BuildError, build, parse_recipe, recipe_text

SRC = Path(__file__).parents[1] / "src" / "slimformer"
TEXTS = [" ".join(r["text"].split()[:3 + i % 6]) for i, r in enumerate(keyword_rows(24, seed=5))]  # 3-8 words


def _tiny_encoder(out: Path, task) -> Path:
    """A 2-layer BERT of `task` (token classifier or bare encoder) with a word-level vocabulary."""
    import torch
    from transformers import BertConfig, BertForTokenClassification, BertModel, BertTokenizer

    torch.manual_seed(0)
    out.mkdir(parents=True)
    vocab = SPECIAL + sorted({w for ws in TOPICS.values() for w in ws} | set(FILLER)) + [str(i) for i in range(400)]
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n")
    labels = ["O", "B-X", "I-X"]
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, num_labels=len(labels),
                        id2label=dict(enumerate(labels)), label2id={v: i for i, v in enumerate(labels)})
    (BertForTokenClassification if task is NER else BertModel)(config).save_pretrained(out)
    BertTokenizer(vocab=str(out / "vocab.txt"), do_lower_case=True).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_ner(tmp_path_factory) -> Path:
    return _tiny_encoder(tmp_path_factory.mktemp("models") / "ner", NER)


@pytest.fixture(scope="module")
def tiny_embedder(tmp_path_factory) -> Path:
    return _tiny_encoder(tmp_path_factory.mktemp("models") / "embedder", EMBEDDING)


@pytest.fixture(scope="module")
def tiny_roberta(tmp_path_factory) -> Path:
    """A RoBERTa classifier with a byte-level BPE tokenizer trained here: vocab.json + merges.txt + tokenizer.json."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import RobertaConfig, RobertaForSequenceClassification, RobertaTokenizerFast

    out = tmp_path_factory.mktemp("models") / "roberta"
    out.mkdir()
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok.train_from_iterator([r["text"] for r in keyword_rows(200)], trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tok.model.save(str(out))  # vocab.json and merges.txt, as RoBERTa checkpoints ship them
    RobertaTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
                         unk_token="<unk>", pad_token="<pad>", mask_token="<mask>").save_pretrained(out)
    torch.manual_seed(0)
    labels = sorted(TOPICS)
    config = RobertaConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=130, pad_token_id=1, bos_token_id=0,
                           eos_token_id=2, num_labels=3, id2label=dict(enumerate(labels)),
                           label2id={v: i for i, v in enumerate(labels)})
    RobertaForSequenceClassification(config).save_pretrained(out)
    return out


def test_importing_runtimes_or_artifacts_imports_no_technique():
    code = ("import sys, slimformer.runtimes, slimformer.artifacts, slimformer.bundle; "
            "print(sorted(m for m in sys.modules if m.startswith('slimformer')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "slimformer.runtimes" in loaded and "slimformer.artifacts" in loaded
    assert "slimformer.techniques" not in loaded and "slimformer.check" not in loaded, loaded


def test_no_function_local_imports_between_the_layers():
    """No import inside a function dodges a cycle between artifacts, runtimes, the check, techniques and bundle."""
    import ast

    layers = {"artifacts", "runtimes", "techniques", "bundle", "check", "models", "tasks"}
    files = [SRC / "artifacts.py", SRC / "bundle.py", SRC / "check.py", SRC / "models.py",
             *(SRC / "runtimes").glob("*.py"), *(SRC / "techniques").glob("*.py")]
    for path in files:
        for fn in (n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and node.level and (node.module or "").split(".")[0] in layers:
                    raise AssertionError(f"{path.name}:{node.lineno} imports {node.module} inside {fn.name}")


def test_no_runtime_or_fallback_names_a_technique():
    from slimformer.techniques import TECHNIQUES

    techniques = [n for n in TECHNIQUES if "-" in n]  # onnx, fp16, bf16... are formats and precisions too
    for path in [*sorted((SRC / "runtimes").glob("*.py")), SRC / "optimize" / "fallback.py", SRC / "check.py"]:
        text = path.read_text()
        named = [n for n in techniques if re.search(rf"""["']{re.escape(n)}["']""", text)]
        assert not named and '["technique"]' not in text, f"{path.name} names {named} or reads a step's technique"
        assert "HANDLERS" not in text and not re.search(r"import .*\b_[a-z]", text), path.name
    assert "quantize_onnx" not in (SRC / "optimize" / "fallback.py").read_text()  # nor imports one's config


def test_fallback_asks_the_step_for_its_probe():
    from slimformer.optimize.fallback import can_fall_back

    assert can_fall_back(parse_recipe("onnx,int8-dynamic")) and can_fall_back(parse_recipe("onnx,int8-static"))
    assert not can_fall_back(parse_recipe("onnx,ort-optimize")) and not can_fall_back([])
    static = parse_recipe("int8-static:exclude=a:calibration_size=256")[0].probe("n")
    assert (static.only, static.exclude, static.calibration_size) == (("n",), (), 64)


def test_techniques_do_not_import_runtimes():
    for path in [*(SRC / "techniques").glob("*.py")]:
        assert "runtimes" not in re.sub(r'""".*?"""|#.*', "", path.read_text(), flags=re.S), path.name


def test_ort_optimize_writes_runtime_settings_that_runtimes_read(tiny_bert, tmp_path):
    fused = build(tiny_bert, parse_recipe("onnx,ort-optimize:level=basic"), tmp_path / "fused", BuildContext())
    assert fused.runtime_settings == {"options": {"onnxruntime": {"graph_optimization_level": "basic"}},
                                      "operator_domains": {"com.microsoft": "ort-optimize"}}
    assert load_predictor(fused.path).describe()["graph_optimization_level"] == "basic"
    assert load_predictor(fused.path, graph_optimization_level="all").describe()["graph_optimization_level"] == "all"
    with pytest.raises(ModelError, match=r"^openvino cannot run .*fused: ort-optimize fused it into ONNX Runtime-only "
                                         r"operators \(com.microsoft domain\); build the openvino variant without "
                                         r"ort-optimize$"):
        load_predictor(fused.path, "openvino")
    # the runtime reads the settings, not the step: any step recording a domain is refused the same way
    plain = build(tiny_bert, parse_recipe("onnx"), tmp_path / "plain", BuildContext())
    assert plain.runtime_settings == {} and load_predictor(plain.path, "openvino").runtime == "openvino"
    shutil.copytree(plain.path, tmp_path / "marked")
    manifest = json.loads((tmp_path / "marked" / "manifest.json").read_text())
    manifest["runtime_settings"] = {"operator_domains": {"org.example": "some-step"},
                                    "options": {"onnxruntime": {"graph_optimization_level": "extended"}}}
    (tmp_path / "marked" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match=r"some-step fused it into operators openvino does not run \(org.example "
                                         "domain\); build the openvino variant without some-step$"):
        load_predictor(tmp_path / "marked", "openvino")
    assert load_predictor(tmp_path / "marked").describe()["graph_optimization_level"] == "extended"
    unfused = build(fused.path.parent / "plain", parse_recipe("ort-optimize:fusion=false"), None, BuildContext())
    assert "operator_domains" not in unfused.runtime_settings  # nothing fused: openvino may run it
    assert load_predictor(unfused.path, "openvino").runtime == "openvino"


def test_threads_and_options_are_checked(tiny_bert, tmp_path):
    onnx = build(tiny_bert, parse_recipe("onnx"), tmp_path / "m", BuildContext())
    with pytest.raises(SlimformerError, match="onnxruntime option threads takes a positive integer, got '0'"):
        load_predictor(onnx.path, threads=0)
    with pytest.raises(SlimformerError, match="threads is not a openvino option: give the thread count on its own"):
        check_options("openvino", {"threads": 2, "precision": "f32"})  # e.g. bench --option threads=2
    assert load_predictor(onnx.path, threads=None).threads is None  # the library's default, as the build's check


def test_recipe_text_round_trips():
    recipe = parse_recipe("onnx:opset=16,ort-optimize:level=basic:skip_layer_norm=true,"
                          "int8-dynamic:exclude=a/MatMul+b/Gemm,cls-only")
    assert recipe_text(recipe) == ("onnx:opset=16,ort-optimize:level=basic:skip_layer_norm=true,"
                                   "int8-dynamic:exclude=a/MatMul+b/Gemm,cls-only")
    assert parse_recipe(recipe_text(recipe)) == recipe
    from dataclasses import replace

    with pytest.raises(SlimformerError, match="cannot be written as a recipe"):
        recipe_text([replace(recipe[2], exclude=("a,b",))])


def test_cls_only_is_refused_on_other_tasks_before_anything_is_built(tiny_ner, tiny_embedder, tmp_path):
    from slimformer.techniques.cls_only import ClsOnlyConfig

    assert ClsOnlyConfig().applies_to(CLASSIFICATION) and not ClsOnlyConfig().applies_to(NER)
    for model, task in ((tiny_ner, "ner"), (tiny_embedder, "embedding")):
        with pytest.raises(BuildError, match=rf"^cls-only applies to classification models only; .* is a {task} "
                                             r"model \(drop cls-only from the recipe\)$"):
            build(model, parse_recipe("onnx,cls-only"), tmp_path / task, BuildContext())
        assert not (tmp_path / task).exists()


def test_per_token_check_masks_padding_and_compares_tokens(tiny_ner):
    from slimformer import check

    built = build(tiny_ner, parse_recipe("onnx"), None, BuildContext(check_texts=TEXTS))
    step = built.manifest["steps"][-1]
    assert built.task is NER and step["check"]["n"] == len(TEXTS)
    assert step["check"]["label_flip_rate"] == 0 and step["check"]["max_abs_diff"] < 1e-4
    predictor = check.load(built)
    lengths = predictor.encoder.lengths(TEXTS)
    assert len(set(lengths)) > 1  # batches are padded
    batched = check.outputs(predictor, TEXTS, NER, batch_size=8)
    assert batched.shape == (lengths.sum(), 3)  # one row per real token, padding dropped
    np.testing.assert_allclose(batched, check.outputs(predictor, TEXTS, NER, batch_size=1), atol=1e-5)
    assert step["check"]["tokens"] == lengths.sum()
    # OpenVINO runs batch 1 padded to a length bucket: its per-token answer is cut back to the text's tokens
    openvino = load_predictor(built.path, "openvino", threads=1)
    assert openvino.describe()["static_shapes"]
    np.testing.assert_allclose(check.outputs(openvino, TEXTS, NER, batch_size=1), batched, atol=1e-4)


def test_embedding_check_compares_vectors_by_cosine(tiny_embedder):
    from slimformer import check

    built = build(tiny_embedder, parse_recipe("onnx"), None, BuildContext(check_texts=TEXTS))
    found = built.manifest["steps"][-1]["check"]
    assert "label_flip_rate" not in found and found["mean_cosine"] > 0.9999 and found["max_abs_diff"] < 1e-4
    a = np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)
    moved = check.compare(EMBEDDING, np.array([[0.0, 1.0], [0.0, 1.0]], np.float32), a)
    assert moved == {"mean_cosine": 0.5, "min_cosine": 0.0, "max_abs_diff": 1.0}
    assert check.compare(CLASSIFICATION, a[::-1].copy(), a)["label_flip_rate"] == 1.0


def test_tokenizer_files_are_the_tokenizers_own(tiny_roberta, tmp_path):
    """A BPE tokenizer's vocab.json and merges.txt travel with every built artifact and its deploy files."""
    from transformers import AutoTokenizer

    built = build(tiny_roberta, parse_recipe("onnx,ort-optimize"), tmp_path / "out",
                  BuildContext(check_texts=TEXTS[:8]))
    names = {f.name for f in built.deploy_files()}
    assert {"vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "model.onnx"} <= names
    assert set(built.manifest["tokenizer_files"]) >= {"vocab.json", "merges.txt"}
    assert (built.path / "merges.txt").read_bytes() == (tiny_roberta / "merges.txt").read_bytes()
    only = tmp_path / "deployed"
    only.mkdir()
    for f in built.deploy_files():
        shutil.copy2(f, only / f.name)
    slow = AutoTokenizer.from_pretrained(only, use_fast=False)  # needs vocab.json + merges.txt
    assert slow(TEXTS[:2])["input_ids"] == AutoTokenizer.from_pretrained(tiny_roberta)(TEXTS[:2])["input_ids"]
    # RoBERTa goes through ORT's 'bert' optimizer, heads and hidden size from its config
    stats = built.manifest["steps"][-1]["stats"]
    assert stats["model_type"] == "bert" and (stats["num_heads"], stats["hidden_size"]) == (2, 32)
    assert stats["fusion"].get("Attention") == 2
    assert built.manifest["steps"][-1]["check"]["max_abs_diff"] < 1e-4


def test_ort_fusion_refuses_an_unsupported_model_type_in_one_line(tmp_path):
    from slimformer.techniques.ort_optimize import fusion_settings

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_head": 2, "n_embd": 32}))
    with pytest.raises(BuildError, match=r"^ort-optimize: ONNX Runtime's transformer fusion does not support model "
                                         r"type 'gpt2' \(supported: bert, distilbert, roberta, .*\); drop "
                                         "ort-optimize or pass ort-optimize:fusion=false$"):
        fusion_settings(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "distilbert", "n_heads": 12, "dim": 768}))
    assert fusion_settings(tmp_path) == ("bert", 12, 768)


def test_plain_checkpoint_deploy_files_include_bpe_files(tiny_roberta):
    names = {f.name for f in open_artifact(tiny_roberta).deploy_files()}
    assert {"vocab.json", "merges.txt", "tokenizer.json", "config.json", "model.safetensors"} <= names
