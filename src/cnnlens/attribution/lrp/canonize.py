"""Canonising a network for LRP: linear maps with their batch norm folded in, and refusals.

LRP's rules need each layer as one linear map ``z = op(x, W, b)``. A batch norm in eval
mode that reads a conv / linear output directly is an affine map per channel,
``BN(u) = s (u - mu) + beta`` with ``s = gamma / sqrt(var + eps)``, so the pair is one
linear layer with

    W' = s W  (per output channel),     b' = s (b - mu) + beta     (b = 0 without bias).

The fold is *virtual*: :func:`fold` returns new tensors and no parameter or buffer of
the model is written, so the model comes back bit-identical by construction (zennit's
``SequentialMergeBatchNorm`` writes the merged values into the modules and restores
them afterwards; it also leaves the emptied batch norm computing ``u / sqrt(1 + eps)``
rather than ``u``, a factor 0.9995 per layer at timm's ``eps = 1e-3``; ours is exact).

:func:`unsupported` says why LRP has no rule for a module (None when it has one):
normalisations over other units, couplings (softmax, attention), saturating or other
non-rectifying activations (squeeze-excitation gates), and any other module with
parameters or state of its own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...core.activations import Behaviour, module_behaviour
from ...core.errors import MethodError
from .rules import Layer, Op

BN = nn.modules.batchnorm._BatchNorm
NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm, nn.LocalResponseNorm)
NORMS += (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()
COUPLINGS = (nn.Softmax, nn.Softmin, nn.LogSoftmax, nn.Softmax2d, nn.MultiheadAttention, nn.GLU)
CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
ALTERNATIVES = (
    "Use 'gradient', 'integrated_gradients', 'gradcam', 'occlusion' or 'rise' for this "
    "model ('transformer_relevance' for vision transformers)."
)
NORM_WHY = (
    "it divides each unit by statistics of other units, an input-dependent mixing that no "
    "LRP rule here redistributes"
)
COUPLING_WHY = (
    "it couples units (softmax / attention weights depend on other units' values), so "
    "relevance has no fixed linear paths to flow along"
)
GATE_WHY = (
    "it multiplies two activations (a gate such as squeeze-excitation, or attention), "
    "which is no linear layer with fixed weights"
)


def layer_op(module: nn.Module) -> Op | None:
    """``op(x, w, b)``: the module's linear map with other weights; None if unknown.

    Linear, Conv1d/2d/3d with torch's own ``forward`` (any padding mode, groups) and
    timm's ``Conv2dSame`` (TF-"same" padding inside ``forward``) are known.
    """
    if isinstance(module, nn.Linear):
        return F.linear
    if isinstance(module, CONVS):
        if type(module).forward in {c.forward for c in CONVS}:
            return module._conv_forward
        if type(module).__name__ == "Conv2dSame":
            from timm.layers.conv2d_same import conv2d_same

            m = module
            return lambda x, w, b: conv2d_same(x, w, b, m.stride, m.padding, m.dilation, m.groups)
    return None


def fold(layer: Layer, bn: nn.Module) -> Layer:
    """``layer`` followed by the eval-mode batch norm ``bn`` as one layer (module docstring).

    Raises:
        ValueError: ``bn`` has no running statistics (it normalises by the batch).
    """
    if bn.running_var is None or bn.running_mean is None:
        raise ValueError("it has no running statistics, so it normalises by the batch")
    w = layer.weight
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if layer.bias is not None:
        shift = shift + layer.bias * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    weight = w * scale.view(-1, *[1] * (w.dim() - 1))
    return Layer(layer.op, weight.detach(), shift.detach())


def unsupported(module: nn.Module, behaviour: Behaviour | None | bool = False) -> str | None:
    """Why LRP has no rule for ``module``, or None when it has one (module docstring).

    ``behaviour``: the module's probed activation behaviour when the caller has it already
    (False: probe here)."""
    if isinstance(module, (nn.Linear, *CONVS)):
        known = layer_op(module) is not None
        return None if known else "it is a Conv subclass with its own forward (unknown map)"
    for kinds, why in ((BN, None), (NORMS, NORM_WHY), (COUPLINGS, COUPLING_WHY)):
        if isinstance(module, kinds):
            return why
    if behaviour is False:
        behaviour = module_behaviour(module)
    return activation_why(behaviour) if behaviour is not None else _own_state(module)


def _own_state(module: nn.Module) -> str | None:
    """A module with parameters (or, as a leaf, buffers) of its own has an unknown map."""
    held = [n for n, _ in module.named_parameters(recurse=False)]
    if not held and next(module.children(), None) is None:
        held = [n for n, _ in module.named_buffers(recurse=False)]
    if not held:
        return None
    return (
        f"it holds parameters or state of its own ({', '.join(held)}) and is not a Conv or "
        "Linear layer or a batch norm, so its linear map is unknown"
    )


def activation_why(behaviour: Behaviour) -> str | None:
    """Why relevance cannot pass an activation of this behaviour (None: it passes)."""
    if behaviour.rectifying:
        return None
    what = f"it is {behaviour.describe()}"
    if behaviour.family == "saturating":
        return (
            f"{what}: it does not pass its input on, and as a gate (squeeze-excitation) it "
            "scales other units multiplicatively"
        )
    return f"{what}, so it does not pass its input on"


def refusal(where: str, why: str) -> MethodError:
    """The one-line error for an operation LRP has no rule for."""
    return MethodError(
        f"LRP has no rule for {where}: {why}; LRP needs Conv / Linear layers (batch norm "
        f"folded in), rectifying activations, pooling and sums. {ALTERNATIVES}"
    )


__all__ = [
    "ALTERNATIVES",
    "BN",
    "COUPLING_WHY",
    "GATE_WHY",
    "NORM_WHY",
    "activation_why",
    "fold",
    "layer_op",
    "refusal",
    "unsupported",
]
