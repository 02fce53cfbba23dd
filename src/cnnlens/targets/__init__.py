"""Targets beyond one class: what an explanation explains, as small callable objects.

``cl.attribute(model, x, "gradcam", target=EmbeddingSimilarity(ref))`` explains, per image,
the cosine similarity of its embedding to ``ref``'s; every method whose maths allows it
(``MethodInfo.targets == "any"``) takes every kind, and users can write their own by
subclassing :class:`Target` (see :mod:`cnnlens.targets.base`). The kinds:

============================  ===================================================
``ClassLogit(c)``             class ``c``'s logit (what ``target=c`` means)
``ClassProbability(c)``       its softmax probability
``MultiLabel(c)``             ``sigmoid(logit_c)`` of a multi-label head
``Regression(i)``             output ``i`` of a regression model
``EmbeddingSimilarity(ref)``  cosine similarity of embeddings (``cnnlens neighbours``)
``SegmentationRegion(c, m)``  class ``c``'s logits summed over a mask (FCN, DeepLab)
``DetectionBox(box, label)``  score of the best detection matching a box (Faster
                              R-CNN, RetinaNet, SSD)
============================  ===================================================
"""

from __future__ import annotations

from .base import Target, TargetHead, head_of, target_rows
from .embedding import EmbeddingSimilarity, embed, pooled
from .kinds import (
    ClassLogit,
    ClassProbability,
    DetectionBox,
    MultiLabel,
    Regression,
    SegmentationRegion,
)

__all__ = [
    "ClassLogit",
    "ClassProbability",
    "DetectionBox",
    "EmbeddingSimilarity",
    "MultiLabel",
    "Regression",
    "SegmentationRegion",
    "Target",
    "TargetHead",
    "embed",
    "head_of",
    "pooled",
    "target_rows",
]
