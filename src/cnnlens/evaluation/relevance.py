"""Relevance mass and relevance rank accuracy: how much of a map lies on the ground truth.

Arras, Osman & Samek ("CLEVR-XAI: A benchmark dataset for the ground truth
evaluation of neural network explanations", Information Fusion 2022, sec. 4)
score a map ``R`` of an image against the ground-truth mask ``GT`` of the
evidence for the class, reading positive relevance only (``R+ = max(R, 0)``):

* **relevance mass accuracy**, the share of positive relevance inside the mask,

      mass = Σ_{u in GT} R+(u) / Σ_u R+(u);

* **relevance rank accuracy**, the share of the ``K = |GT|`` most relevant
  pixels that fall inside the mask,

      rank = |top_K(R+) ∩ GT| / K.

Both are 1 for a perfect map and about ``|GT| / (H W)`` for an uninformative
one. Ties at the ``K``-th value are shared out at their average: when ``m``
pixels tie for the last ``j`` places, each counts ``j / m``, so the score is the
expectation over random tie-breaking and does not depend on pixel order (a
constant map scores exactly ``|GT| / (H W)``). A map with no positive mass has
no mass accuracy (NaN); an empty mask has neither. NaN images are left out of
the mean and counted as ``undefined``.
"""

from __future__ import annotations

import math

import torch

from .common import MeanMetric, MeanScore, maps_and_masks


def positive_share(maps, masks) -> torch.Tensor:
    """``Σ_{mask} S+ / Σ S+`` per image: ``(N,)``, NaN where the denominator or mask is empty."""
    maps, masks = maps_and_masks(maps, masks)
    pos = maps.clamp_min(0).flatten(1).double()
    inside = (pos * masks.flatten(1)).sum(1)
    total = pos.sum(1)
    share = inside / total.clamp_min(1e-300)
    bad = (total <= 0) | ~masks.flatten(1).any(1)
    return torch.where(bad, torch.full_like(share, math.nan), share).float()


def rank_share(maps, masks) -> torch.Tensor:
    """``|top_K(S+) ∩ mask| / K`` per image with ``K = |mask|``: ``(N,)``, NaN for empty masks."""
    maps, masks = maps_and_masks(maps, masks)
    pos = maps.clamp_min(0).flatten(1)
    gt = masks.flatten(1)
    k = gt.sum(1)
    ordered = pos.sort(dim=1, descending=True).values
    kth = ordered.gather(1, (k - 1).clamp_min(0).unsqueeze(1))  # (N, 1)
    above = pos > kth
    tied = pos == kth
    need = (k - above.sum(1)).double()
    hits = (above & gt).sum(1).double()
    hits = hits + need * (tied & gt).sum(1).double() / tied.sum(1).clamp_min(1).double()
    share = hits / k.clamp_min(1).double()
    return torch.where(k > 0, share, torch.full_like(share, math.nan)).float()


class RelevanceMass(MeanMetric):
    """Accumulator of relevance mass accuracy: ``update(maps, masks)``, ``compute()``."""

    name = "relevance_mass"

    def score(self, maps, masks) -> torch.Tensor:
        return positive_share(maps, masks)


class RelevanceRankAccuracy(MeanMetric):
    """Accumulator of relevance rank accuracy: ``update(maps, masks)``, ``compute()``."""

    name = "relevance_rank_accuracy"

    def score(self, maps, masks) -> torch.Tensor:
        return rank_share(maps, masks)


def relevance_mass(maps, masks) -> MeanScore:
    """Relevance mass accuracy (Arras et al. 2022).

    Args:
        maps: ``(N, H, W)`` maps (or ``(N, 1, H, W)``, or an Explanation).
        masks: ``(N, H, W)`` bool ground truth.

    Returns:
        A :class:`MeanScore`: ``values (N,)``, ``mean``, ``n`` and ``undefined``.
    """
    return RelevanceMass().update(maps, masks).compute()


def relevance_rank_accuracy(maps, masks) -> MeanScore:
    """Relevance rank accuracy (Arras et al. 2022); arguments as :func:`relevance_mass`."""
    return RelevanceRankAccuracy().update(maps, masks).compute()


__all__ = [
    "RelevanceMass",
    "RelevanceRankAccuracy",
    "positive_share",
    "rank_share",
    "relevance_mass",
    "relevance_rank_accuracy",
]
