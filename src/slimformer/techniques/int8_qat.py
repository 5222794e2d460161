"""`int8-qat`: the exported graph of a quantization-aware-trained checkpoint, quantized with the scales its
training settled on (compress/qat.py), as QuantizeLinear/DequantizeLinear pairs.

Every MatMul of an encoder Linear gets its input quantized per tensor (uint8, the trained scale and zero point)
and its weight stored as int8 per output channel (scale = max|w| / 127, the formula the training used), each
followed by a DequantizeLinear: the QDQ format ONNX Runtime fuses into integer matmuls and OpenVINO turns into
its own INT8. The pooler and classifier stay float, as in training, and so do the MatMuls that run on the [CLS]
row alone after `cls-only` (rank-2 inputs): ORT fuses those with their bias into a Gemm, which has no integer
QDQ kernel, so quantizing them would only add a dequantization of their weights per call. Use the unfused
export: the MatMuls are found by the module names torch.onnx.export gives them (`onnx,cls-only,int8-qat`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..compress.qat import QAT_FILE, WEIGHT_MAX
from .base import Artifact, BuildContext, BuildError, TechniqueConfig, onnx_path, register


@dataclass(frozen=True)
class QatQuantConfig(TechniqueConfig):
    name = "int8-qat"
    libraries = ("onnx", "numpy")


def node_name(module: str) -> str:
    """The end of the name torch.onnx.export (TorchScript) gives the MatMul of the Linear `module` of the Hugging
    Face model (the export wraps it in its task head, which adds a prefix: see `find_nodes`)."""
    parts = []
    for part in module.split("."):  # a ModuleList index stays on its list's name: layer.0
        if part.isdigit() and parts:
            parts[-1] += f".{part}"
        else:
            parts.append(part)
    return "/" + "/".join(parts) + "/MatMul"


def find_nodes(graph, modules) -> dict:
    """module -> the graph's MatMul node of that Linear, wherever the export nested the model (missing: absent)."""
    ends = {node_name(m): m for m in modules}
    found = {}
    for node in graph.node:
        cut = node.name.find("/", 1)
        while cut != -1:  # every "/..." suffix of the node's name
            if (module := ends.get(node.name[cut:])) is not None:
                found[module] = node
                break
            cut = node.name.find("/", cut + 1)
        if (module := ends.get(node.name)) is not None:
            found[module] = node
    return found


def qat_scales(source: Artifact) -> dict:
    """qat.json of the checkpoint the ONNX artifact was exported from."""
    origin = Path(source.manifest.get("source", source.path))
    path = origin / QAT_FILE
    if not path.is_file():
        raise BuildError(f"int8-qat: {origin} has no {QAT_FILE}; it takes a model made by quantization-aware "
                         "training (`optimize --compress qat`), exported with `onnx`")
    qat = json.loads(path.read_text())
    if qat.get("scheme") == "dynamic":
        raise BuildError(f"int8-qat: {origin} was trained for ONNX Runtime's dynamic INT8; build it with "
                         "ort-int8-dynamic's recipe (onnx,ort-optimize,cls-only,int8-dynamic:weight_type="
                         f"{qat.get('weight_type', 'int8')})")
    return qat["inputs"]


@register(QatQuantConfig)
def quantize_qat(config: QatQuantConfig, source: Artifact, out: Path, context: BuildContext) -> dict:
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    scales = qat_scales(source)
    model = onnx.load(str(onnx_path(source)))
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    by_module = find_nodes(graph, scales)
    missing = [m for m in scales if m not in by_module]
    if missing:
        raise BuildError(f"int8-qat: no MatMul ending in {node_name(missing[0])} in the graph ({len(missing)} of "
                         f"{len(scales)} missing); use the unfused export (onnx,cls-only,int8-qat)")
    inferred = onnx.shape_inference.infer_shapes(model).graph.value_info
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in inferred}
    new_nodes, new_inits, quantized_inputs, kept = {}, [], {}, []
    for module, qparams in scales.items():
        node = by_module[module]
        x, w_name = node.input[0], node.input[1]
        if ranks.get(x) == 2:  # the [CLS] row alone (cls-only): ORT fuses it with its bias into a float Gemm
            kept.append(module)
            continue
        if w_name not in initializers:
            raise BuildError(f"int8-qat: the weight of {node.name} is not a constant")
        if x not in quantized_inputs:  # one Q/DQ pair per activation (query, key and value share theirs)
            prefix = f"{x}_qat"
            new_inits += [numpy_helper.from_array(np.array(qparams["scale"], np.float32), f"{prefix}_scale"),
                          numpy_helper.from_array(np.array(qparams["zero_point"], np.uint8), f"{prefix}_zero_point")]
            new_nodes.setdefault(f"{prefix}_dq", []).extend([
                helper.make_node("QuantizeLinear", [x, f"{prefix}_scale", f"{prefix}_zero_point"], [f"{prefix}_q"],
                                 name=f"{prefix}_QuantizeLinear"),
                helper.make_node("DequantizeLinear", [f"{prefix}_q", f"{prefix}_scale", f"{prefix}_zero_point"],
                                 [f"{prefix}_dq"], name=f"{prefix}_DequantizeLinear")])
            quantized_inputs[x] = f"{prefix}_dq"
        node.input[0] = quantized_inputs[x]
        weight = numpy_helper.to_array(initializers[w_name]).astype(np.float32)  # [in, out]: channels on axis 1
        w_scale = np.maximum(np.abs(weight).max(0) / WEIGHT_MAX, 1e-8).astype(np.float32)
        q = np.clip(np.round(weight / w_scale), -WEIGHT_MAX, WEIGHT_MAX).astype(np.int8)
        prefix = f"{w_name}_qat"
        graph.initializer.remove(initializers[w_name])
        new_inits += [numpy_helper.from_array(q, f"{prefix}_quantized"),
                      numpy_helper.from_array(w_scale, f"{prefix}_scale"),
                      numpy_helper.from_array(np.zeros_like(q[0]), f"{prefix}_zero_point")]
        new_nodes.setdefault(f"{prefix}_dq", []).append(helper.make_node(
            "DequantizeLinear", [f"{prefix}_quantized", f"{prefix}_scale", f"{prefix}_zero_point"], [f"{prefix}_dq"],
            name=f"{prefix}_DequantizeLinear", axis=1))
        node.input[1] = f"{prefix}_dq"
    # keep the graph topologically sorted: the new nodes go right before the first node that reads their output
    ordered = []
    for node in graph.node:
        for name in node.input:
            ordered.extend(new_nodes.pop(name, []))
        ordered.append(node)
    del graph.node[:]
    graph.node.extend(ordered)
    graph.initializer.extend(new_inits)
    onnx.checker.check_model(model)
    onnx.save(model, str(out / "model.onnx"))
    return {"quantized_matmuls": len(scales) - len(kept), "quantized_inputs": len(quantized_inputs),
            "kept_float": kept}
