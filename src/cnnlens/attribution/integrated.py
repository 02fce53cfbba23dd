"""Gradient-based attributions beyond plain saliency: input x gradient and
integrated gradients (the SmoothGrad family lives in :mod:`.smoothgrad`).

All of them start from the gradient of a target score ``s`` (a logit by default)
with respect to the input pixels, kept per colour channel until the very end;
the last step reduces the channels to one ``(H, W)`` map with ``reduce``
(``"sum"`` keeps the sign, ``"absmax"`` and ``"l2"`` give magnitudes).

**Input x gradient** (Shrikumar et al., "Not just a black box", 2016; discussed
by Kindermans et al. 2016 as the gradient-times-input map) multiplies each input
value by the gradient there:

    A(x)_k(u) = x_k(u) * ds/dx_k(u)

For a linear score ``s = <w, x> + b`` this is exactly each pixel's share
``w * x`` of the score (minus the bias).

**Integrated gradients** (Sundararajan, Taly & Yan, "Axiomatic attribution for
deep networks", ICML 2017) integrates the gradient along the straight path from
a baseline ``x'`` to the input:

    IG_k(u) = (x_k(u) - x'_k(u)) * int_0^1 ds/dx_k(u) at x' + a (x - x') da

By the fundamental theorem of calculus for path integrals the attributions add
up to the change in score ("completeness"): ``sum IG = s(x) - s(x')``. The
integral is replaced by a quadrature rule ``sum_m w_m g(a_m)`` over ``steps``
points, chosen with the parameter ``quadrature``:

* ``riemann_middle`` (default): ``a_m = (m + 1/2) / n``, ``w_m = 1/n``;
* ``riemann_left`` / ``riemann_right``: ``a_m = m / n`` / ``(m + 1) / n``, ``w_m = 1/n``;
* ``riemann_trapezoid``: ``a_m = m / (n - 1)``, ``w_m = 1/(n - 1)`` halved at both
  ends (the weights sum to one, so a constant gradient is integrated exactly);
* ``gausslegendre``: Gauss-Legendre nodes and weights mapped from [-1, 1] to [0, 1].

Every rule integrates a constant gradient exactly, so on a linear model IG equals
``(x - x') * w`` for any number of steps. How far the sum of attributions is
from ``s(x) - s(x')`` measures the quadrature error; it is returned per image and
target as ``extras["delta"]`` (sum of attributions minus the score change).
Path points are batched ``batch_size`` at a time over (step, image) pairs; each
batch costs one forward pass and one backward pass per target.

Baselines: ``"zero"`` (zero in the model's input space, i.e. the dataset mean
colour for mean/std-normalised models), ``"mean"`` (the image's own mean colour
per channel), ``"blur"`` (the image blurred with a Gaussian of sigma = max(H, W)
/ 16, which removes detail but keeps the overall colours) or a constant.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from ..core import progress
from ..core.batching import FastNet, batch_size_for, chunks
from ..core.registry import register
from ..core.targets import resolve_targets
from ..core.tensors import MethodOutput, check_batch_size, check_score, gaussian_blur, target_scores
from .gradient import check_reduce, gradient_maps, reduce_per_target

INTEGRATION_METHODS = (
    "riemann_middle",
    "riemann_left",
    "riemann_right",
    "riemann_trapezoid",
    "gausslegendre",
)
BASELINES = ("zero", "blur", "mean")


# --------------------------------------------------------------------------- helpers


def _noop(_: int = 1) -> None:
    return None


def check_count(name: str, value, minimum: int = 1) -> int:
    """``value`` if it is an integer >= ``minimum`` (not a bool), else a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def integration_points(quadrature: str, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Quadrature nodes ``alphas`` in [0, 1] and their weights for ``steps`` points (float64)."""
    steps = check_count("steps", steps)
    n = steps
    m = torch.arange(n, dtype=torch.float64)
    weights = torch.full((n,), 1.0 / n, dtype=torch.float64)
    if quadrature == "riemann_middle":
        alphas = (m + 0.5) / n
    elif quadrature == "riemann_left":
        alphas = m / n
    elif quadrature == "riemann_right":
        alphas = (m + 1) / n
    elif quadrature == "riemann_trapezoid":
        if n < 2:
            raise ValueError("riemann_trapezoid needs steps >= 2 (both end points)")
        alphas = m / (n - 1)
        weights = torch.full((n,), 1.0 / (n - 1), dtype=torch.float64)
        weights[0] /= 2
        weights[-1] /= 2
    elif quadrature == "gausslegendre":
        import numpy as np

        nodes, w = np.polynomial.legendre.leggauss(n)
        alphas = (torch.from_numpy(nodes) + 1) / 2
        weights = torch.from_numpy(w) / 2
    else:
        raise ValueError(
            f"quadrature must be one of {', '.join(INTEGRATION_METHODS)}, got {quadrature!r}"
        )
    return alphas, weights


def ig_baseline(x: torch.Tensor, baseline: str | float) -> torch.Tensor:
    """The reference image ``x'`` ``(N, C, H, W)`` for a baseline name or constant."""
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(x, float(baseline))
    if baseline == "zero":
        return torch.zeros_like(x)
    if baseline == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()
    if baseline == "blur":
        return gaussian_blur(x, sigma=max(x.shape[-2:]) / 16)
    raise ValueError(
        f"baseline must be one of {', '.join(BASELINES)} or a number, got {baseline!r}"
    )


def integrated_per_channel(
    model,
    x: torch.Tensor,
    target,
    *,
    baseline: str | float = "zero",
    steps: int = 32,
    quadrature: str = "riemann_middle",
    batch_size: int | None = None,
    score: str = "logit",
    show_progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Integrated gradients kept per channel.

    Returns:
        ``attributions (N, T, C, H, W)``, ``targets (N, T)`` and the completeness gap
        ``delta (N, T)`` = sum of attributions - (s(x) - s(x')).
    """
    check_score(score)
    check_batch_size(batch_size)
    alphas, weights = integration_points(quadrature, steps)
    fast = FastNet.of(model.net, x)  # channels-last copy on CPU: ~15% faster passes
    n = x.shape[0]
    x = x.detach()
    ref = ig_baseline(x, baseline).detach()
    with torch.no_grad():
        logits_x = fast(x)
        targets = resolve_targets(target, n, logits_x)
        s_x = target_scores(logits_x, targets, score)
        s_ref = target_scores(fast(ref), targets, score)
    t = targets.shape[1]
    diff = x - ref
    total = torch.zeros(n, t, *x.shape[1:], dtype=x.dtype, device=x.device)
    alphas = alphas.to(device=x.device, dtype=x.dtype)
    weights = weights.to(device=x.device, dtype=x.dtype)
    pairs = len(alphas) * n  # (step, image) pairs, step-major
    batches = chunks(pairs, batch_size_for(x, batch_size))
    ctx = (
        progress.task("integrated gradients", len(batches)) if show_progress else nullcontext(_noop)
    )
    with ctx as advance:
        for rows in batches:
            idx = torch.arange(rows.start, rows.stop, device=x.device)
            k, i = idx // n, idx % n
            a = alphas[k].view(-1, 1, 1, 1)
            points = fast.prepare(ref[i] + a * diff[i]).requires_grad_(True)
            # not fast.scores: no cast to float32, gradients keep the model's dtype
            scores = target_scores(fast(points), targets[i], score)
            w = weights[k].view(-1, 1, 1, 1)
            for j in range(t):
                (g,) = torch.autograd.grad(scores[:, j].sum(), points, retain_graph=j < t - 1)
                total[:, j].index_add_(0, i, g * w)
            advance(1)
    attributions = diff.unsqueeze(1) * total
    delta = attributions.flatten(2).sum(2) - (s_x - s_ref)
    return attributions.detach(), targets, delta.detach()


# --------------------------------------------------------------------------- methods


@register(
    "input_x_gradient",
    "Input times the gradient of the class score, summed over colour (Shrikumar et al. 2016)",
    signed=True,
    family="gradient",
)
def input_x_gradient(
    model, x: torch.Tensor, target=None, *, reduce: str = "sum", score: str = "logit"
) -> MethodOutput:
    """Input x gradient maps.

    Args:
        model: a LoadedModel.
        x: ``(N, 3, H, W)`` normalised images.
        target: target specification (see :mod:`cnnlens.core.targets`).
        reduce: ``"sum"`` over channels (signed, default), ``"absmax"`` or ``"l2"``.
        score: differentiate the ``"logit"`` (default), ``"prob"`` or ``"logprob"``.

    Returns:
        ``maps (N, T, H, W)``.
    """
    return gradient_maps(model, x, target, reduce, score, times_input=True)


@register(
    "integrated_gradients",
    "Gradients averaged along the path from a baseline, times (x - baseline) "
    "(Sundararajan et al. 2017)",
    signed=True,
    family="gradient",
)
def integrated_gradients(
    model,
    x: torch.Tensor,
    target=None,
    *,
    baseline: str | float = "zero",
    steps: int = 32,
    quadrature: str = "riemann_middle",
    reduce: str = "sum",
    score: str = "logit",
    batch_size: int | None = None,
) -> MethodOutput:
    """Integrated gradients maps.

    Args:
        model: a LoadedModel.
        x: ``(N, 3, H, W)`` normalised images.
        target: target specification.
        baseline: ``"zero"``, ``"blur"``, ``"mean"`` or a constant (see the module docstring).
        steps: number of points on the path.
        quadrature: the rule approximating the path integral, one of
            :data:`INTEGRATION_METHODS` (named ``method`` in Captum; ``method`` here
            would clash with :func:`cnnlens.attribute`'s own argument).
        reduce: ``"sum"`` over channels (signed, keeps completeness), ``"absmax"`` or ``"l2"``.
        score: ``"logit"`` (default), ``"prob"`` or ``"logprob"``.
        batch_size: path points per forward pass (default: memory-aware).

    Returns:
        ``maps (N, T, H, W)``; ``extras["delta"] (N, T)`` is the completeness gap
        sum of attributions - (s(x) - s(baseline)).
    """
    check_reduce(reduce)
    attributions, targets, delta = integrated_per_channel(
        model,
        x,
        target,
        baseline=baseline,
        steps=steps,
        quadrature=quadrature,
        batch_size=batch_size,
        score=score,
    )
    extras = {"signed": reduce == "sum", "delta": delta}
    return MethodOutput(reduce_per_target(attributions, reduce), targets, extras)
