"""Models: loading, preprocessing and class names."""

from .base import LoadedModel, Prediction, Preprocess
from .labels import imagenet_classes, read_labels
from .loader import BUNDLED, list_models, load_model

__all__ = [
    "BUNDLED",
    "LoadedModel",
    "Prediction",
    "Preprocess",
    "imagenet_classes",
    "list_models",
    "load_model",
    "read_labels",
]
