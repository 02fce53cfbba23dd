"""Gradient saliency (Simonyan, Vedaldi & Zisserman, ICLR workshop 2014).

The map is the gradient of the class score with respect to the input pixels,
reduced over colour channels. Simonyan et al. take the largest magnitude:

    M_c(u) = max_k | d s_c / d x_k(u) |

``reduce="sum"`` keeps the sign (sum over channels), ``"l2"`` takes the norm.
One forward pass serves every target; each target costs one backward pass.
"""

from __future__ import annotations

import torch

from ..core.registry import register
from ..core.targets import resolve_targets
from ..core.tensors import MethodOutput, check_score, target_scores

REDUCTIONS = ("absmax", "sum", "l2")


def reduce_channels(grad: torch.Tensor, reduce: str) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, H, W)`` by the named channel reduction."""
    if reduce == "absmax":
        return grad.abs().amax(dim=1)
    if reduce == "sum":
        return grad.sum(dim=1)
    if reduce == "l2":
        return grad.norm(dim=1)
    raise ValueError(f"reduce must be one of {', '.join(REDUCTIONS)}, got {reduce!r}")


def check_reduce(reduce: str) -> None:
    """Fail early, before any pass, on an unknown channel reduction."""
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {', '.join(REDUCTIONS)}, got {reduce!r}")


def reduce_per_target(per_channel: torch.Tensor, reduce: str) -> torch.Tensor:
    """``(N, T, C, H, W)`` -> ``(N, T, H, W)`` with the named channel reduction."""
    n, t = per_channel.shape[:2]
    return reduce_channels(per_channel.flatten(0, 1), reduce).view(n, t, *per_channel.shape[-2:])


def input_gradients(model, x: torch.Tensor, target, score: str = "logit"):
    """Gradients of each target score w.r.t. the input: ``(N, T, C, H, W)`` and targets."""
    check_score(score)
    xg = x.detach().requires_grad_(True)
    logits = model.net(xg)
    targets = resolve_targets(target, x.shape[0], logits)
    scores = target_scores(logits, targets, score)
    grads = []
    for j in range(targets.shape[1]):
        (g,) = torch.autograd.grad(scores[:, j].sum(), xg, retain_graph=j < targets.shape[1] - 1)
        grads.append(g)
    return torch.stack(grads, dim=1), targets


def gradient_maps(
    model, x: torch.Tensor, target, reduce: str, score: str, *, times_input: bool = False
) -> MethodOutput:
    """Maps from the input gradient: ``ds/dx`` (or ``x * ds/dx``), channels reduced.

    Args:
        model: a LoadedModel.
        x: ``(N, C, H, W)`` images.
        target: target specification.
        reduce: channel reduction, one of :data:`REDUCTIONS` (``"sum"`` keeps the sign).
        score: differentiate the ``"logit"``, ``"prob"`` or ``"logprob"``.
        times_input: multiply the gradient by the input before reducing (input x gradient).

    Returns:
        ``maps (N, T, H, W)``, ``targets (N, T)``, ``extras["signed"]``.
    """
    check_reduce(reduce)
    grads, targets = input_gradients(model, x, target, score)
    if times_input:
        grads = grads * x.detach().unsqueeze(1)
    maps = reduce_per_target(grads, reduce)
    return MethodOutput(maps.detach(), targets, {"signed": reduce == "sum"})


@register(
    "gradient",
    "Gradient of the class score w.r.t. input pixels, max |.| over colour (Simonyan et al. 2014)",
    family="gradient",
)
def gradient(
    model, x: torch.Tensor, target=None, *, reduce: str = "absmax", score: str = "logit"
) -> MethodOutput:
    """Gradient saliency maps.

    Args:
        model: a LoadedModel.
        x: ``(N, 3, H, W)`` normalised images.
        target: target specification.
        reduce: ``"absmax"`` (Simonyan et al.), ``"sum"`` (signed) or ``"l2"``.
        score: differentiate the ``"logit"`` (default), ``"prob"`` or ``"logprob"``.

    Returns:
        ``maps (N, T, H, W)``.
    """
    return gradient_maps(model, x, target, reduce, score)
