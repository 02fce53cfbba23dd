"""The optimiser of extremal perturbations: the area constraint and SGD over smooth masks.

Extremal perturbations (:mod:`.extremal`, Fong, Patrick & Vedaldi 2019) look, for
each image, target and area ``a``, for the smooth mask (:mod:`.smooth_mask`) of
area ``a`` that keeps (or deletes) the most evidence for the class.

Area constraint. The hard constraint is relaxed with a ranking regulariser:
with ``r_a`` the sorted vector of ``(1 - a) |Ω|`` zeros and ``a |Ω|`` ones
(``k = round(a |Ω|)`` ones),

    R_a(m) = ‖vecsort(m) - r_a‖² / |Ω|

which is zero exactly when ``m`` is binary with ``k`` ones, whichever pixels
they are: where the ones go is left to the score. (cnnlens divides the paper's
squared norm by ``|Ω|``; it is computed as ``(Σ m² - 2 Σ_topk m + k) / |Ω|``,
which equals it without a full sort.) The mask maximises

    f_c(Φ(x; m)) - λ R_a(m)        (deletion: -f_c(Φ(x; 1 - m)) - λ R_a(m))

with ``λ`` growing during the optimisation, as in the paper: early on the score
decides where the mask goes, later the area term pins its size down. Equal mask
values (every pixel at the start) are ranked after a random permutation of the
pixels drawn from ``seed``, so which of them count as the largest is not tied to
where they are in the image.

Optimisation (our choices; where the paper gives numbers they were not
available to check here): ``m̄`` starts at 0.5 and is clipped to [0, 1] after
every step of SGD with momentum (``learning_rate`` 0.01, ``momentum`` 0.9).
Both terms are measured in units fixed at the first step, per mask: the score
is divided by the largest absolute value of its gradient over the lattice, and
``R_a`` likewise. ``λ`` grows geometrically from ``area_weight[0]`` (0.1: the
score leads) to ``area_weight[1]`` (100) over the first 150 iterations, then
stays; the learning rate then shrinks by 0.97 per iteration, and a mask stops
once none of its lattice values moves by 1e-3 for 20 iterations in a row
(``iterations=800`` is the limit; masks of the bundled model stop after about
300, those of small test images after 170-450). The units make the schedule
independent of the score's scale and of the model. In our trials Adam, which
gives every lattice value a step of the same size, lost the ranking the score
sets up (the strongest and the weakest evidence rose at the same rate) and ended
the ``coffee`` mask at logit 3.2-3.4 instead of about 6. A larger final
``λ`` makes the area slightly more exact but pulls masks against the image
border, where a smooth mask's edge costs no regulariser: with 1000 one of the
known squares of the tests was found with IoU 0.36-0.52 (0.70-0.85 at 100), and
a ``chelsea`` run with ``λ`` from 1 to 1000 ended on the top edge of the image
(logit 3.4, against 9.8 with the defaults).


Reference: R. Fong, M. Patrick, A. Vedaldi. Understanding Deep Networks via
Extremal Perturbations and Smooth Masks. ICCV 2019. arXiv:1910.08485.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core import progress
from .scoring import MaskScorer
from .smooth_mask import SmoothMask

RAMP = 150  # iterations over which λ grows from area_weight[0] to area_weight[1]
TOLERANCE = 1e-3  # a mask has converged when no lattice value moves by this much ...
PATIENCE = 20  # ... for this many iterations in a row (after the ramp)
DECAY = 0.97  # the learning rate shrinks by this factor per iteration after the ramp

CURVES = ("score", "area", "regulariser")


def ranking_target(n: int, area: float) -> torch.Tensor:
    """``r_a``: ``n - k`` zeros then ``k`` ones, ``k = round(a n)`` (sorted ascending)."""
    k = int(round(float(area) * n))
    out = torch.zeros(n)
    if k:
        out[n - k :] = 1.0
    return out


def area_regulariser(
    mask: torch.Tensor, areas: torch.Tensor | float, order: torch.Tensor | None = None
) -> torch.Tensor:
    """``R_a(m) = ‖vecsort(m) - r_a‖² / |Ω|`` per mask: ``(B,)``.

    Computed without a full sort: with ``s`` the sorted values and ``k`` ones at the
    end of ``r_a``, ``Σ (s_i - r_i)² = Σ m² - 2 (sum of the k largest values) + k``.

    Args:
        mask: ``(B, ...)`` masks; every value after the first axis is one pixel.
        areas: the target area ``a`` of each mask, ``(B,)`` or one number.
        order: optional permutation of the pixels, applied before the k largest are
            picked, so that among equal values the ones counted as "largest" (and
            pulled towards 1) are not decided by raster order. The value of ``R``
            does not depend on it.
    """
    flat = mask.flatten(1)
    b, n = flat.shape
    if order is not None:
        flat = flat[:, order]
    areas = torch.as_tensor(areas, dtype=torch.float64).flatten().expand(b)
    ones = torch.round(areas * n).long()  # k per mask
    top = flat.new_zeros(b)
    for k in sorted(set(ones.tolist()) - {0}):  # one k at a time: each mask's own top-k
        rows = (ones == k).nonzero().flatten().to(flat.device)
        top = top.index_put((rows,), flat[rows].topk(k, dim=1).values.sum(1))
    ones = ones.to(device=flat.device, dtype=flat.dtype)
    return (flat.pow(2).sum(1) - 2 * top + ones) / n


@dataclass(frozen=True)
class Optimised:
    """Where the optimisation of ``B`` masks ended.

    Attributes:
        params: ``(B, h, w)`` the lattice values ``m̄`` of each mask.
        steps: ``(B,)`` SGD steps each mask took before it converged (or the limit).
        record: ``(3, I, B)`` float64 per iteration run and mask: its score, area
            (``mean(m)``) and regulariser ``R_a(m)`` (see :data:`CURVES`); a mask that
            has converged keeps its last values.
    """

    params: torch.Tensor
    steps: torch.Tensor
    record: torch.Tensor


def optimise(
    scorer: MaskScorer,
    masker: SmoothMask,
    *,
    delete: bool,
    order: torch.Tensor,
    iterations: int,
    learning_rate: float,
    momentum: float,
    area_weight: tuple[float, float],
    batch_size: int,
) -> Optimised:
    """SGD with momentum on the masks of ``scorer.rows``; see the module docstring.

    Args:
        scorer: edits and scores the images of the mask rows; ``scorer.rows.areas``
            holds each row's target area.
        masker: lattice values ``(b, h, w)`` -> masks ``(b, 1, H, W)``.
        delete: minimise ``f_c(Φ(x; 1 - m))`` (``m`` the deleted region) instead of
            maximising ``f_c(Φ(x; m))``.
        order: a permutation of the ``H W`` pixels breaking ties in ``R_a``.
        iterations: the most steps.
        learning_rate, momentum: SGD step size (in units of the first step) and momentum.
        area_weight: ``λ`` at the start and after :data:`RAMP` iterations.
        batch_size: masks per forward/backward pass.

    Returns:
        An :class:`Optimised`.
    """
    x, rows = scorer.op.x, scorer.rows
    b, dev, dtype = len(rows), x.device, x.dtype
    lam0, lam1 = area_weight
    sign = 1.0 if delete else -1.0  # minimise sign * score: delete lowers it, preserve raises it
    params = torch.full((b, *masker.shape), 0.5, device=dev, dtype=dtype)
    velocity = torch.zeros_like(params)
    ramp = max(1, min(RAMP, iterations - 1))
    growth = (lam1 / lam0) ** (1.0 / ramp)
    units = torch.ones(2, b, device=dev, dtype=dtype)  # reward, regulariser
    active = torch.ones(b, dtype=torch.bool, device=dev)
    quiet = torch.zeros(b, dtype=torch.long, device=dev)
    steps = torch.zeros(b, dtype=torch.long, device=dev)
    record = torch.zeros(len(CURVES), iterations, b, dtype=torch.float64)
    last = torch.zeros(len(CURVES), b, dtype=torch.float64)  # score, area, regulariser
    ran = 0
    with torch.enable_grad(), progress.task("extremal", iterations) as advance:
        for it in range(iterations):
            lam = lam0 * growth ** min(it, ramp)
            grad = torch.zeros_like(params)
            for part in rows.chunks(batch_size):
                if not bool(active[part].any()):
                    continue  # every mask of this batch has converged
                p = params[part].requires_grad_(True)
                mask = masker(p)
                s = scorer(1 - mask if delete else mask, part)
                reg = area_regulariser(mask, rows.areas[part], order)
                if it == 0:  # units: the largest gradient of each term at the start
                    for j, term in enumerate((sign * s, reg)):
                        (g0,) = torch.autograd.grad(term.sum(), p, retain_graph=True)
                        units[j, part] = g0.abs().flatten(1).amax(1).clamp_min(1e-12)
                loss = sign * s / units[0, part] + lam * reg / units[1, part]
                (grad[part],) = torch.autograd.grad(loss.sum(), p)
                for j, value in enumerate((s, mask.mean((1, 2, 3)), reg)):
                    last[j, part] = value.detach().double().cpu()
            record[:, it] = last
            ran = it + 1
            with torch.no_grad():  # SGD with momentum, then back into [0, 1]
                velocity.mul_(momentum).add_(grad)
                rate = learning_rate * DECAY ** max(0, it - ramp)
                moved = (params - rate * velocity).clamp_(0, 1)
                change = (moved - params).abs().flatten(1).amax(1)
                params = torch.where(active.view(-1, 1, 1), moved, params)
                steps += active.long()
                if it >= ramp:  # converged: lattice values stopped moving
                    quiet = torch.where(change < TOLERANCE, quiet + 1, 0)
                    active &= quiet < PATIENCE
            advance(1)
            if not bool(active.any()):
                advance(iterations - it - 1)  # every mask has converged: the rest is done
                break
    return Optimised(params.detach(), steps, record[:, :ran])


__all__ = [
    "CURVES",
    "DECAY",
    "PATIENCE",
    "RAMP",
    "TOLERANCE",
    "Optimised",
    "area_regulariser",
    "optimise",
    "ranking_target",
]
