"""Extremal perturbations (Fong, Patrick & Vedaldi, ICCV 2019).

Theory. Meaningful perturbation (:mod:`.game`) trades the score against the
mask's size with tuned weights, so the size of the answer is a side effect of
the weights. Extremal perturbations fix the size instead: for an area ``a`` (a
fraction of the image) the *extremal* mask is the one of that area that keeps
the most evidence for class ``c``,

    m_a = argmax_{m : ‖m‖_1 = a |Ω|, m ∈ M} f_c(Φ(x; m))

where ``Φ(x; m)`` is the image perturbed where the mask is low (blur, constant
colour or noise, see :mod:`.operators`; ``m = 1`` keeps a pixel), ``|Ω|`` the
number of pixels and ``M`` a family of smooth masks (below). Sweeping ``a``
shows how much of the image the network needs. The *deletion* variant
(``variant="delete"``) looks for the region of area ``a`` whose removal hurts
most: it minimises ``f_c(Φ(x; 1 - m))``, and ``m`` is the deleted region.

The search runs over smooth masks built from a coarse lattice by max-convolution
(:mod:`.smooth_mask`), with the area held by a ranking regulariser ``R_a`` and
a weight ``λ`` that grows during SGD with momentum (:mod:`.extremal_optimiser`):
the mask maximises ``f_c(Φ(x; m)) - λ R_a(m)`` (deletion:
``-f_c(Φ(x; 1 - m)) - λ R_a(m)``).

Score. ``score="logit"`` (default): the paper's reward is the network's class
score before the softmax; ``"prob"`` and ``"logprob"`` are accepted.
Perturbation: ``"blur"`` (default; σ0 = ``sigma`` = 10 px and, with
``blur_levels=2``, a blend of the image with its σ0 blur), ``"constant"`` (the
image's mean colour) or ``"noise"`` (one draw per image from ``seed``), all
from :class:`.operators.Perturbation`.

Several areas. ``areas`` is one number or a list (the paper sweeps areas such
as 0.05, 0.1 and 0.2). Each area gets its own mask; the map returned is the
sum of the masks over the areas, so a pixel kept at every area scores
``len(areas)`` and one kept only at the largest about 1 (for nested masks, a
ranking by the smallest area that keeps a pixel). With one area the map is the
mask itself, in [0, 1].

Batching. Every (image, target, area) triple has its own mask and all are
optimised together: an iteration is one forward and backward pass over the
masks, ``batch_size`` perturbed images at a time. On CPU the passes run on a
channels-last copy of the model. All randomness (tie order, noise) comes from
``seed``, so a call is deterministic on CPU, and each mask follows its own
trajectory: the masks of one target or area equal those of a separate call up
to the model's round-off across batch shapes (exactly, for models whose
per-image output does not depend on the batch).

Result: a :class:`cnnlens.core.masks.MaskResult` in ``extras["mask_result"]``
(``MaskResult.of(expl)``), with ``mask`` the keep-mask (the learned ``m``, or
``1 - m`` for ``variant="delete"``), the edited images, scores, ``area`` (the
mean of ``m``, ``‖m‖_1 / |Ω|``: kept fraction, or deleted fraction for the
deletion variant), ``areas`` (the list) and per-mask ``curves`` ``score``,
``area`` and ``regulariser``, ``(N, T, A, I)`` over the ``I`` iterations run.
The extras also hold, as in earlier versions: ``masks`` (``m``,
``(N, T, A, H, W)``), ``areas``, ``area``, ``area_half`` (the fraction of
pixels with ``m >= 0.5``, ``(N, T, A)``), ``score``, ``score_before``,
``score_perturbed``, ``iterations`` (steps each mask took, ``(N, T, A)``),
``mask_step`` and ``mask_sigma`` (pixels) and ``curve`` (per iteration: the
mean score, area and regulariser over the masks, lists). Smooth edges keep
``area`` above ``a`` (0.13 at a = 0.1 on the bundled model) while
``area_half`` lands within about one point of it.

Reference: R. Fong, M. Patrick, A. Vedaldi. Understanding Deep Networks via
Extremal Perturbations and Smooth Masks. ICCV 2019. arXiv:1910.08485.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..core.batching import FastNet, MaskRows, batch_size_for
from ..core.masks import KEY, MaskResult
from ..core.registry import register
from ..core.targets import resolve_targets
from ..core.tensors import MethodOutput, check_batch_size, check_score, target_scores
from .extremal_optimiser import CURVES, area_regulariser, optimise, ranking_target
from .operators import Perturbation, check_perturbation
from .scoring import MaskScorer
from .smooth_mask import (
    SIGMA_STEPS,
    SmoothMask,
    default_step,
    kernel_matrix,
    lattice,
    max_convolution,
    smooth_max,
)

VARIANTS = ("preserve", "delete")


def _check_areas(areas) -> list[float]:
    values = [areas] if isinstance(areas, (int, float)) and not isinstance(areas, bool) else areas
    if not isinstance(values, Sequence) or isinstance(values, str) or not values:
        raise ValueError(f"areas must be a number or a non-empty list of numbers, got {areas!r}")
    out = []
    for a in values:
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0 < a < 1:
            raise ValueError(f"every area must be a fraction in (0, 1), got {a!r}")
        out.append(float(a))
    return out


def _number(name: str, value, *, low: float | None = None, strict: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if low is not None and (value <= low if strict else value < low):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {low}, got {value!r}")
    return float(value)


def _check_params(
    variant,
    iterations,
    learning_rate,
    momentum,
    area_weight,
    smoothness,
    mask_step,
    mask_sigma,
    sigma,
    blur_levels,
    seed,
) -> tuple[float, float]:
    """Raise ``ValueError`` for a bad parameter; return ``λ``'s start and end."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    for name, value in (("iterations", iterations), ("seed", seed), ("blur_levels", blur_levels)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}")
    if blur_levels < 2:
        raise ValueError(f"blur_levels must be at least 2, got {blur_levels}")
    _number("learning_rate", learning_rate, low=0)
    if not 0 <= _number("momentum", momentum) < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    _number("smoothness", smoothness, low=0, strict=False)
    _number("sigma", sigma, low=0)
    for name, value in (("mask_step", mask_step), ("mask_sigma", mask_sigma)):
        if value is not None:
            _number(name, value, low=0)
    if isinstance(area_weight, (int, float)) and not isinstance(area_weight, bool):
        area_weight = (area_weight, area_weight)
    if not isinstance(area_weight, Sequence) or len(area_weight) != 2:
        raise ValueError(f"area_weight must be a pair (start, end), got {area_weight!r}")
    lam0 = _number("area_weight[0]", area_weight[0], low=0)
    lam1 = _number("area_weight[1]", area_weight[1], low=0)
    return lam0, lam1


@register(
    "extremal",
    "Smooth mask of a given area that keeps (or deletes) the most class evidence "
    "(Fong, Patrick & Vedaldi 2019)",
    family="perturbation",
)
def extremal(
    model,
    x: torch.Tensor,
    target=None,
    *,
    areas: float | Sequence[float] = (0.1,),
    variant: str = "preserve",
    perturbation: str = "blur",
    iterations: int = 800,
    learning_rate: float = 0.01,
    momentum: float = 0.9,
    area_weight: tuple[float, float] = (0.1, 100.0),
    smoothness: float = 0.0,
    mask_step: float | None = None,
    mask_sigma: float | None = None,
    sigma: float = 10.0,
    blur_levels: int = 2,
    score: str = "logit",
    seed: int = 0,
    batch_size: int | None = None,
) -> MethodOutput:
    """Extremal perturbation masks; see the module docstring.

    Args:
        model: a LoadedModel.
        x: ``(N, 3, H, W)`` normalised images.
        target: target specification (see :mod:`cnnlens.core.targets`).
        areas: the area ``a`` (fraction of the image), or several; one mask per area.
        variant: ``"preserve"`` (keep the region, maximise ``f_c(Φ(x; m))``) or
            ``"delete"`` (remove it, minimise ``f_c(Φ(x; 1 - m))``).
        perturbation: ``"blur"``, ``"constant"`` or ``"noise"``.
        iterations: the most SGD steps; a mask stops earlier once it has converged.
        learning_rate, momentum: SGD step size (in the score's starting units, see
            the module docstring) and momentum.
        area_weight: ``(start, end)`` of the geometric schedule of ``λ`` over the
            first 150 iterations (a number: constant ``λ``).
        smoothness: the temperature ``T`` of the smooth max (0: the max).
        mask_step: lattice step in pixels (default: shorter side / 32).
        mask_sigma: kernel σ in pixels (default: 3 lattice steps).
        sigma: σ0 of the blur perturbation, in pixels.
        blur_levels: 2 blends the image with its σ0 blur; more give the per-pixel
            blur ``σ = σ0 (1 - m)`` (see :mod:`.operators`).
        score: ``"logit"`` (default), ``"prob"`` or ``"logprob"``.
        seed: noise and tie-order seed.
        batch_size: perturbed images per forward/backward pass (default: memory-aware).

    Returns:
        ``maps (N, T, H, W)``: the mask (one area) or the sum of the masks (several).
    """
    area_list = _check_areas(areas)
    check_score(score)
    check_batch_size(batch_size)
    check_perturbation(perturbation)
    lam0, lam1 = _check_params(
        variant, iterations, learning_rate, momentum, area_weight, smoothness,
        mask_step, mask_sigma, sigma, blur_levels, seed,
    )  # fmt: skip
    n, _, h, w = x.shape
    step = float(mask_step) if mask_step is not None else default_step((h, w))
    ksigma = float(mask_sigma) if mask_sigma is not None else SIGMA_STEPS * step
    if step > min(h, w):
        raise ValueError(f"mask_step={step} is larger than the image ({h}x{w})")
    fast = FastNet.of(model.net, x)
    x = x.detach()
    with torch.no_grad():
        logits = fast(x).float()
        targets = resolve_targets(target, n, logits)
        before = target_scores(logits, targets, score)
    # one mask per (image, target, area): image-major, then target, then area
    rows = MaskRows.of(targets, area_list)
    bs = batch_size_for(x, batch_size)
    # noise: one draw per image, shared by its targets and areas
    op = Perturbation(x, perturbation, sigma=sigma, levels=blur_levels, seed=seed)
    scorer = MaskScorer(fast, op, rows, score)
    masker = SmoothMask((h, w), step, ksigma, float(smoothness), device=x.device, dtype=x.dtype)
    # the k largest values are picked from the pixels in this (seeded) order, so that
    # among equal values the choice does not follow their place in the image
    order = torch.randperm(h * w, generator=torch.Generator().manual_seed(seed)).to(x.device)
    delete = variant == "delete"
    with torch.no_grad():
        perturbed = fast.scores(op.fully_perturbed(), targets, score)

    fit = optimise(
        scorer, masker, delete=delete, order=order, iterations=iterations,
        learning_rate=learning_rate, momentum=momentum, area_weight=(lam0, lam1), batch_size=bs,
    )  # fmt: skip
    with torch.no_grad():
        masks = torch.cat([masker(fit.params[part]) for part in rows.chunks(bs)])
        keep = 1 - masks if delete else masks
        edited = torch.cat([scorer.edit(keep[part], part) for part in rows.chunks(bs)])
        final = torch.cat([scorer.of_images(edited[part], part) for part in rows.chunks(bs)])
    masks = rows.fold(masks[:, 0])
    result = MaskResult(
        mask=rows.fold(keep[:, 0]),
        edited=rows.fold(edited),
        score=rows.fold(final),
        score_before=before,
        score_perturbed=perturbed,
        area=masks.mean((3, 4)),
        curves={k: rows.fold(v.T.float()) for k, v in zip(CURVES, fit.record)},
        game=variant,
        areas=area_list,
        perturbation=perturbation,
    )
    extras = {
        KEY: result,
        # the keys of earlier versions
        "masks": masks,
        "areas": area_list,
        "area": result.area,
        "area_half": (masks >= 0.5).float().mean((3, 4)),
        "score": result.score,
        "score_before": before,
        "score_perturbed": perturbed,
        "mask_step": step,
        "mask_sigma": ksigma,
        "iterations": rows.fold(fit.steps),
        "curve": {k: [float(v.mean()) for v in rec] for k, rec in zip(CURVES, fit.record)},
    }
    return MethodOutput(masks.sum(2), targets, extras)


__all__ = [
    "VARIANTS",
    "SmoothMask",
    "area_regulariser",
    "default_step",
    "extremal",
    "kernel_matrix",
    "lattice",
    "max_convolution",
    "ranking_target",
    "smooth_max",
]
