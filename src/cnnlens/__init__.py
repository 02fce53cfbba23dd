"""cnnlens: see why an image CNN predicts what it predicts.

The public API is re-exported here; see docs/design.md. Names are imported on
first use (PEP 562), so ``import cnnlens`` costs only what is touched:
``cl.attribute`` loads the method modules, ``cl.analysis`` the analysis package.
"""

from __future__ import annotations

import importlib

# ``cnnlens.report`` is both a subpackage and the public function ``cl.report``. Importing
# the (light) subpackage here, then binding the function, keeps the function: a later
# import of a ``cnnlens.report.*`` module no longer rebinds the name.
from .report import report  # noqa: F401  (public: cl.report)

__version__ = "0.1.0"

# public name -> (module, attribute or None for the module itself)
_EXPORTS: dict[str, tuple[str, str | None]] = {
    "CheckpointError": (".core.errors", "CheckpointError"),
    "CnnlensError": (".core.errors", "CnnlensError"),
    "ImageError": (".core.errors", "ImageError"),
    "LayerError": (".core.errors", "LayerError"),
    "MethodError": (".core.errors", "MethodError"),
    "ModelError": (".core.errors", "ModelError"),
    "TargetError": (".core.errors", "TargetError"),
    "Explanation": (".core.explanation", "Explanation"),
    "capture": (".core.hooks", "capture"),
    "preserved": (".core.hooks", "preserved"),
    "register": (".core.registry", "register"),
    "attribute": (".methods", "attribute"),
    "get_method": (".methods", "get_method"),
    "list_methods": (".methods", "list_methods"),
    "load_image": (".io", "load_image"),
    "sample_images": (".io", "sample_images"),
    "layers": (".models.base", "list_layers"),
    "LoadedModel": (".models", "LoadedModel"),
    "Prediction": (".models", "Prediction"),
    "Preprocess": (".models", "Preprocess"),
    "list_models": (".models", "list_models"),
    "load_model": (".models", "load_model"),
    "progress": (".core.progress", None),
    "core": (".core", None),
    "io": (".io", None),
    "models": (".models", None),
    "attribution": (".attribution", None),
    "perturbation": (".perturbation", None),
    "analysis": (".analysis", None),
    "datasets": (".datasets", None),
    "evaluation": (".evaluation", None),
    "featurevis": (".featurevis", None),
    "targets": (".targets", None),
    "siam": (".siam", None),
}

__all__ = sorted([*_EXPORTS, "report"])


def __getattr__(name: str):
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'cnnlens' has no attribute {name!r}") from None
    value = importlib.import_module(module, __name__)
    if attr is not None:
        value = getattr(value, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
