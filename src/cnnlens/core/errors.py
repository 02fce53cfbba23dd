"""Exceptions raised by cnnlens. Every message says what went wrong and what to do."""

from __future__ import annotations


class CnnlensError(Exception):
    """Base class of every error cnnlens raises on purpose."""


class ImageError(CnnlensError, ValueError):
    """An image file could not be read. The message names the file and the reason."""

    def __init__(self, path: object, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class LayerError(CnnlensError, KeyError):
    """A layer name does not exist in the model (the message lists close names)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class TargetError(CnnlensError, ValueError):
    """A target class specification cannot be applied to this model or batch."""


class MethodError(CnnlensError, ValueError):
    """A method cannot run on this model (for example CAM without a GAP + linear head)."""


class CheckpointError(CnnlensError, ValueError):
    """A checkpoint or weights file cannot be loaded (safely)."""


class ModelError(CnnlensError, ValueError):
    """A model name is unknown or its weights cannot be obtained."""


class MissingExtraError(CnnlensError, ImportError):
    """A feature needs a package of an optional extra that is not installed."""
