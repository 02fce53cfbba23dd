"""Shapley value sampling over image segments (Castro, Gomez & Tejada, "Polynomial
calculation of the Shapley value based on sampling", Computers & Operations Research
2009; Strumbelj & Kononenko, "An efficient explanation of individual classifications
using game theory", JMLR 2010).

The Shapley value of segment ``j`` in the game ``v(S) = f(x(S))`` (the score with the
segments of ``S`` kept and the others replaced by a baseline, see :mod:`.segments`) is
its marginal contribution averaged over all orders in which the segments can arrive:

    phi_j = 1/d! sum_{orders pi} [ v(Pre_pi(j) + j) - v(Pre_pi(j)) ],

where ``Pre_pi(j)`` are the segments before ``j`` in the order ``pi``. Sampling
``samples`` uniform random orders and averaging gives an unbiased estimate. One order
costs ``d - 1`` forward passes: start from the baseline image (every segment removed,
``v(empty)``, shared by all orders), add the segments one at a time, and end at the
image itself (``v(full) = f(x)``, already known). The contributions along one order
telescope, so every order, and hence the estimate, is exactly efficient:

    sum_j phi_j = f(x) - f(baseline)       (``extras["gap"]``: the round-off left).

``extras["stderr"] (N, T)`` is the largest standard error of a segment's estimate
(standard deviation of its contributions over the orders / sqrt(samples)).

How we differ from Captum's ``ShapleyValueSampling`` with a ``feature_mask`` of the
same segments: the same estimator (uniform random permutations, one segment added at a
time from the baseline). Captum runs ``perturbations_per_eval`` steps of one order per
pass (default 1) and once per target; we batch ``batch_size`` steps across the orders,
draw the orders from a seeded ``torch.Generator`` (Captum: the global RNG), run a
coalition that several orders share once, reuse ``f(x)`` for the last step, and read
every target of an image from the same passes.
"""

from __future__ import annotations

import torch

from ..core.registry import register
from ..core.tensors import MethodOutput
from .segments import SegmentRun, check_count, generator


def orders(samples: int, d: int, g: torch.Generator) -> torch.Tensor:
    """``(samples, d)`` uniform random permutations of the segments."""
    return torch.stack([torch.randperm(d, generator=g) for _ in range(samples)])


def prefixes(perms: torch.Tensor) -> torch.Tensor:
    """The coalitions ``(P, d - 1, d)`` bool after the first ``1 .. d-1`` steps of each order."""
    p, d = perms.shape
    position = perms.argsort(1)  # position[o, j]: when segment j arrives in order o
    steps = torch.arange(1, d)
    return position[:, None, :] < steps[None, :, None]


def contributions(perms: torch.Tensor, chain: torch.Tensor) -> torch.Tensor:
    """Marginal contributions ``(P, d, T)`` per order and segment from the scores along
    each order, ``chain (P, d + 1, T)`` (empty coalition first, full last)."""
    p, d = perms.shape
    steps = chain[:, 1:] - chain[:, :-1]  # (P, d, T): what the k-th arrival added
    out = torch.empty_like(steps)
    out.scatter_(1, perms[:, :, None].expand_as(steps), steps)
    return out


@register(
    "shapley_sampling",
    "Shapley values of superpixels from random orders of adding them "
    "(Castro et al. 2009; Strumbelj & Kononenko 2010)",
    signed=True,
    family="perturbation",
)
def shapley_sampling(
    model,
    x: torch.Tensor,
    target=None,
    *,
    segments: str | torch.Tensor = "slic",
    n_segments: int = 50,
    samples: int = 10,
    baseline: str | float = "zero",
    score: str = "logit",
    batch_size: int | None = None,
    seed: int = 0,
) -> MethodOutput:
    """Shapley value sampling maps: every pixel carries its segment's estimated value.

    Args:
        model, x, target: a LoadedModel, ``(N, 3, H, W)`` normalised images and the
            target specification (see :mod:`cnnlens.core.targets`).
        segments, n_segments, baseline, score, batch_size: as for
            :func:`cnnlens.attribution.lime.lime` (see :mod:`.segments`).
        samples: random orders per image; each costs ``d - 1`` forward passes.
        seed: seed of the orders' generator; the same seed gives the same maps.

    Returns:
        ``maps (N, T, H, W)``; extras ``segments``, ``n_segments``, ``base_score (N, T)``,
        ``gap (N, T)`` (sum of weights minus ``f(x) - f(baseline)``) and ``stderr (N, T)``.
    """
    check_count("samples", samples)
    generator(seed)
    run = SegmentRun.start(
        model, x, target, segments=segments, n_segments=n_segments, baseline=baseline,
        score=score, batch_size=batch_size,
    )  # fmt: skip
    n, t = run.targets.shape
    maps = torch.empty(n, t, *x.shape[-2:], dtype=x.dtype, device=x.device)
    base_score, gap, stderr = (torch.empty(n, t, dtype=torch.float64) for _ in range(3))
    for i in range(n):
        d = run.seg.counts[i]
        perms = orders(samples, d, generator(seed))
        z = torch.cat([torch.zeros(1, d, dtype=torch.bool), prefixes(perms).reshape(-1, d)])
        y = run.scores(i, z, "shapley sampling").double().cpu()
        empty, full = y[0], run.full[i].double().cpu()
        chain = torch.cat(
            [empty.expand(samples, 1, t), y[1:].reshape(samples, d - 1, t),
             full.expand(samples, 1, t)], dim=1,
        )  # fmt: skip
        per_order = contributions(perms, chain)  # (P, d, T)
        phi = per_order.mean(0).T  # (T, d)
        base_score[i], gap[i] = empty, phi.sum(1) - (full - empty)
        spread = per_order.std(0) if samples > 1 else torch.zeros(d, t, dtype=torch.float64)
        stderr[i] = (spread / samples**0.5).amax(0)
        maps[i] = run.paint(i, phi.to(device=x.device, dtype=x.dtype))
    extras = {**run.extras(), "base_score": base_score, "gap": gap, "stderr": stderr,
              "samples": samples}  # fmt: skip
    return MethodOutput(maps, run.targets, extras)
