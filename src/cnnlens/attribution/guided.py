"""Guided backpropagation and deconvnet: gradients with a modified activation backward.

Both replace the backward pass of every activation module (ReLU, ReLU6,
LeakyReLU, SiLU, GELU, ELU) during one call; everything else backpropagates
as usual. With ``g`` the gradient arriving at an activation whose input is ``z``:

* **Guided backprop** (Springenberg et al., "Striving for Simplicity", ICLR
  workshop 2015): ``g_in = max(g, 0) * f'(z)``: only positive gradients pass,
  and only where the unit let signal through in the forward pass. For ReLU
  ``f'(z) = [z > 0]``; for ReLU6 ``[0 < z < 6]``; for smooth activations (SiLU,
  GELU, ELU, LeakyReLU) we use their true local derivative, so the rule is
  "positive part of the incoming gradient times the local slope".
* **Deconvnet** (Zeiler & Fergus, ECCV 2014): ``g_in = max(g, 0)``: the
  backward pass ignores the forward activation pattern entirely.

The map is the modified input gradient reduced over colour channels
(``reduce="absmax"`` by default, like gradient saliency).

Scope and limits: the rule is attached with forward hooks on activation
*modules* inside the call and removed in ``finally``; in-place activations are
switched to out-of-place for the call and restored. Activations applied as
functions inside a ``forward`` (``F.relu(x)``, ``torch.relu``) cannot be
intercepted without patching torch, which cnnlens never does: they keep their
ordinary gradient. A model with no activation module at all is refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..core.errors import MethodError
from ..core.hooks import attached, out_of_place
from ..core.registry import register
from ..core.tensors import MethodOutput
from .gradient import check_reduce, input_gradients, reduce_per_target

ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU, nn.GELU, nn.ELU)


def local_slope(module: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """``f'(z)`` of an activation module, elementwise."""
    if isinstance(module, nn.ReLU6):
        return ((z > 0) & (z < 6)).to(z.dtype)
    if isinstance(module, nn.ReLU):
        return (z > 0).to(z.dtype)
    if isinstance(module, nn.LeakyReLU):
        return torch.where(z > 0, torch.ones_like(z), torch.full_like(z, module.negative_slope))
    if isinstance(module, nn.SiLU):
        s = torch.sigmoid(z)
        return s * (1 + z * (1 - s))
    if isinstance(module, nn.GELU):
        if module.approximate != "none":
            with torch.enable_grad():
                zz = z.detach().requires_grad_(True)
                (g,) = torch.autograd.grad(module(zz).sum(), zz)
            return g
        cdf = 0.5 * (1 + torch.erf(z / 2**0.5))
        pdf = torch.exp(-0.5 * z * z) / (2 * torch.pi) ** 0.5
        return cdf + z * pdf
    if isinstance(module, nn.ELU):
        return torch.where(z > 0, torch.ones_like(z), module.alpha * torch.exp(z))
    raise MethodError(f"no backward rule for {type(module).__name__}")


class _Rectified(torch.autograd.Function):
    """Identity on the activation output; backward sends the modified gradient to ``z``."""

    @staticmethod
    def forward(ctx, z, y, slope_fn, guided):
        ctx.slope_fn, ctx.guided = slope_fn, guided
        ctx.save_for_backward(z)
        return y.clone()

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        grad = grad.clamp_min(0)
        if ctx.guided:
            grad = grad * ctx.slope_fn(z)
        return grad, None, None, None


@contextmanager
def modified_backward(net: nn.Module, guided: bool) -> Iterator[int]:
    """Within the block, activation modules of ``net`` backpropagate by the chosen rule.

    Args:
        net: the model.
        guided: guided backprop's rule (True) or deconvnet's (False).

    Yields:
        The number of activation modules hooked. Hooks and in-place flags are
        restored on exit, exceptions (also while attaching) included.
    """
    acts = [m for m in net.modules() if isinstance(m, ACTIVATIONS)]
    if not acts:
        raise MethodError(
            f"{type(net).__name__} has no activation modules "
            f"({', '.join(a.__name__ for a in ACTIVATIONS)}); "
            "activations called as functions (F.relu, torch.relu) cannot be intercepted "
            "without patching torch. Use 'gradient' or a model built from nn.ReLU modules."
        )

    def hook(module, args, output):
        return _Rectified.apply(args[0], output, lambda z: local_slope(module, z), guided)

    with out_of_place(acts), attached((m, hook) for m in acts):
        yield len(acts)


def _modified_gradient(model, x, target, reduce, guided) -> MethodOutput:
    check_reduce(reduce)
    with modified_backward(model.net, guided) as count:
        grads, targets = input_gradients(model, x, target, "logit")
    maps = reduce_per_target(grads, reduce)
    return MethodOutput(maps.detach(), targets, {"signed": reduce == "sum", "activations": count})


@register(
    "guided_backprop",
    "Gradient passing only positive signal back through active units (Springenberg 2015)",
    family="gradient",
)
def guided_backprop(model, x: torch.Tensor, target=None, *, reduce: str = "absmax") -> MethodOutput:
    """Guided backpropagation maps ``(N, T, H, W)``; see the module docstring for the rule."""
    return _modified_gradient(model, x, target, reduce, guided=True)


@register(
    "deconvnet",
    "Backward pass keeping positive gradients, ignoring the forward mask (Zeiler & Fergus 2014)",
    family="gradient",
)
def deconvnet(model, x: torch.Tensor, target=None, *, reduce: str = "absmax") -> MethodOutput:
    """Deconvnet maps ``(N, T, H, W)``; see the module docstring for the rule."""
    return _modified_gradient(model, x, target, reduce, guided=False)


__all__ = ["ACTIVATIONS", "deconvnet", "guided_backprop", "local_slope", "modified_backward"]
