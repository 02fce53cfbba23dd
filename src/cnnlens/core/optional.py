"""Packages of optional extras, imported where a feature needs them.

``pip install cnnlens`` brings what ``cnnlens explain`` needs. Dataset maps
(PCA, t-SNE, UMAP) and the SIAM evaluation need the ``analysis`` extra, the
distributed index ``ray``, Hugging Face models ``hf``; :func:`require` imports
such a package or says, in one line, which extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingExtraError

# import name -> (distribution on PyPI, extra that brings it)
EXTRAS = {
    "sklearn": ("scikit-learn", "analysis"),
    "openTSNE": ("openTSNE", "analysis"),
    "umap": ("umap-learn", "analysis"),
    "ray": ("ray[data]", "ray"),
    "transformers": ("transformers", "hf"),
}


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` (e.g. ``"sklearn.decomposition"``) for ``purpose``.

    Raises:
        MissingExtraError: the package is not installed; the message names the extra.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".")[0]
        if e.name is not None and e.name.split(".")[0] != top:
            raise  # the package is there but one of its own imports failed: show that
        dist, extra = EXTRAS.get(top, (top, None))
        how = f"pip install 'cnnlens[{extra}]'" if extra else f"pip install {dist}"
        raise MissingExtraError(f"{purpose} needs {dist}, which is not installed: {how}") from None
