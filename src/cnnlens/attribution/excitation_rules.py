"""Which modules and calls excitation backprop has a rule for, and why the others have none.

The marginal-winning-probability rule (Zhang et al. 2016, see
:mod:`cnnlens.attribution.excitation`) is defined for linear layers with
excitatory weights and for units that pass their input on where they are active,
``y = max(z, 0)`` (optionally clipped, ReLU6). Every other operation that a
forward pass meets is either a plain rearrangement whose ordinary gradient already
is the rule (pooling, sums, concatenation, flatten, identity), or it is refused
here with the reason, found by behaviour (:mod:`cnnlens.core.activations`):

* a **signed** activation (self-gated z*gate(z): SiLU/Swish, GELU, Mish,
  Hardswish; leaky: LeakyReLU, ELU) has negative outputs, and a negative unit has
  no winning probability to hand down;
* a **saturating** one (Sigmoid, Hardsigmoid, Tanh; the gate of a
  squeeze-excitation block) does not pass its input on, and the gate then scales
  other units multiplicatively, which is no excitatory connection;
* a **normalisation** (LayerNorm, GroupNorm, InstanceNorm, RMSNorm, local response
  norm) divides each unit by statistics of other units, an input-dependent signed
  mixing with no fixed weights to share mass along;
* a **coupling** (softmax, attention, GLU) makes a unit's weight depend on other
  units' values;
* any other layer with parameters of its own has no known connection weights.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from ..core.activations import Behaviour, module_behaviour
from ..core.errors import MethodError

BN = nn.modules.batchnorm._BatchNorm
NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm, nn.LocalResponseNorm)
NORMS += (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()
COUPLINGS = (nn.Softmax, nn.Softmin, nn.LogSoftmax, nn.Softmax2d, nn.MultiheadAttention, nn.GLU)
ALTERNATIVES = (
    "Use 'gradcam', 'guided_backprop', 'integrated_gradients', 'occlusion' or 'rise' "
    "for this model."
)
RULE = (
    "the rule needs Conv2d / Linear / BatchNorm layers and units y = max(z, 0) "
    "(or clipped, like ReLU6)"
)
NORM_WHY = (
    "it divides each unit by statistics of other units (an input-dependent, signed "
    "mixing), so there are no fixed excitatory weights to share probability along"
)
COUPLING_WHY = (
    "it couples its inputs (softmax / attention weights depend on other units' values), "
    "so there are no fixed excitatory connections"
)


def linear_op(module: nn.Module):
    """``op(x, w)``: the module's linear map with weight ``w`` and no bias; None if unknown."""
    if isinstance(module, nn.Linear):
        return lambda x, w: F.linear(x, w)
    if isinstance(module, nn.Conv2d):
        if type(module).forward is nn.Conv2d.forward:
            return lambda x, w: module._conv_forward(x, w, None)
        if type(module).__name__ == "Conv2dSame":  # timm: pads TF-style inside forward
            from timm.layers.conv2d_same import conv2d_same

            m = module
            return lambda x, w: conv2d_same(x, w, None, m.stride, m.padding, m.dilation, m.groups)
    return None


def activation_why(behaviour: Behaviour) -> str | None:
    """Why EB has no rule for an activation of this behaviour (None: it has one)."""
    if behaviour.family in ("relu", "clipped"):
        return None
    what = f"it is {behaviour.describe()}"
    if behaviour.family == "rectifier" and behaviour.signed:
        return f"{what}, and a negative unit has no winning probability to pass on"
    if behaviour.family == "saturating":
        return (
            f"{what}: it does not pass its input on, and as a gate (squeeze-excitation) it "
            "scales other units multiplicatively, which is no excitatory connection"
        )
    return f"{what}, so it does not pass its input on where it is active"


def unsupported(module: nn.Module) -> str | None:
    """Why excitation backprop has no rule for ``module``, or None when it has one.

    The module's own parameters and class decide, then its behaviour on a probe
    (see the module docstring); a container is judged by its own parameters only.
    """
    if isinstance(module, (nn.Linear, BN)):
        return None
    if isinstance(module, nn.Conv2d):
        if linear_op(module) is None:
            return "it is a Conv2d subclass with its own forward, so its linear map is unknown"
        return None
    if isinstance(module, NORMS):
        return NORM_WHY
    if isinstance(module, COUPLINGS):
        return COUPLING_WHY
    behaviour = module_behaviour(module)
    if behaviour is not None:
        return activation_why(behaviour)
    own = [name for name, _ in module.named_parameters(recurse=False)]
    if own:
        return (
            f"it has parameters of its own ({', '.join(own)}) and is not a Conv2d, Linear or "
            "BatchNorm, so its excitatory connections are unknown"
        )
    leaf = next(module.children(), None) is None
    buffers = [name for name, _ in module.named_buffers(recurse=False)]
    if leaf and buffers:
        return f"it holds state ({', '.join(buffers)}) and has no known rule"
    return None


def is_gate(module: nn.Module) -> bool:
    """Whether ``module`` is a clipped ReLU (ReLU6-like) that needs EB's gate rule."""
    behaviour = module_behaviour(module)
    return behaviour is not None and behaviour.family == "clipped"


def refusal(where: str, why: str) -> MethodError:
    """The one-line error for an operation EB cannot pass probability through."""
    return MethodError(
        f"excitation backprop is undefined at {where}: {why}; {RULE}. {ALTERNATIVES}"
    )


__all__ = [
    "ALTERNATIVES",
    "activation_why",
    "is_gate",
    "linear_op",
    "refusal",
    "unsupported",
]
