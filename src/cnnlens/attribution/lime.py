"""LIME over image segments (Ribeiro, Singh & Guestrin, "Why should I trust you?":
explaining the predictions of any classifier, KDD 2016).

LIME explains one image by a linear model fitted to the classifier's scores on
perturbed copies of it. The image is cut into ``d`` segments (superpixels, a grid or
the user's labels: :mod:`.segments`); a sample ``z in {0, 1}^d`` keeps the segments with
``z_s = 1`` and replaces the others by a baseline. With ``S`` samples, their scores
``f(x(z_i))`` and a similarity kernel ``pi``, LIME fits

    g = argmin_{c, w}  sum_i pi(z_i) (f(x(z_i)) - c - <w, z_i>)^2  + Omega(w)

and paints every pixel with its segment's weight ``w_s`` (signed: positive segments
raise the score). The similarity of a sample is an exponential kernel of the cosine
distance ``D`` between the perturbed image and the image itself, in the model's input
space:

    pi(z) = exp(-D(x, x(z))^2 / (2 kernel_width^2)),   D = 1 - cos(x, x(z)).

(The paper writes ``exp(-D^2 / sigma^2)``; the LIME package and Captum put the factor 2
in, so ``sigma = sqrt(2) kernel_width``; we follow them so that widths carry over.) ``D``
is computed from per-segment sums of ``x*x``, ``x*b`` and ``b*b`` without building the
images again. Samples draw every segment independently with probability 1/2.

The penalty ``Omega`` is the surrogate's (``surrogate=``, fitted in torch by
:mod:`.surrogate` with scikit-learn's objectives): ``"lasso"`` with ``alpha = 0.01``
(Captum's default ``SkLearnLasso(alpha=0.01)``), ``"ridge"`` or ``"linear"`` (none).
With ``"linear"`` a score that is linear in the segment indicators is recovered
exactly, whatever the kernel.

How we differ from Captum's ``Lime`` with a ``feature_mask`` of the same segments:
the same distribution of samples, kernel, distance and objective, so the two agree in
expectation (not sample by sample: Captum draws from the global torch RNG, we from a
``torch.Generator`` seeded with ``seed``). We batch ``batch_size`` perturbed images per
forward pass on a channels-last copy of the model and run a sample drawn twice once;
every target of an image comes from the same passes (Captum runs once per target).
Captum's default ``n_samples`` is 25, ours 500; the explained quantity is the logit
(``score="logit"``), as Captum sees a classifier's raw output.
"""

from __future__ import annotations

import warnings

import torch

from ..core.registry import register
from ..core.tensors import MethodOutput
from .segments import SegmentRun, check_count, generator
from .surrogate import weighted_fit


def cosine_kernel(run: SegmentRun, i: int, z: torch.Tensor, kernel_width: float) -> torch.Tensor:
    """LIME's weights ``(S,)`` (float64) of the coalitions ``z (S, d)`` of image ``i``.

    ``cos(x, x(z)) = <x, x(z)> / (|x| |x(z)|)`` where, segment by segment, ``x(z)`` is
    ``x`` (kept) or the baseline ``b`` (removed), so both sums split over segments.
    """
    labels = run.seg.labels[i].flatten()
    d = run.seg.counts[i]
    x, b = run.x[i].double().flatten(1), run.base[i].double().flatten(1)

    def per_segment(v: torch.Tensor) -> torch.Tensor:
        return torch.zeros(d, dtype=torch.float64, device=v.device).index_add_(0, labels, v)

    xx, xb, bb = (
        per_segment((x * x).sum(0)),
        per_segment((x * b).sum(0)),
        per_segment((b * b).sum(0)),
    )
    zf = z.to(device=xx.device, dtype=torch.float64)
    dot = zf @ xx + (1 - zf) @ xb
    norm = (zf @ xx + (1 - zf) @ bb).clamp_min(0).sqrt()
    eps = 1e-8
    cos = dot / (xx.sum().sqrt().clamp_min(eps) * norm.clamp_min(eps))
    return torch.exp(-((1 - cos) ** 2) / (2 * kernel_width**2)).cpu()


def weighted_r2(X: torch.Tensor, Y: torch.Tensor, w: torch.Tensor, coef, intercept) -> torch.Tensor:
    """Weighted coefficient of determination ``(T,)`` of the surrogate on its samples."""
    X, Y, w = X.double().cpu(), Y.double().cpu(), w.double().cpu()
    resid = Y - intercept - X @ coef.T
    spread = Y - (w @ Y) / w.sum()
    return 1 - (w @ resid**2) / (w @ spread**2).clamp_min(1e-300)


@register(
    "lime",
    "Weights of a local linear model over superpixels (Ribeiro, Singh & Guestrin 2016)",
    signed=True,
    family="perturbation",
)
def lime(
    model,
    x: torch.Tensor,
    target=None,
    *,
    segments: str | torch.Tensor = "slic",
    n_segments: int = 50,
    samples: int = 500,
    kernel_width: float = 1.0,
    surrogate: str = "lasso",
    alpha: float = 0.01,
    baseline: str | float = "zero",
    score: str = "logit",
    batch_size: int | None = None,
    seed: int = 0,
) -> MethodOutput:
    """LIME maps: every pixel carries its segment's weight in the local linear model.

    Args:
        model: a LoadedModel.
        x: ``(N, 3, H, W)`` normalised images.
        target: target specification (see :mod:`cnnlens.core.targets`).
        segments: ``"slic"`` (default), ``"quickshift"``, ``"grid"`` or labels
            ``(H, W)`` / ``(N, H, W)`` (see :mod:`cnnlens.attribution.segments`).
        n_segments: about how many segments ``"slic"`` and ``"grid"`` make.
        samples: perturbed images per image (forward passes, fewer when samples repeat).
        kernel_width: width of the similarity kernel on the cosine distance.
        surrogate: ``"lasso"`` (default), ``"ridge"`` or ``"linear"``.
        alpha: the lasso / ridge penalty (scikit-learn's scaling).
        baseline: what a removed segment becomes: ``"zero"``, ``"blur"``, ``"mean"`` or a
            constant.
        score: ``"logit"`` (default), ``"prob"`` or ``"logprob"``.
        batch_size: perturbed images per forward pass (default: memory-aware).
        seed: seed of the sample generator; the same seed gives the same maps.

    Returns:
        ``maps (N, T, H, W)``; extras ``segments`` (a :class:`~.segments.Segmentation`),
        ``n_segments``, ``intercept (N, T)`` and the surrogate's weighted ``r2 (N, T)``.
    """
    check_count("samples", samples)
    if (
        isinstance(kernel_width, bool)
        or not isinstance(kernel_width, (int, float))
        or (kernel_width <= 0)
    ):
        raise ValueError(f"kernel_width must be a positive number, got {kernel_width!r}")
    generator(seed)  # checks the seed before any work
    run = SegmentRun.start(
        model, x, target, segments=segments, n_segments=n_segments, baseline=baseline,
        score=score, batch_size=batch_size,
    )  # fmt: skip
    n, t = run.targets.shape
    maps = torch.empty(n, t, *x.shape[-2:], dtype=x.dtype, device=x.device)
    intercepts = torch.empty(n, t, dtype=torch.float64)
    r2 = torch.empty(n, t, dtype=torch.float64)
    for i in range(n):
        z = torch.rand(samples, run.seg.counts[i], generator=generator(seed)) < 0.5
        y = run.scores(i, z, "lime")
        w = cosine_kernel(run, i, z, float(kernel_width))
        coef, intercepts[i] = weighted_fit(z.double(), y, w, model=surrogate, alpha=alpha)
        r2[i] = weighted_r2(z, y, w, coef, intercepts[i])
        maps[i] = run.paint(i, coef.to(device=x.device, dtype=x.dtype))
        if surrogate == "lasso" and bool((coef == 0).all(dim=1).any()):
            # A silent all-zero map would read as "nothing matters"; say what happened.
            warnings.warn(
                f"lime: the lasso (alpha={alpha}) set every segment's weight to 0 for image {i}: "
                "the score varies too little over the samples for this penalty; use "
                "surrogate='ridge' or a smaller alpha",
                stacklevel=2,
            )
    extras = {**run.extras(), "intercept": intercepts, "r2": r2, "samples": samples}
    return MethodOutput(maps, run.targets, extras)
