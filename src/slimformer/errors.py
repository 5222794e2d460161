"""Errors a user can cause. The CLI prints their message on one line and exits 2; bugs still raise."""


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


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty), for one-line errors."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
