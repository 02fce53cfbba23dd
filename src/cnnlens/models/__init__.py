"""Models: loading, preprocessing and class names."""

from .base import LoadedModel, Prediction, Preprocess
from .labels import LabelsWarning, imagenet_classes, read_labels
from .loader import BUNDLED, list_models, load_model
from .names import describe_sources

__all__ = [
    "BUNDLED",
    "LabelsWarning",
    "LoadedModel",
    "Prediction",
    "Preprocess",
    "describe_sources",
    "imagenet_classes",
    "list_models",
    "load_model",
    "read_labels",
]
