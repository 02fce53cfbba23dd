"""Guided backpropagation and deconvnet: gradients with a modified activation backward.

Both replace the backward pass of every *rectifying* activation during one call;
everything else backpropagates as usual. With ``g`` the gradient arriving at an
activation whose input is ``z``:

* **Guided backprop** (Springenberg et al., "Striving for Simplicity", ICLR
  workshop 2015): ``g_in = max(g, 0) * f'(z)``: only positive gradients pass,
  and only where the unit let signal through in the forward pass. For ReLU
  ``f'(z) = [z > 0]``; for a clipped ReLU (ReLU6) ``[0 < z < t]``; for the other
  rectifiers (GELU, SiLU/Swish, Mish, Hardswish, QuickGELU, LeakyReLU, ELU, ...)
  the true local derivative, so the rule is "positive part of the incoming
  gradient times the local slope".
* **Deconvnet** (Zeiler & Fergus, ECCV 2014): ``g_in = max(g, 0)``: the
  backward pass ignores the forward activation pattern entirely.

The map is the modified input gradient reduced over colour channels
(``reduce="absmax"`` by default, like gradient saliency).

**Which units.** Activations are recognised by behaviour
(:mod:`cnnlens.core.activations`): a parameter-free leaf module (torch's, timm's or
the user's) whose probed curve is elementwise and rectifying, i.e. ReLU-like or a
smooth gate. Saturating units (Sigmoid, Hardsigmoid, Tanh: squeeze-excitation
gates) and other elementwise maps keep their ordinary gradient, as in the
original method, which modifies rectifiers only. Modules get the rule through
forward hooks; in-place modules run out of place for the call. Activations
*called as functions* inside ``forward`` (``F.relu``, ``torch.relu``,
``x.relu_()``, ``F.gelu``, ``F.silu``, ...) get the same rule through
:func:`cnnlens.core.functional.intercepted`, a ``TorchFunctionMode`` active only
during the call: torch itself is never patched. Hooks, flags and the mode are
all undone in ``finally``. A forward pass in which no rectifying activation ran
is refused (the map would be the plain gradient).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from ..core.activations import Behaviour, module_behaviour
from ..core.activations import local_slope as _slope
from ..core.errors import MethodError
from ..core.functional import Call, Interceptor, intercepted
from ..core.hooks import attached, out_of_place
from ..core.registry import register
from ..core.tensors import MethodOutput
from .gradient import check_reduce, input_gradients, reduce_per_target


def local_slope(module: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """``f'(z)`` of an activation module, elementwise, in ``z``'s dtype."""
    behaviour = module_behaviour(module)
    if behaviour is None or not behaviour.rectifying:
        raise MethodError(f"{type(module).__name__} is not a rectifying activation")
    return _slope(module.forward, z, behaviour).to(z.dtype)


class _Rectified(torch.autograd.Function):
    """Identity on the activation output; backward sends the modified gradient to ``z``."""

    @staticmethod
    def forward(ctx, z, y, slope):
        ctx.guided = slope is not None
        if ctx.guided:
            ctx.save_for_backward(slope)
        return y.clone()

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clamp_min(0)
        if ctx.guided:
            (slope,) = ctx.saved_tensors
            grad = grad * slope.to(grad.dtype)
        return grad, None, None


@dataclass
class Rectified:
    """What one call modified: activation modules found, and calls rewritten in the
    forward pass (module calls and function calls)."""

    modules: int = 0
    module_calls: int = 0
    function_calls: int = 0
    depth: int = 0  # > 0 inside a hooked module: its own F.* calls are left alone
    mode: Interceptor | None = None


@contextmanager
def modified_backward(net: nn.Module, guided: bool) -> Iterator[Rectified]:
    """Within the block, rectifying activations of ``net`` backpropagate by the chosen rule.

    Args:
        net: the model.
        guided: guided backprop's rule (True) or deconvnet's (False).

    Yields:
        A :class:`Rectified` whose counts fill as the forward pass runs. Hooks,
        in-place flags and the function mode are undone on exit, exceptions
        (also while attaching) included.
    """
    state = Rectified()
    acts = [(m, b) for m in net.modules() if (b := module_behaviour(m)) and b.rectifying]
    state.modules = len(acts)

    def slope(fn, z: torch.Tensor, behaviour: Behaviour):
        if not guided:
            return None
        with state.mode.paused():
            return _slope(fn, z.detach(), behaviour)

    def enter(module, args):
        state.depth += 1

    def make_hook(behaviour: Behaviour):
        def hook(module, args, output):
            state.depth -= 1
            z = args[0] if args else None
            if not isinstance(z, torch.Tensor) or not isinstance(output, torch.Tensor):
                return None
            if output.shape != z.shape or not torch.is_grad_enabled():
                return None
            state.module_calls += 1
            return _Rectified.apply(z, output, slope(module.forward, z, behaviour))

        return hook

    def on_call(call: Call):
        z = call.z
        if call.kind != "activation" or state.depth or not torch.is_grad_enabled():
            return None
        if not z.requires_grad or not z.is_floating_point():
            return None
        behaviour = call.behaviour()
        if behaviour is None or not behaviour.rectifying:
            return None
        with torch.no_grad():
            y = call.fn(z)
        state.function_calls += 1
        return call.finish(_Rectified.apply(z, y, slope(call.fn, z, behaviour)))

    def hooks():
        for m, b in acts:
            yield m, enter, "forward_pre"
            yield m, make_hook(b), "forward"

    with out_of_place(m for m, _ in acts), attached(hooks()), intercepted(on_call) as mode:
        state.mode = mode
        yield state


def _modified_gradient(model, x, target, reduce, guided) -> MethodOutput:
    check_reduce(reduce)
    with modified_backward(model.net, guided) as done:
        grads, targets = input_gradients(model, x, target, "logit")
    if done.module_calls + done.function_calls == 0:
        name = "guided backprop" if guided else "deconvnet"
        raise MethodError(
            f"{name} found no rectifying activation (ReLU-like or a smooth gate such as GELU "
            f"or SiLU, as a module or an F.relu-style call) in {type(model.net).__name__}'s "
            "forward pass, so its map would be the plain gradient. Use 'gradient'."
        )
    maps = reduce_per_target(grads, reduce)
    extras = {
        "signed": reduce == "sum",
        "activations": done.modules,
        "activation_calls": done.module_calls + done.function_calls,
        "functional_calls": done.function_calls,
    }
    return MethodOutput(maps.detach(), targets, extras)


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


__all__ = ["Rectified", "deconvnet", "guided_backprop", "local_slope", "modified_backward"]
