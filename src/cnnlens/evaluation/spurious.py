"""Spurious-cue score: how much of a map rests on a cue that should not matter.

When a dataset plants a cue correlated with the label (a watermark, a coloured
patch, a background texture) a map that puts its evidence on the cue reveals
a model that learned the shortcut. With ``S+ = max(S, 0)`` and the cue region
``C`` of each image, the score is the share of positive saliency on the cue,

    cue(S) = Σ_{u in C} S+(u) / Σ_u S+(u),

averaged over images: 0 means the map ignores the cue, 1 means it sees
nothing else. It is relevance mass (:mod:`.relevance`) read against the cue's
mask instead of the object's, so the same conventions apply: a map with no
positive mass, or an image without a cue region, has no score (NaN); such
images are left out of the mean and counted as ``undefined``. Compare the
score with the cue's share of the image (the score of a uniform map).
"""

from __future__ import annotations

import torch

from .common import MeanMetric, MeanScore
from .relevance import positive_share


class SpuriousCueScore(MeanMetric):
    """Accumulator of the spurious-cue score: ``update(maps, cue_masks)``, ``compute()``."""

    name = "spurious_cue_score"

    def score(self, maps, masks) -> torch.Tensor:
        return positive_share(maps, masks)


def spurious_cue_score(maps, cue_masks) -> MeanScore:
    """Share of each map's positive mass on the cue region, averaged over images.

    Args:
        maps: ``(N, H, W)`` maps (or ``(N, 1, H, W)``, or an Explanation).
        cue_masks: ``(N, H, W)`` bool, True on the spurious cue.

    Returns:
        A :class:`MeanScore` with per-image ``values``, ``mean``, ``n`` and ``undefined``.
    """
    return SpuriousCueScore().update(maps, cue_masks).compute()


__all__ = ["SpuriousCueScore", "spurious_cue_score"]
