"""The SmoothGrad family: smoothgrad, smoothgrad_sq and vargrad over a gradient method.

**SmoothGrad** (Smilkov, Thorat, Kim, Viegas & Wattenberg, "SmoothGrad: removing
noise by adding noise", 2017) averages a base attribution over ``samples`` noisy
copies of the input, ``x + eps`` with ``eps ~ N(0, sigma^2)`` and
``sigma = noise * (max(x) - min(x))`` per image (the paper's "noise level"):

    smoothgrad    = mean_i A(x + eps_i)
    smoothgrad_sq = mean_i A(x + eps_i)^2        (Adebayo et al. 2018's "SmoothGrad^2")
    vargrad       = mean_i A(x + eps_i)^2 - smoothgrad^2   (population variance)

The base attribution ``A`` is kept per colour channel (``base="gradient"``:
the raw signed gradient, not its absolute value) and the channel reduction is
applied to the mean, mean square or variance, in that order. This is what the
reference implementation of Smilkov et al. and Captum's ``NoiseTunnel`` do:
average the raw per-channel attributions, then visualise. For a base that this
module does not know per channel (another registered gradient-family method),
its finished ``(N, T, H, W)`` maps are smoothed as they are and ``reduce`` is
not applied again.

Noise is drawn on the CPU from a ``torch.Generator`` seeded with ``seed``, one
``(N, C, H, W)`` tensor per sample in sample order, so results do not depend on
the device or on ``batch_size``. Targets are resolved once on the clean input
(``None`` means each clean image's top-1 class) and kept for every noisy copy.

The three methods differ only in the statistic of the copies' attributions: each is
one row of :data:`VARIANTS` (name, summary, statistic, docstring), from which
:func:`smoothing_method` builds and registers it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from ..core import progress
from ..core.batching import batch_size_for, chunks
from ..core.errors import MethodError
from ..core.registry import lookup, register
from ..core.targets import resolve_targets
from ..core.tensors import MethodOutput, check_batch_size, check_score
from .gradient import check_reduce, input_gradients, reduce_per_target
from .integrated import check_count, integrated_per_channel

# A per-channel kernel: (model, x, targets (N, T), score, batch_size) -> (N, T, C, H, W).
Kernel = Callable[..., torch.Tensor]


# --------------------------------------------------------------------------- SmoothGrad


def _gradient_kernel(model, x, targets, score, batch_size):
    return input_gradients(model, x, targets, score)[0]


def _input_x_gradient_kernel(model, x, targets, score, batch_size):
    grads = input_gradients(model, x, targets, score)[0]
    return grads * x.detach().unsqueeze(1)


def _integrated_kernel(model, x, targets, score, batch_size):
    return integrated_per_channel(
        model, x, targets, batch_size=batch_size, score=score, show_progress=False
    )[0]


# Bases known per channel; each also says how many noisy copies one call may take
# (0: as many as batch_size allows, 1: one copy per call since the base batches itself).
PER_CHANNEL: dict[str, tuple[Kernel, int]] = {
    "gradient": (_gradient_kernel, 0),
    "input_x_gradient": (_input_x_gradient_kernel, 0),
    "integrated_gradients": (_integrated_kernel, 1),
}


def _base_kernel(base: str) -> tuple[Kernel, int, bool]:
    """The kernel for ``base``, copies per call, and whether it keeps channels."""
    if base in SMOOTHING:
        raise MethodError(f"base {base!r} is itself a SmoothGrad method; pick e.g. 'gradient'")
    if base in PER_CHANNEL:
        kernel, copies = PER_CHANNEL[base]
        return kernel, copies, True
    info = lookup(base)
    if info.family != "gradient":
        raise MethodError(
            f"base {base!r} is a {info.family!r} method; SmoothGrad needs a gradient-family "
            "method such as 'gradient', 'input_x_gradient' or 'integrated_gradients'"
        )
    takes_score = "score" in info.defaults

    def kernel(model, x, targets, score, batch_size):
        kw = {"score": score} if takes_score else {}
        return info.fn(model, x, targets, **kw).maps.unsqueeze(2)

    return kernel, 1, False


class Variant(NamedTuple):
    """One registered member of the family.

    Attributes:
        name: the method's name (also its progress label).
        summary: the line ``cnnlens methods`` shows.
        signed: whether its maps can be signed (only the mean can be).
        statistic: ``statistic(mean, var)`` of the attributions over the noisy copies,
            both ``(N, T, C, H, W)`` float64.
        doc: the method's docstring.
    """

    name: str
    summary: str
    signed: bool
    statistic: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    doc: str


def _smooth(
    variant: Variant,
    model,
    x: torch.Tensor,
    target,
    *,
    base: str,
    noise: float,
    samples: int,
    seed: int,
    reduce: str,
    score: str,
    batch_size: int | None,
) -> MethodOutput:
    check_score(score)
    check_reduce(reduce)
    check_batch_size(batch_size)
    samples = check_count("samples", samples)
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or noise < 0:
        raise ValueError(
            f"noise must be a number >= 0 (a fraction of the value range), got {noise!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    kernel, copies, per_channel = _base_kernel(base)
    n = x.shape[0]
    x = x.detach()
    with torch.no_grad():
        targets = resolve_targets(target, n, model.net(x))
    flat = x.flatten(1)
    sigma = (noise * (flat.amax(1) - flat.amin(1))).view(n, 1, 1, 1)
    bs = batch_size_for(x, batch_size)
    per_call = copies or max(1, bs // n)
    generator = torch.Generator(device="cpu").manual_seed(seed)

    shift = None  # the first copy's attribution: accumulating differences from it keeps
    acc1 = acc2 = None  # the variance free of cancellation (exactly 0 for equal copies)
    batches = chunks(samples, per_call)
    with progress.task(variant.name, len(batches)) as advance:
        for rows in batches:
            k = rows.stop - rows.start
            eps = [torch.randn(x.shape, generator=generator, dtype=x.dtype) for _ in range(k)]
            noisy = (x.unsqueeze(0) + sigma * torch.stack(eps).to(x.device)).flatten(0, 1)
            out = kernel(model, noisy, targets.repeat(k, 1), score, batch_size).detach()
            out = out.view(k, n, *out.shape[1:]).double()
            if shift is None:
                shift = out[0].clone()
                acc1 = torch.zeros_like(shift)
                acc2 = torch.zeros_like(shift)
            d = out - shift
            acc1 += d.sum(0)
            acc2 += (d * d).sum(0)
            advance(1)
    m1, m2 = acc1 / samples, acc2 / samples
    mean = shift + m1
    var = (m2 - m1 * m1).clamp_min(0)
    stat = variant.statistic(mean, var).to(x.dtype)
    extras = {"base": base, "sigma": sigma.flatten().tolist()}
    if per_channel:
        maps = reduce_per_target(stat, reduce)
        extras["signed"] = variant.signed and reduce == "sum"
    else:
        maps = stat.squeeze(2)
        extras["signed"] = variant.signed and lookup(base).signed
    return MethodOutput(maps, targets, extras)


# --------------------------------------------------------------------------- the methods


VARIANTS = (
    Variant(
        "smoothgrad",
        "Mean of a gradient attribution over noisy copies of the input (Smilkov et al. 2017)",
        True,
        lambda mean, var: mean,
        """SmoothGrad maps: ``mean_i A(x + eps_i)``, channels reduced after averaging.

    Args:
        model: a LoadedModel.
        x: ``(N, 3, H, W)`` normalised images.
        target: target specification (resolved on the clean input).
        base: a gradient-family method: ``"gradient"`` (raw signed gradient),
            ``"input_x_gradient"``, ``"integrated_gradients"`` (its defaults) or another.
        noise: noise std as a fraction of each image's value range ``max - min``.
        samples: number of noisy copies.
        seed: seed of the CPU generator drawing the noise.
        reduce: channel reduction of the averaged attribution (``"sum"`` keeps the sign).
        score: ``"logit"`` (default), ``"prob"`` or ``"logprob"``.
        batch_size: images per forward pass (default: memory-aware).
    """,
    ),
    Variant(
        "smoothgrad_sq",
        "Mean of the squared gradient attribution over noisy copies (SmoothGrad^2)",
        False,
        lambda mean, var: var + mean * mean,
        """SmoothGrad^2 maps: ``mean_i A(x + eps_i)^2`` per channel, then ``reduce``.

    Parameters as for :func:`smoothgrad`; the maps are never negative.
    """,
    ),
    Variant(
        "vargrad",
        "Variance of a gradient attribution over noisy copies of the input (Adebayo et al. 2018)",
        False,
        lambda mean, var: var,
        """VarGrad maps: population variance of ``A(x + eps_i)`` per channel, then ``reduce``.

    Parameters as for :func:`smoothgrad`; the maps are never negative.
    """,
    ),
)


def smoothing_method(variant: Variant) -> Callable[..., MethodOutput]:
    """Build the method of ``variant`` and register it (family ``"gradient"``).

    Every variant takes the same parameters; the registry and ``cnnlens methods`` read
    them from this one signature.
    """

    def method(
        model,
        x: torch.Tensor,
        target=None,
        *,
        base: str = "gradient",
        noise: float = 0.15,
        samples: int = 25,
        seed: int = 0,
        reduce: str = "sum",
        score: str = "logit",
        batch_size: int | None = None,
    ) -> MethodOutput:
        return _smooth(
            variant,
            model,
            x,
            target,
            base=base,
            noise=noise,
            samples=samples,
            seed=seed,
            reduce=reduce,
            score=score,
            batch_size=batch_size,
        )

    method.__name__ = method.__qualname__ = variant.name
    method.__doc__ = variant.doc
    return register(variant.name, variant.summary, signed=variant.signed, family="gradient")(method)


SMOOTHING = tuple(v.name for v in VARIANTS)
smoothgrad, smoothgrad_sq, vargrad = (smoothing_method(v) for v in VARIANTS)
