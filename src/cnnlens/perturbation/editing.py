"""Editing images with binary masks and reading the scores: what the paper's analyses share.

Box interrogation (:mod:`.interrogate`), the smallest deleting box
(:mod:`.boxes`) and representativeness (:mod:`.representativeness`) all delete
a region ``R`` of an image with one of the operators of :mod:`.operators` and
compare the target score with the untouched and the fully perturbed image.
With a binary keep-mask ``m`` (0 on ``R``) every operator reduces to pasting the
fully perturbed image into the region,

    Φ(x0; m) = m x0 + (1 - m) Φ(x0; 0)                      (:func:`composite`)

and the score ``p`` of the edit is read relative to the original's ``p0`` and
the fully perturbed image's ``p_b``,

    p' = (p - p_b) / (p0 - p_b)                              (:func:`normalized_score`)

so 1 means untouched and 0 means as suppressed as perturbing everything.
"""

from __future__ import annotations

import math

import torch

from ..core.batching import FastNet, score_batches
from ..core.targets import resolve_targets
from .operators import Perturbation


def composite(x: torch.Tensor, base: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``m x + (1 - m) base``: ``Φ(x; m)`` for binary masks (``x``, ``base`` broadcast).

    Args:
        x: ``(N or 1, C, H, W)`` images.
        base: ``Φ(x; 0)``, shaped like ``x``.
        masks: ``(K, 1, H, W)`` keep-masks (1 = keep).
    """
    return masks * x + (1 - masks) * base


def fully_perturbed(
    x: torch.Tensor,
    kind: str,
    *,
    sigma: float = 10.0,
    noise_std: float = 1.0,
    seed: int = 0,
) -> torch.Tensor:
    """``Φ(x; 0)`` for every image of ``x (N, C, H, W)``: blurred with ``σ0``, mean colour, noise.

    Binary masks only ever pick level 0 (the image) or the last level (``σ0``) of
    the blur stack, so two levels are enough and the result equals
    ``Perturbation(x, kind)(m)`` at any number of levels.
    """
    return Perturbation(
        x, kind, sigma=sigma, levels=2, noise_std=noise_std, seed=seed
    ).fully_perturbed()


def normalized_score(
    p: torch.Tensor, p0: torch.Tensor, pb: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """``(p - p_b) / (p0 - p_b)``: 1 = untouched score, 0 = as low as the fully perturbed image.

    ``p0`` and ``pb`` broadcast against ``p``. Where perturbing the whole image
    does not lower the score (``p0 - p_b <= eps``) the ratio means nothing and
    is NaN.
    """
    den = p0 - pb
    out = (p - pb) / den.clamp_min(eps)
    return torch.where(den > eps, out, torch.full_like(out, math.nan))


def score_images(
    net: torch.nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    score: str,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Scores ``(B, T)`` of ``images (B, 3, H, W)`` for ``targets (B, T)``, in chunks.

    ``net`` runs as it is (no inference copy); ``batch_size=None`` runs everything
    in one pass. The caller sets eval mode and ``no_grad``.
    """
    bs = batch_size or max(1, images.shape[0])
    return score_batches(FastNet.plain(net), images, targets, score, bs)


def class_scores(
    fast: FastNet, images: torch.Tensor, score: str, batch_size: int | None = None
) -> torch.Tensor:
    """Scores of every class, ``(B, classes)`` on the CPU, for ``images (B, 3, H, W)``.

    For edits whose targets are looked up afterwards (duplicates removed first).
    ``batch_size=None`` runs everything in one pass; the caller sets ``no_grad``.
    """
    bs = batch_size or max(1, images.shape[0])
    return score_batches(fast, images, None, score, bs).cpu()


def targets_of(target, logits: torch.Tensor, shape: torch.Size, what: str = "maps") -> torch.Tensor:
    """The ``(N, T)`` classes that given maps or masks explain, checked against them.

    Args:
        target: a ``(N, T)`` tensor (taken as it is) or any :mod:`cnnlens.core.targets`
            specification (resolved from ``logits``).
        logits: ``(N, C)`` the model's output on the images.
        shape: ``(N, T, ...)`` of the maps or masks.
        what: how the message names them.

    Raises:
        ValueError: the targets do not give one class per map.
    """
    if isinstance(target, torch.Tensor) and target.dim() == 2:
        targets = target.to(device=logits.device, dtype=torch.long)
    else:
        targets = resolve_targets(target, logits.shape[0], logits)
    if targets.shape != shape[:2]:
        raise ValueError(
            f"targets {tuple(targets.shape)} do not match {what} {tuple(shape)}: "
            "give one target per map"
        )
    return targets


__all__ = [
    "class_scores",
    "composite",
    "fully_perturbed",
    "normalized_score",
    "score_images",
    "targets_of",
]
