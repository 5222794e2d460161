"""What a model directory is, below both techniques (which make artifacts) and runtimes (which load them).

The contract between the two: a manifest (format, task, labels, max_length, the steps that made it) plus
 - `runtime_settings`, written by techniques and read by runtimes, so neither names the other:
   `{"options": {RUNTIME: {OPTION: VALUE}}, "operator_domains": {DOMAIN: STEP}}` — the options a runtime must
   load this artifact with (ort-optimize: ONNX Runtime's graph optimization level), and the operator domains
   outside standard ONNX its graph uses, each with the step that put them there (a runtime that lacks one
   refuses the artifact in one line naming that step);
 - `tokenizer_files`: every file the tokenizer needs, as its own save_pretrained names them (deploy_files);
 - `bundle`: the runtime, threads and options an exported bundle was measured with.

This module imports nothing heavy (no torch, transformers, onnx): an ONNX or OpenVINO artifact is opened,
its tokenizer built and its model loaded with the runtime's own library, tokenizers and numpy alone.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .cache import read_manifest
from .encoding import load_encoder
from .errors import ModelError
from .models import load_tokenizer, model_labels, quiet_transformers, resolve
from .tasks import get_task, pooling_from_config, task_from_config

# the files a tokenizer of a plain checkpoint may be saved as (WordPiece, BPE, SentencePiece, Unigram...); a built
# artifact records its own list (`tokenizer_files`), taken from the tokenizer itself when it was first built
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model", "bpe.codes", "source.spm", "target.spm", "chat_template.jinja")
# format -> the files that hold the model itself (weights and graph)
MODEL_FILES = {"onnx": ("model.onnx", "model.onnx.data"), "openvino": ("model.xml", "model.bin"),
               "torch-int8": ("model_int8.pt",), "hf": ("model.safetensors", "pytorch_model.bin")}
DEFAULT_RUNTIME = {"hf": "torch", "torch-int8": "torch", "onnx": "onnxruntime", "openvino": "openvino"}
MAX_LENGTH_CAP = 512  # the default never exceeds this: attention cost grows with the square of the length
# above this a configured maximum is a placeholder (transformers writes 1e30 for "no limit")
SANE_MAX_LENGTH = 1 << 20


@dataclass(frozen=True)
class Artifact:
    """A model directory plus its manifest: format, labels, max_length, the steps that made it."""

    path: Path
    manifest: dict

    @property
    def format(self) -> str:
        return self.manifest.get("format", "hf")

    @property
    def labels(self) -> list[str]:
        return self.manifest["labels"]

    @property
    def task(self):
        """The Task this model is for (tasks/): recorded in the manifest, else classification (older artifacts)."""
        return get_task(self.manifest.get("task", "classification"))

    @property
    def pooling(self) -> dict | None:
        """How an embedding model pools token states (tasks.pooling_from_config), as recorded when it was opened."""
        return self.manifest.get("pooling")

    @property
    def max_length(self) -> int | None:
        """The token limit recorded when the model was made (None for a plain checkpoint)."""
        return self.manifest.get("max_length")

    @property
    def key(self) -> str:
        """Content hash: stored for built artifacts, computed from the files for plain checkpoints."""
        return self.manifest.get("key") or content_key(self.path)

    @property
    def runtime_settings(self) -> dict:
        """What the steps that made this artifact require of a runtime (see the module's docstring)."""
        return self.manifest.get("runtime_settings") or {}

    def runtime_options(self, runtime: str) -> dict:
        """The options `runtime` must load this artifact with (a user's own options override them)."""
        return dict((self.runtime_settings.get("options") or {}).get(runtime) or {})

    def operator_domains(self) -> dict[str, str]:
        """Operator domains beyond standard ONNX its graph uses -> the step that introduced each."""
        return dict(self.runtime_settings.get("operator_domains") or {})

    @property
    def bundle(self) -> dict:
        """{variant, runtime, threads, options, metrics...} of an exported bundle (bundle.py); {} for any other."""
        return self.manifest.get("bundle") or {}

    def tokenizer(self):
        """The transformers tokenizer (imports transformers; runtimes use `encoder` instead)."""
        return load_tokenizer(str(self.path))

    def encoder(self, max_length: int):
        """The tokenizer as runtimes use it (tokenizers alone where the directory has a tokenizer.json)."""
        return load_encoder(self.path, max_length)

    def tokenizer_files(self) -> list[Path]:
        """The tokenizer's files: as recorded when built, else every known tokenizer file the directory has."""
        names = self.manifest.get("tokenizer_files") or TOKENIZER_FILES
        return [self.path / n for n in names if (self.path / n).is_file()]

    def model_files(self) -> list[Path]:
        """The files that hold the model itself (weights and graph): what size on disk counts."""
        found = [self.path / n for n in MODEL_FILES.get(self.format, ()) if (self.path / n).is_file()]
        return found or sorted(self.path.glob("model-*.safetensors"))  # sharded checkpoints

    def deploy_files(self) -> list[Path]:
        """Everything a runtime needs to load this artifact, and nothing else (manifest aside)."""
        config = [self.path / "config.json"] if (self.path / "config.json").is_file() else []
        return self.model_files() + self.tokenizer_files() + config

    def steps_changing_weights(self) -> list[str]:
        """Names of the steps that made this artifact that changed its weights (quantized, cast)."""
        return [s["technique"] for s in self.manifest.get("steps", []) if s.get("changes_weights")]


def content_key(path: Path) -> str:
    """Hash of a model directory's files (what the model is, not where it lives)."""
    digest = hashlib.sha256()
    for p in sorted(q for q in path.iterdir() if q.is_file() and q.name != "manifest.json"):
        digest.update(p.name.encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:20]


def save_tokenizer_files(source: Artifact, out: Path) -> list[str]:
    """Copy `source`'s tokenizer files into `out`; returns their names (what a built manifest records).

    A built artifact's recorded list is copied as it is. For a plain checkpoint the tokenizer itself says: the
    files its class names (vocab_files_names: vocab.json and merges.txt for BPE, spiece.model for SentencePiece,
    vocab.txt for WordPiece...) and those its save_pretrained writes, copied byte for byte from the checkpoint
    where it has them, else as save_pretrained wrote them (a checkpoint without tokenizer.json gets one)."""
    if "tokenizer_files" in source.manifest or source.manifest.get("key"):  # built: its list (or known names)
        files = source.tokenizer_files()
        for f in files:
            shutil.copy2(f, out / f.name)
        return [f.name for f in files]
    tokenizer = source.tokenizer()
    with tempfile.TemporaryDirectory(prefix="slimformer-tokenizer-") as tmp:
        written = {Path(p).name for p in tokenizer.save_pretrained(tmp) if Path(p).is_file()}
        named = {v for v in getattr(tokenizer, "vocab_files_names", {}).values() if isinstance(v, str)}
        names = sorted(n for n in written | named | set(TOKENIZER_FILES)
                       if (source.path / n).is_file() or n in written)
        for name in names:
            shutil.copy2(source.path / name if (source.path / name).is_file() else Path(tmp) / name, out / name)
    return names


def open_artifact(path: str | Path) -> Artifact:
    """Any slimformer artifact, or a plain Hugging Face directory of any task (tasks/)."""
    path = Path(resolve(str(path)))
    manifest = read_manifest(path)
    if "format" not in manifest:  # a plain HF checkpoint (maybe from `slimformer train`)
        task = get_task(manifest["task"]) if "task" in manifest else task_from_config(path)
        manifest = {"format": "hf", "task": task.name,
                    "labels": manifest.get("labels") or model_labels(str(path), task),
                    "max_length": manifest.get("max_length"), "steps": [], "source": str(path),
                    **({} if task.labelled else {"pooling": manifest.get("pooling") or pooling_from_config(path)})}
    return Artifact(path, manifest)


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}


def _sane(value) -> int | None:
    return int(value) if isinstance(value, int | float) and 0 < value < SANE_MAX_LENGTH else None


def _configured_limits(source: str | Path) -> tuple[int | None, int | None]:
    """(the tokenizer's model_max_length, the config's position embeddings), None where not said or a placeholder.
    A hub id is asked through transformers."""
    path = Path(source)
    if path.is_dir():
        config, tokenizer_config = _json(path / "config.json"), _json(path / "tokenizer_config.json")
        tokenizer_limit = tokenizer_config.get("model_max_length")
    else:  # a hub id (only reachable online)
        quiet_transformers()
        from transformers import AutoConfig, AutoTokenizer

        config = AutoConfig.from_pretrained(str(source)).to_dict()
        tokenizer_limit = AutoTokenizer.from_pretrained(str(source)).model_max_length
    positions = _sane(config.get("max_position_embeddings")) or _sane(config.get("n_positions"))
    return _sane(tokenizer_limit), positions


def max_positions(source: str | Path) -> int | None:
    """The most tokens the model can take at all (its position embeddings), None where its config does not say."""
    return _configured_limits(source)[1]


def configured_max_length(source: str | Path) -> int | None:
    """The most tokens a model takes by its own configuration: the smaller of its tokenizer's model_max_length
    and its config's position embeddings (None where neither says)."""
    limits = [v for v in _configured_limits(source) if v]
    return min(limits) if limits else None


def default_max_length(source: str | Path) -> int:
    """The token limit a model runs at unless told otherwise: the one recorded in its manifest (what it was
    trained or measured with), else its configured maximum capped at 512, else 512."""
    recorded = read_manifest(Path(source)).get("max_length") if Path(source).is_dir() else None
    return int(recorded) if recorded else min(configured_max_length(source) or MAX_LENGTH_CAP, MAX_LENGTH_CAP)


def check_max_length(source: str | Path, max_length: int | None) -> int:
    """`max_length`, or the model's default when None; refuses one beyond the model's position embeddings."""
    if max_length is None:
        return default_max_length(source)
    limit = max_positions(source) if Path(source).is_dir() else None
    if max_length < 1 or (limit and max_length > limit):
        raise ModelError(f"max_length {max_length} is outside what {source} takes (1 to {limit or 'any'})")
    return int(max_length)
