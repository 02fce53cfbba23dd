"""Meaningful perturbation: masks learned by gradient descent (Fong & Vedaldi, ICCV 2017).

Theory. An explanation is an edit of the image that can be checked: the
smallest region whose perturbation (blur, constant colour or noise, see
:mod:`.operators`) removes the evidence for class ``c``. A mask ``m`` in
``[0, 1]`` (1 = keep) is learned by minimising, for the **deletion game**
(eq. 4 of the paper),

    λ1 ‖1 - M‖_1 + λ2 Σ_u ‖∇M(u)‖_β^β + E_τ[ f_c(Φ(x0(· - τ); M)) ]

and for the **preservation game** ``λ1 ‖M‖_1 + λ2 TV(M) - f_c(Φ(x0; M))``.
``M`` is the image-size mask: a low-resolution mask ``m`` (one value per
``mask_scale`` pixels, 28 x 28 at 224 px) upsampled bilinearly and smoothed
with a Gaussian of ``mask_sigma`` pixels; ``τ`` is a random integer jitter in
``[0, jitter)`` along each axis, one draw per iteration. The L1 and TV terms are
sums over the pixels of ``M`` (the image domain), as in the paper: summed over
the 28 x 28 mask instead, the same λs would weigh the area 64x less and the
mask would delete most of the image. ``f_c`` is the softmax probability of the
target by default. Optimiser as in the paper: Adam, learning rate 0.1, 300
iterations, λ1 = 1e-4, λ2 = 1e-2, β = 3, blur with σ0 = 10; ``m`` is clipped to
``[0, 1]`` after every step. Partial mask values blend the image with its σ0
blur (``blur_levels=2``), as the authors' released code does; the paper's
per-pixel ``σ = σ0 (1 - m)`` (``blur_levels > 2``) lets partial masks delete
texture at a fraction of the L1 price and gives diffuse masks (measured in
:mod:`.operators`).

Initialisation (``init="circle"``, the paper's): the smallest centred disc
(radius searched in mask cells) whose deletion suppresses the score by 99%
relative to the fully perturbed image, ``(p_r - p_b) / (p_0 - p_b) <= 0.01``;
if no disc does, the whole image is deleted. The radius is found by bisection
(5 forward passes at 224 px instead of up to 21), which assumes the score falls
as the disc grows. On photos it need not (a growing disc can first raise the
score), and bisection then finds a radius where the rule starts to hold, not
necessarily the smallest; on the five sample photos of
``benchmarks/bench_perturbation.py`` it finds the same disc as a scan from
radius 0. The preservation game starts from
the smallest centred disc whose preservation keeps 99% of the score, or the
whole image. ``init`` may also be a number (a constant mask) or a tensor of
masks ``(N, T or 1, H, W)`` at any resolution, averaged down to the mask grid:
a warm start, for example from an earlier call's ``MaskResult.of(e).mask[:, :, 0]``.

Saliency: ``1 - M`` for deletion (what had to go), ``M`` for preservation
(what had to stay); both in ``[0, 1]``. ``joint=True`` learns one mask per
image for all its targets together (the paper's "minimise the top-5 classes"
with ``target="top5"``), by summing their scores.

Batching. Every (image, target) pair has its own mask and they are optimised
together: each iteration is one forward and backward pass over all of them,
``batch_size`` images at a time with gradients accumulated. On CPU the passes
run on a channels-last copy of the model. All randomness (jitter, noise) comes
from ``seed``, so the same call gives the same masks.

Result: a :class:`cnnlens.core.masks.MaskResult` in ``extras["mask_result"]``
(``MaskResult.of(expl)``, the same structure as :mod:`.extremal`'s, with one
area): ``mask`` (the learned ``M``, ``(N, T, 1, H, W)``), ``edited``
(``Φ(x0; M)``, ``(N, T, 1, 3, H, W)``, normalised like ``x``), ``score``
(``f_c(Φ(x0; M))``), ``score_before`` (``f_c(x0)``), ``score_perturbed``
(``f_c`` of the fully perturbed image), ``area`` (deleted fraction for
deletion, kept fraction for preservation) and ``curves``: ``loss``, ``area``
and ``score`` per mask and iteration, ``(N, T, 1, iterations)`` each (the score
under that iteration's jitter). With ``joint=True`` the score is the sum over the
image's targets, repeated for each. The extras also hold ``initial_radius``
(disc radius in pixels, ``(N, T)``) and, as in earlier versions, the same tensors
without the area axis: ``mask``, ``perturbed``, ``score``, ``score_before``,
``score_perturbed``, ``area`` and ``curve``.

Registered as ``meaningful_perturbation``; ``perturbation``, its earlier name,
is an alias that works wherever a method name is accepted.

Reference: R. C. Fong, A. Vedaldi. Interpretable Explanations of Black Boxes
by Meaningful Perturbation. ICCV 2017. arXiv:1704.03296.
"""

from __future__ import annotations

import math

import torch

from ..core import progress
from ..core.batching import FastNet, MaskRows, batch_size_for, score_batches
from ..core.masks import KEY, MaskResult
from ..core.registry import register
from ..core.targets import resolve_targets
from ..core.tensors import MethodOutput, check_batch_size, check_score
from .operators import Perturbation, circle_masks, l1, tv, upsample_mask
from .scoring import MaskScorer

GAMES = ("delete", "preserve")


SCHEDULES = ("constant", "ramp")


def step_scale(schedule: str, it: int, iterations: int) -> float:
    """The factor on ``learning_rate`` at iteration ``it`` of ``iterations``.

    ``"ramp"``: 1x, 2x, 4x over the first three ninths (the mask first settles in the
    basin the circle start leads to, as at the paper's step), 8x up to 7/9, then 3x
    and 1x over the last two ninths, so the final masks do not jump from step to step.
    A larger constant step from the start leaves that basin (docs/benchmarks.md).
    """
    if schedule == "constant":
        return 1.0
    f = it / max(iterations, 1)
    for edge, scale in ((1 / 9, 1.0), (2 / 9, 2.0), (3 / 9, 4.0), (7 / 9, 8.0), (8 / 9, 3.0)):
        if f < edge:
            return scale
    return 1.0


def _check_params(game, iterations, learning_rate, mask_scale, jitter, init, schedule) -> None:
    if game not in GAMES:
        raise ValueError(f"game must be 'delete' or 'preserve', got {game!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be 'constant' or 'ramp', got {schedule!r}")
    for name, value, low in (("iterations", iterations, 0), ("mask_scale", mask_scale, 1),
                             ("jitter", jitter, 1)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be positive, got {learning_rate!r}")
    if isinstance(init, torch.Tensor):
        return
    if isinstance(init, str):
        if init != "circle":
            raise ValueError(f"init must be 'circle' or a number in [0, 1], got {init!r}")
    elif isinstance(init, bool) or not isinstance(init, (int, float)) or not 0 <= init <= 1:
        raise ValueError(f"init must be 'circle' or a number in [0, 1], got {init!r}")


@torch.no_grad()
def _initial_radius(scorer, p0, pb, size, low, sigma, game, bs) -> torch.Tensor:
    """Per mask, the smallest centred disc radius (in mask cells) that meets the 99% rule.

    Bisection over the radii ``0 .. R`` (the largest disc covers the image, and is the
    answer when no smaller one meets the rule): ``ceil(log2(R + 1))`` passes per mask,
    5 at 224 px, where a scan from the centre needs one per radius up to the answer.
    """
    b = p0.shape[0]
    h, w = low
    radii = torch.arange(0, math.ceil(math.hypot(h, w) / 2) + 1)
    inside = 0.0 if game == "delete" else 1.0
    discs = circle_masks(radii, (h, w), inside).to(p0.device)  # (R, 1, h, w)
    full = upsample_mask(discs, size, sigma).clamp(0, 1)
    lo = torch.full((b,), -1, dtype=torch.long)  # largest radius index known to fail
    hi = torch.full((b,), len(radii) - 1, dtype=torch.long)  # smallest known (or assumed) to pass
    while True:
        todo = (hi - lo > 1).nonzero().flatten()
        if len(todo) == 0:
            break
        mid = (lo[todo] + hi[todo]) // 2
        for j in range(0, len(todo), bs):
            idx, k = todo[j : j + bs], mid[j : j + bs]
            rows = idx.to(p0.device)
            p = scorer(full[k.to(p0.device)], rows)
            gap = (p0[rows] - pb[rows]).abs().clamp_min(1e-12)
            norm = (p - pb[rows]) / gap * torch.sign(p0[rows] - pb[rows])
            ok = (norm <= 0.01 if game == "delete" else norm >= 0.99).cpu()
            hi[idx[ok]] = k[ok]
            lo[idx[~ok]] = k[~ok]
    return radii[hi].to(device=p0.device, dtype=torch.float32)


def _start_from(init: torch.Tensor, n: int, t: int, joint: bool, low) -> torch.Tensor:
    """Starting masks ``(N, T or 1, H, W)`` at any resolution -> ``(B, 1, h, w)`` mask cells."""
    m = init.detach().float()
    if m.dim() == 3:
        m = m.unsqueeze(1)
    per = 1 if joint else t
    if m.dim() != 4 or m.shape[0] != n or m.shape[1] not in (1, per):
        raise ValueError(f"init tensor must be (N, {per} or 1, H, W) masks, got {tuple(m.shape)}")
    m = m.expand(n, per, *m.shape[2:]).reshape(n * per, 1, *m.shape[2:])
    return torch.nn.functional.adaptive_avg_pool2d(m, low).clamp(0, 1).cpu()


@register(
    "meaningful_perturbation",
    "Smallest region whose blurring deletes the class, learned by gradient descent "
    "(Fong & Vedaldi 2017)",
    family="perturbation",
    aliases=("perturbation",),
)
def meaningful_perturbation(
    model,
    x: torch.Tensor,
    target=None,
    *,
    game: str = "delete",
    perturbation: str = "blur",
    iterations: int = 300,
    learning_rate: float = 0.1,
    schedule: str = "constant",
    l1_coeff: float = 1e-4,
    tv_coeff: float = 1e-2,
    tv_beta: float = 3.0,
    mask_scale: int = 8,
    mask_sigma: float = 5.0,
    jitter: int = 4,
    sigma: float = 10.0,
    blur_levels: int = 2,
    score: str = "prob",
    init: str | float | torch.Tensor = "circle",
    joint: bool = False,
    seed: int = 0,
    batch_size: int | None = None,
) -> MethodOutput:
    """Learned deletion (or preservation) masks; see the module docstring.

    Args:
        game: ``"delete"`` (smallest region to remove) or ``"preserve"`` (to keep).
        perturbation: ``"blur"``, ``"constant"`` or ``"noise"``.
        iterations, learning_rate: Adam steps and step size.
        schedule: ``"constant"`` (the paper's) or ``"ramp"``: the step size rises to 8x
            ``learning_rate`` over the first third and falls back at the end (see
            :func:`step_scale`); with 90 iterations it reaches about the 300-iteration
            masks (docs/benchmarks.md).
        l1_coeff, tv_coeff, tv_beta: λ1, λ2 and β of eq. 4.
        mask_scale: pixels per mask cell (8: a 28 x 28 mask at 224 px).
        mask_sigma: σm of the Gaussian smoothing the upsampled mask, in pixels.
        jitter: τ is drawn from ``[0, jitter)`` pixels per axis (1: no jitter).
        sigma: σ0, the strongest blur, in pixels.
        blur_levels: 2 blends the image with its σ0 blur (the authors' code); more
            levels give the paper's per-pixel ``σ = σ0 (1 - m)`` (see :mod:`.operators`).
        score: ``"prob"`` (softmax, the paper's), ``"logit"`` or ``"logprob"``.
        init: ``"circle"`` (the paper's), a constant mask value in [0, 1], or a tensor
            of starting masks ``(N, T or 1, H, W)`` (1 = keep).
        joint: one mask per image for all its targets (sum of their scores).
        seed: jitter and noise seed.
        batch_size: images per forward/backward pass (default: memory-aware).
    """
    check_score(score)
    check_batch_size(batch_size)
    _check_params(game, iterations, learning_rate, mask_scale, jitter, init, schedule)
    n, _, h, w = x.shape
    fast = FastNet.of(model.net, x)
    with torch.no_grad():
        targets = resolve_targets(target, n, fast(x))
    t = targets.shape[1]
    rows = MaskRows.of(targets, joint=joint)  # one mask per (image, target), or per image
    b, bs = len(rows), batch_size_for(x, batch_size)
    low = (math.ceil(h / mask_scale), math.ceil(w / mask_scale))
    sign = 1.0 if game == "delete" else -1.0

    # one operator entry per mask (noise: one draw per mask)
    phi = Perturbation(x[rows.owner], perturbation, sigma=sigma, levels=blur_levels, seed=seed)
    scorer = MaskScorer(fast, phi, rows, score, per_image=False)
    with torch.no_grad():
        p0 = score_batches(fast, phi.x, rows.classes, score, bs).sum(1)
        pb = score_batches(fast, phi.fully_perturbed(), rows.classes, score, bs).sum(1)

    if init == "circle":
        radius = _initial_radius(scorer, p0, pb, (h, w), low, mask_sigma, game, bs)
        inside = 0.0 if game == "delete" else 1.0
        start = torch.cat([circle_masks(r.view(1).cpu(), low, inside) for r in radius])
    elif isinstance(init, torch.Tensor):
        radius = torch.full((b,), float("nan"))
        start = _start_from(init, n, t, joint, low)
    else:
        radius = torch.full((b,), float("nan"))
        start = torch.full((b, 1, *low), float(init))
    m = start.to(device=x.device, dtype=x.dtype).requires_grad_(True)
    opt = torch.optim.Adam([m], lr=learning_rate)
    gen = torch.Generator().manual_seed(int(seed))
    record = torch.zeros(3, iterations, b)  # loss, area, score per iteration and mask
    with progress.task("perturbation", iterations) as advance:
        for it in range(iterations):
            dy, dx = (int(v) for v in torch.randint(0, jitter, (2,), generator=gen))
            for group in opt.param_groups:
                group["lr"] = learning_rate * step_scale(schedule, it, iterations)
            opt.zero_grad(set_to_none=False)
            for part in rows.chunks(bs):
                big = upsample_mask(m[part], (h, w), mask_sigma)
                kept = big if game == "preserve" else 1 - big
                reg = l1_coeff * l1(kept) + tv_coeff * tv(big, tv_beta)
                s = scorer(big, part, (dy, dx))
                loss = reg + sign * s
                loss.sum().backward()
                area = kept.detach().mean((1, 2, 3))
                record[:, it, part] = torch.stack([loss.detach(), area, s.detach()]).cpu()
            opt.step()
            with torch.no_grad():
                m.clamp_(0, 1)
            advance(1)

    with torch.no_grad():
        big = upsample_mask(m.detach(), (h, w), mask_sigma).clamp(0, 1)
        edited = torch.cat([scorer.edit(big[part], part) for part in rows.chunks(bs)])
        final = score_batches(fast, edited, rows.classes, score, bs).sum(1)

    def per_target(v: torch.Tensor) -> torch.Tensor:
        """``(B, ...)`` per mask -> ``(N, T, ...)`` per image and target."""
        v = v.reshape(n, rows.shape[1], *v.shape[1:])
        return v.expand(n, t, *v.shape[2:]).contiguous()

    saliency = 1 - big if game == "delete" else big
    result = MaskResult(
        mask=per_target(big[:, 0]).unsqueeze(2),
        edited=per_target(edited).unsqueeze(2),
        score=per_target(final).unsqueeze(2),
        score_before=per_target(p0),
        score_perturbed=per_target(pb),
        area=per_target(saliency.mean((1, 2, 3))).unsqueeze(2),
        curves={k: per_target(v.T).unsqueeze(2) for k, v in zip(("loss", "area", "score"), record)},
        game=game,
        perturbation=perturbation,
    )
    extras = {
        KEY: result,
        # the same tensors under the keys of earlier versions (views, no copies)
        "mask": result.mask[:, :, 0],
        "perturbed": result.edited[:, :, 0],
        "score": result.score[:, :, 0],
        "score_before": result.score_before,
        "score_perturbed": result.score_perturbed,
        "area": result.area[:, :, 0],
        "initial_radius": per_target(radius.to(x.device) * mask_scale),
        "curve": {k: v[:, :, 0] for k, v in result.curves.items()},
    }
    return MethodOutput(per_target(saliency[:, 0]), targets, extras)


perturbation = meaningful_perturbation  # the name of earlier versions

__all__ = ["GAMES", "SCHEDULES", "meaningful_perturbation", "perturbation", "step_scale"]
