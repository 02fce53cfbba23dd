"""cnnlens: see why an image CNN predicts what it predicts.

The public API is re-exported here; see docs/design.md.
"""

from . import analysis, datasets, evaluation, featurevis, siam
from .attribution import attribute
from .errors import (
    CheckpointError,
    CnnlensError,
    ImageError,
    LayerError,
    MethodError,
    ModelError,
    TargetError,
)
from .explanation import Explanation
from .hooks import capture, preserved
from .io import load_image, sample_images
from .layer_lookup import list_layers as layers
from .models import LoadedModel, Prediction, Preprocess, list_models, load_model
from .registry import get_method, list_methods, register
from .report import report

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "CnnlensError",
    "Explanation",
    "ImageError",
    "LayerError",
    "LoadedModel",
    "MethodError",
    "ModelError",
    "Prediction",
    "Preprocess",
    "TargetError",
    "attribute",
    "analysis",
    "capture",
    "datasets",
    "evaluation",
    "featurevis",
    "get_method",
    "layers",
    "list_methods",
    "list_models",
    "load_image",
    "load_model",
    "preserved",
    "register",
    "report",
    "sample_images",
    "siam",
]
