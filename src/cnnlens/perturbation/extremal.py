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

Smooth masks. ``m`` is generated from values ``m̄`` on a lattice of points ``v``
``mask_step`` pixels apart by the *smooth max-convolution*

    m(u) = smax_{v} k(u - v) m̄(v),        k(z) = exp(-‖z‖² / (2 σ²)),
    smax_T(f) = Σ_v f(v) e^{f(v)/T} / Σ_v e^{f(v)/T}   (the plain max at T = 0).

Unlike a Gaussian convolution, which dims a small region, the max-convolution
keeps the peak: one lattice point at 1 gives a bump of height 1, so the
smallest feature is one bump (above 0.5 within 1.18 σ of its centre) and every
edge falls from 0.9 to 0.1 over about 1.7 σ. ``smoothness`` is ``T`` (default
0, the max). The kernel is a product of non-negative 1-D factors, so the max is
taken along lattice rows, then columns; at ``T = 0`` this equals the 2-D max
exactly (for ``T > 0`` it is a smooth max of smooth maxes). Defaults: the
lattice step is the shorter image side / 32 (7 px at 224 px, a 32 x 32
lattice) and ``σ`` is 3 steps (21 px at 224 px); both scale with the image, so
a mask can hold a few blobs but no detail finer than about a fifth of the
image.

Gradient of the mask. Through the max only the lattice point that wins at a
pixel gets that pixel's gradient. With ``σ`` three steps wide, a point that
drops a few percent below its neighbours wins nowhere, gets no gradient and
never comes back, so regions can only shrink; and each winner's gradient is the
sum over its own 7 x 7 cell of the pixel gradients, which at a half-blurred
image is mostly noise. cnnlens back-propagates through the mask as if it were
the kernel-weighted *sum*, ``∂L/∂m̄(v) = Σ_u k(u - v) ∂L/∂m(u)``: the forward
mask is exactly the max-convolution above; the descent direction is the pixel
gradient smoothed by the kernel. On the bundled model (the five sample images,
top class, a = 0.1) this kept a higher logit than plain autograd through the
max on four of five (``camera`` 10.0 vs 6.3, ``chelsea`` 9.8 vs 4.8,
``rocket`` 10.2 vs 8.5, ``coffee`` 6.2 vs 5.9; ``astronaut`` 4.3 vs 4.8), and
plain autograd twice stopped well short of the area (``area_half`` 0.065 and
0.076).

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

Extras: ``masks`` ``(N, T, A, H, W)``; ``areas`` (the list); ``area`` (each
mask's mean, ``‖m‖_1 / |Ω|``) and ``area_half`` (its fraction of pixels with
``m >= 0.5``), both ``(N, T, A)``; ``score`` (``f_c`` of the final perturbed
image, ``(N, T, A)``); ``score_before`` (``f_c(x)``) and ``score_perturbed``
(``f_c(Φ(x; 0))``), both ``(N, T)``; ``iterations`` (steps each mask took,
``(N, T, A)``); ``mask_step`` and ``mask_sigma`` (pixels); ``curve`` (per
iteration: mean score, area and regulariser over the masks). Smooth edges keep
``area`` above ``a`` (0.13 at a = 0.1 on the bundled model) while
``area_half`` lands within about one point of it.

Reference: R. Fong, M. Patrick, A. Vedaldi. Understanding Deep Networks via
Extremal Perturbations and Smooth Masks. ICCV 2019. arXiv:1910.08485.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..core import progress
from ..core.registry import register
from ..core.targets import resolve_targets
from ..core.tensors import (
    MethodOutput,
    check_batch_size,
    check_score,
    default_batch_size,
    gather_scores,
    inference_copy,
    to_scores,
)
from .operators import Perturbation, check_perturbation

VARIANTS = ("preserve", "delete")

LATTICE = 32  # lattice points along the shorter image side (a step of 7 px at 224 px)
SIGMA_STEPS = 3.0  # kernel σ in lattice steps (21 px at 224 px)
RAMP = 150  # iterations over which λ grows from area_weight[0] to area_weight[1]
TOLERANCE = 1e-3  # a mask has converged when no lattice value moves by this much ...
PATIENCE = 20  # ... for this many iterations in a row (after the ramp)
DECAY = 0.97  # the learning rate shrinks by this factor per iteration after the ramp


# ----------------------------------------------------------------------------- area constraint


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


# ----------------------------------------------------------------------------- smooth masks


def smooth_max(values: torch.Tensor, dim: int, temperature: float) -> torch.Tensor:
    """``smax_T``: ``Σ v e^{v/T} / Σ e^{v/T}`` along ``dim``; the plain maximum at ``T = 0``."""
    if temperature == 0:
        return values.amax(dim)
    weights = torch.softmax(values / temperature, dim=dim)
    return (weights * values).sum(dim)


def lattice(length: int, step: float) -> torch.Tensor:
    """Positions (pixel centres ``0 .. length-1``) of ``ceil(length / step)`` lattice points.

    The points are ``step`` apart and centred on the image: at 224 px with step 7 they
    are 3, 10, ..., 220, the centres of 7-pixel cells.
    """
    n = max(1, math.ceil(length / step - 1e-9))
    offset = (length - 1 - (n - 1) * step) / 2
    return offset + step * torch.arange(n, dtype=torch.float64)


def kernel_matrix(length: int, step: float, sigma: float) -> torch.Tensor:
    """``K[u, i] = k(u - p_i) = exp(-(u - p_i)² / (2 σ²))``: ``(length, points)`` (float64)."""
    pos = lattice(length, step)
    u = torch.arange(length, dtype=torch.float64).unsqueeze(1)
    return torch.exp(-((u - pos.unsqueeze(0)) ** 2) / (2 * sigma**2))


def max_convolution(
    params: torch.Tensor, ky: torch.Tensor, kx: torch.Tensor, temperature: float = 0.0
) -> torch.Tensor:
    """``m(u) = smax_v ky(u_y, v_y) kx(u_x, v_x) m̄(v)``, separably: ``(B, h, w) -> (B, H, W)``.

    Rows of the lattice first (``a[i, u_x] = smax_j kx[u_x, j] m̄[i, j]``), then
    columns (``m[u_y, u_x] = smax_i ky[u_y, i] a[i, u_x]``). With ``T = 0`` this is
    exactly the 2-D max-convolution, because the kernel is a product of non-negative
    factors and ``max_i max_j ky kx m̄ = max_i ky max_j kx m̄``. Plain autograd.
    """
    rows = smooth_max(params.unsqueeze(2) * kx, 3, temperature)  # (B, h, W)
    cols = rows.transpose(1, 2).unsqueeze(1) * ky.unsqueeze(1)  # (B, H, W, h)
    return smooth_max(cols, 3, temperature)


class _MaxConvolution(torch.autograd.Function):
    """Smooth max-convolution forward; the kernel-weighted sum's gradient backward."""

    @staticmethod
    def forward(ctx, params, ky, kx, temperature):
        ctx.save_for_backward(ky, kx)
        with torch.no_grad():
            return max_convolution(params, ky, kx, temperature)

    @staticmethod
    def backward(ctx, grad):
        ky, kx = ctx.saved_tensors
        return ky.transpose(0, 1) @ grad @ kx, None, None, None


class SmoothMask:
    """Masks ``(B, 1, H, W)`` from lattice parameters ``(B, h, w)`` by smooth max-convolution.

    ``m(u) = smax_v k(u - v) m̄(v)`` over the lattice points ``v`` (see
    :func:`max_convolution`). The gradient with respect to ``m̄`` is that of the
    kernel-weighted sum ``Σ_v k(u - v) m̄(v)`` (see the module docstring).
    """

    def __init__(
        self,
        size: tuple[int, int],
        step: float,
        sigma: float,
        temperature: float = 0.0,
        *,
        device=None,
        dtype=torch.float32,
    ):
        h, w = size
        self.size, self.step, self.sigma, self.temperature = (h, w), step, sigma, temperature
        self.ky = kernel_matrix(h, step, sigma).to(device=device, dtype=dtype)  # (H, h')
        self.kx = kernel_matrix(w, step, sigma).to(device=device, dtype=dtype)  # (W, w')
        self.shape = (self.ky.shape[1], self.kx.shape[1])

    def __call__(self, params: torch.Tensor) -> torch.Tensor:
        if params.dim() != 3 or tuple(params.shape[1:]) != self.shape:
            want = f"(B, {self.shape[0]}, {self.shape[1]})"
            raise ValueError(f"params must be {want}, got {tuple(params.shape)}")
        m = _MaxConvolution.apply(params, self.ky, self.kx, float(self.temperature))
        return m.unsqueeze(1)


def default_step(size: tuple[int, int]) -> float:
    """Lattice step in pixels: the shorter side over :data:`LATTICE` (7 at 224 px)."""
    return min(size) / LATTICE


# ----------------------------------------------------------------------------- the method


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
    net = model.net
    fast = inference_copy(net, x)
    fmt = torch.channels_last if fast is not net else torch.contiguous_format
    x = x.detach()
    with torch.no_grad():
        logits = fast(x.contiguous(memory_format=fmt)).float()
        targets = resolve_targets(target, n, logits)
        before = gather_scores(to_scores(logits, score), targets)
    t_count, a_count = targets.shape[1], len(area_list)
    # one mask per (image, target, area): image-major, then target, then area
    b = n * t_count * a_count
    owner = torch.arange(n, device=x.device).repeat_interleave(t_count * a_count)
    row_class = targets.repeat_interleave(a_count, dim=1).reshape(b, 1)
    row_area = torch.tensor(area_list, dtype=torch.float64).repeat(n * t_count)
    bs = int(batch_size or default_batch_size(x))
    chunks = [torch.arange(j, min(b, j + bs), device=x.device) for j in range(0, b, bs)]

    # noise: one draw per image, shared by its targets and areas
    op = Perturbation(x, perturbation, sigma=sigma, levels=blur_levels, seed=seed)
    masker = SmoothMask((h, w), step, ksigma, float(smoothness), device=x.device, dtype=x.dtype)
    # the k largest values are picked from the pixels in this (seeded) order, so that
    # among equal values the choice does not follow their place in the image
    order = torch.randperm(h * w, generator=torch.Generator().manual_seed(seed)).to(x.device)
    delete = variant == "delete"
    sign = 1.0 if delete else -1.0  # minimise sign * score: delete lowers it, preserve raises it

    def scores_of(k: int, mask: torch.Tensor) -> torch.Tensor:
        keep = 1 - mask if delete else mask
        images = op.rows(owner[chunks[k]])(keep)  # indexed per pass: no copy per mask kept
        out = fast(images.contiguous(memory_format=fmt)).float()
        return gather_scores(to_scores(out, score), row_class[chunks[k]]).squeeze(1)

    with torch.no_grad():
        base = fast(op.fully_perturbed().contiguous(memory_format=fmt)).float()
        perturbed = gather_scores(to_scores(base, score), targets)

    params = torch.full((b, *masker.shape), 0.5, device=x.device, dtype=x.dtype)
    velocity = torch.zeros_like(params)
    ramp = max(1, min(RAMP, iterations - 1))
    growth = (lam1 / lam0) ** (1.0 / ramp)
    units = torch.ones(2, b, device=x.device, dtype=x.dtype)  # reward, regulariser
    active = torch.ones(b, dtype=torch.bool, device=x.device)
    quiet = torch.zeros(b, dtype=torch.long, device=x.device)
    steps = torch.zeros(b, dtype=torch.long, device=x.device)
    last = torch.zeros(3, b, dtype=torch.float64)  # score, area, regulariser per mask
    curve: dict[str, list[float]] = {"score": [], "area": [], "regulariser": []}
    with torch.enable_grad(), progress.task("extremal", iterations) as advance:
        for it in range(iterations):
            lam = lam0 * growth ** min(it, ramp)
            grad = torch.zeros_like(params)
            for k, rows in enumerate(chunks):
                if not bool(active[rows].any()):
                    continue  # every mask of this batch has converged
                p = params[rows].requires_grad_(True)
                mask = masker(p)
                s = scores_of(k, mask)
                reg = area_regulariser(mask, row_area[rows.cpu()], order)
                if it == 0:  # units: the largest gradient of each term at the start
                    for j, term in enumerate((sign * s, reg)):
                        (g0,) = torch.autograd.grad(term.sum(), p, retain_graph=True)
                        units[j, rows] = g0.abs().flatten(1).amax(1).clamp_min(1e-12)
                loss = sign * s / units[0, rows] + lam * reg / units[1, rows]
                (grad[rows],) = torch.autograd.grad(loss.sum(), p)
                stats = (s, mask.mean((1, 2, 3)), reg)
                for j, value in enumerate(stats):
                    last[j, rows.cpu()] = value.detach().double().cpu()
            for j, key in enumerate(curve):
                curve[key].append(float(last[j].mean()))
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

    with torch.no_grad():
        masks = torch.cat([masker(params[rows].detach()) for rows in chunks])
        final = torch.cat([scores_of(k, masks[rows]) for k, rows in enumerate(chunks)])
    masks = masks.view(n, t_count, a_count, h, w)
    extras = {
        "masks": masks,
        "areas": area_list,
        "area": masks.mean((3, 4)),
        "area_half": (masks >= 0.5).float().mean((3, 4)),
        "score": final.view(n, t_count, a_count),
        "score_before": before,
        "score_perturbed": perturbed,
        "mask_step": step,
        "mask_sigma": ksigma,
        "iterations": steps.view(n, t_count, a_count),
        "curve": curve,
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
