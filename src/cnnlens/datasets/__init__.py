"""Datasets with ground truth for grading explanations.

* :func:`planted`: synthetic images whose class evidence (small coloured
  objects on natural textures) is known pixel by pixel, with a confounded
  variant whose training split carries a spurious cue.
* :func:`train_planted`: a small CNN for those images, cached on disk.
* :func:`read_voc`, :func:`read_coco`, :func:`box_masks`: box annotations of
  real photos for the pointing game and localisation metrics.
* :mod:`.scenic`: synthetic scenicness scenes (attribute textures in known
  regions, a target linear in their areas) for SIAM models.
"""

from . import scenic
from .cues import CONFOUNDS
from .dataset import PlantedDataset, planted
from .planted import PlantedSample, PlantedSpec, render
from .planted_nets import planted_cnn, planted_convnext, planted_vit
from .readers import Annotation, Object, box_masks, read_coco, read_voc
from .trainer import accuracy, cache_dir, predict_planted, train_planted

__all__ = [
    "CONFOUNDS",
    "Annotation",
    "Object",
    "PlantedDataset",
    "PlantedSample",
    "PlantedSpec",
    "accuracy",
    "box_masks",
    "cache_dir",
    "planted",
    "planted_cnn",
    "planted_convnext",
    "planted_vit",
    "predict_planted",
    "read_coco",
    "read_voc",
    "render",
    "scenic",
    "train_planted",
]
