"""Errors a user can cause. The CLI prints their message on one line and exits 2; bugs still raise."""

from __future__ import annotations

import errno
import os

# the device takes no more data: full, over quota, over the file size limit
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
SQLITE_FULL = 13  # sqlite3.SQLITE_FULL
# what libraries that wrap the OS error in their own type (Rust's io::Error, C++) still say
FULL_TEXTS = (os.strerror(errno.ENOSPC), f"(os error {errno.ENOSPC})", os.strerror(errno.EDQUOT))


class SlimformerError(Exception):
    """Base class: a mistake in the user's input or environment, explained in one line."""


class DataError(SlimformerError):
    """A dataset that is missing, empty, malformed or unknown."""


class ModelError(SlimformerError):
    """A model path or id that does not load as a sequence classifier."""


class LabelMismatchError(SlimformerError):
    """The data's labels are not labels the model knows."""


class AssetError(SlimformerError):
    """A packaged asset (wheel from PyPI) that cannot be fetched or fails its checksum."""


class OutputError(SlimformerError):
    """An output location that exists already or cannot be written."""


class MissingLibraryError(SlimformerError):
    """A library of an optional extra that is not installed (`missing_library` names the extra)."""


# top-level module -> the extra of pyproject.toml that installs it
EXTRAS = {"torch": "torch", "transformers": "torch", "huggingface_hub": "torch", "onnxruntime": "onnx",
          "onnx": "onnx", "onnxscript": "onnx", "openvino": "openvino", "nncf": "openvino", "optuna": "distill",
          "matplotlib": "distill", "datasets": "hf", "bitsandbytes": "nf4", "accelerate": "nf4",
          "pynvml": "nvml", "seqeval": "ner"}


def missing_library(error: BaseException) -> MissingLibraryError | None:
    """The one-line error for an import of an optional library that is not installed (None for anything else):
    a light install (`pip install slimformer onnxruntime`) serves ONNX models without torch or transformers."""
    name = (getattr(error, "name", None) or "").partition(".")[0]
    if not isinstance(error, ModuleNotFoundError) or name not in EXTRAS:
        return None
    return MissingLibraryError(f"{name} is not installed; this needs it: pip install 'slimformer[{EXTRAS[name]}]'")


class DiskFullError(OutputError):
    """The disk refused data part-way. Fatal for a whole run (every later write would fail too); what was
    finished before stays complete, since every artifact and result is written to a temporary name first."""

    def __init__(self, error: OSError | str, where: object = None):
        """`where`: the file or directory being written, for errors that do not name their file."""
        if isinstance(error, OSError):
            where = error.filename or where
            error = f"{error.strerror or error}" + (f" writing {where}" if where else "")
        super().__init__(f"{error}: free space (or choose another --out), then run the command again "
                         "(optimize: with --resume); everything finished so far is kept")


def disk_full(error: BaseException | None) -> OSError | None:
    """The OSError saying the disk takes no more data, if `error` is one or was caused by one."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in FULL_ERRNOS:
            return error
        if getattr(error, "sqlite_errorcode", None) == SQLITE_FULL:  # an Optuna study's SQLite file
            return OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (SQLite: {error})")
        if any(text in str(error) for text in FULL_TEXTS):  # e.g. safetensors' SafetensorError drops the errno
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        error = error.__cause__ or error.__context__
    return None


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty), for one-line errors."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
