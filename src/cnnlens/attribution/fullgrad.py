"""FullGrad: input-gradients and bias-gradients of every convolution and batch norm.

**FullGrad** (Srinivas & Fleuret, "Full-Gradient Representation for Neural
Network Visualization", NeurIPS 2019) completes the input gradient with the
biases. For a network that is piecewise linear in its input (ReLU, ReLU6,
max/average pooling, convolutions, batch norm in eval mode, linear layers) the
score splits exactly into

    s_c(x) = sum_i x_i g_i  +  sum_l sum_{k,u} b_lk g_lk(u),

with g = d s_c / d x the input gradient and g_lk(u) the gradient at the output of
the affine operation l that adds bias b_lk to channel k (a batch norm's bias is
its effective one, beta - mu gamma / sqrt(var + eps)). The saliency map keeps
every spatial term, each post-processed by psi (absolute value, min-max
rescaling to [0, 1], bilinear upsampling to the input size) and adds them:

    FullGrad_c = sum_colours psi(|x g|) + sum_l sum_k psi(|b_lk g_lk|).

**Which biases.** Every ``conv2d``, ``conv_transpose2d`` and ``batch_norm`` call
made in the forward pass, found through a ``TorchFunctionMode`` active for the
call only (so timm's ``BatchNormAct2d``, functional convolutions and
``Conv2dSame`` count), reading the gradient at the call's own output, before any
activation the module applies itself. Batch norms that use batch statistics
(training mode, no running statistics) are not affine in the input and are left
out; so are the biases of linear layers and layer norms (not spatial; they belong
to the completeness sum but not to the map). A model without any such bias is
refused.

**Post-processing.** ``rescale="channel"`` (default) follows pytorch-grad-cam
1.5.7: each colour channel of |x g| and each channel of |b g| is min-max scaled
separately, as ``(v - min) / (max - min + 1e-7)``, before the sum; so a channel's
bias scales out and only where its gradient lies remains. ``rescale="layer"``
scales each term (the input's three colours, or a layer's channels) jointly,
as the authors' released code does, so large biases weigh more. Either way the
maps are upsampled bilinearly (half-pixel centres); the terms of one resolution
are summed first and upsampled once, which equals upsampling each channel, as
upsampling is linear.

**Differences from pytorch-grad-cam.** It hooks modules whose type is exactly
``nn.Conv2d`` or ``nn.BatchNorm2d`` and reads the gradient at the module's
output: on EfficientNet's ``BatchNormAct2d`` it finds no batch norm at all, and
on a module that applies its activation inside it would read the gradient after
that activation. On networks built from plain ``Conv2d``/``BatchNorm2d``
modules (torchvision's ResNets, VGGs) both give the same map, up to the final
min-max scaling it applies and we leave to display. One forward pass; one
backward pass per target.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..core.errors import MethodError
from ..core.registry import register
from ..core.targets import resolve_targets
from ..core.tensors import MethodOutput, target_scores, upsample

RESCALE_EPS = 1e-7
RESCALES = ("channel", "layer")
_CONVS = (torch.conv2d, torch.conv_transpose2d)
_BN_SIGNATURE = inspect.signature(F.batch_norm)


class BiasSites(TorchFunctionMode):
    """While active, records ``(output, effective bias)`` of every biased conv2d,
    conv_transpose2d and eval-mode batch_norm call; downstream code gets a copy of
    each output, so an in-place activation after it cannot change what was recorded."""

    def __init__(self):
        super().__init__()
        self.sites: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        bias = None
        if func in _CONVS:
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
        elif func is F.batch_norm:
            bias = _batch_norm_bias(args, kwargs)
        if bias is None or not isinstance(out, torch.Tensor) or out.dim() != 4:
            return out
        if not out.requires_grad:
            return out
        self.sites.append((out, bias.detach().to(out.dtype)))
        return out.clone()


def _batch_norm_bias(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """``beta - mu gamma / sqrt(var + eps)`` of an eval-mode batch_norm call, else None."""
    a = _BN_SIGNATURE.bind(*args, **kwargs)
    a.apply_defaults()
    p = a.arguments
    mean, var = p["running_mean"], p["running_var"]
    if p["training"] or mean is None or var is None:
        return None
    gamma = p["weight"] if p["weight"] is not None else torch.ones_like(mean)
    beta = p["bias"] if p["bias"] is not None else torch.zeros_like(mean)
    return beta - mean * gamma / torch.sqrt(var + p["eps"])


def full_gradients(model, x: torch.Tensor, target):
    """The pieces of the full-gradient decomposition, per target.

    Args:
        model: a LoadedModel.
        x: ``(N, C, H, W)`` images.
        target: target specification.

    Returns:
        ``(input_grads, biases, bias_grads, targets)``: ``input_grads (N, T, C, H, W)``;
        ``biases`` one ``(K_l,)`` effective bias per site; ``bias_grads`` one
        ``(N, T, K_l, h_l, w_l)`` gradient at each site's output; ``targets (N, T)``.

    Raises:
        MethodError: no convolution or batch-norm bias in the forward pass.
    """
    xg = x.detach().requires_grad_(True)
    mode = BiasSites()
    with mode:
        logits = model.net(xg)
    targets = resolve_targets(target, x.shape[0], logits)
    if not mode.sites:
        raise MethodError(
            f"fullgrad found no biased convolution or eval-mode batch norm in "
            f"{type(model.net).__name__}'s forward pass, so it has no bias-gradients to add; "
            "use 'input_x_gradient' (its input term) or 'gradient'"
        )
    scores = target_scores(logits, targets, "logit")
    outs = [o for o, _ in mode.sites]
    per_target = []
    for j in range(targets.shape[1]):
        keep = j < targets.shape[1] - 1
        grads = torch.autograd.grad(
            scores[:, j].sum(), [xg, *outs], retain_graph=keep, allow_unused=True
        )
        per_target.append([torch.zeros_like(o) if g is None else g for g, o in
                           zip(grads, [xg, *outs])])  # fmt: skip
    input_grads = torch.stack([p[0] for p in per_target], dim=1)
    bias_grads = [torch.stack([p[i] for p in per_target], dim=1) for i in range(1, len(outs) + 1)]
    return input_grads, [b for _, b in mode.sites], bias_grads, targets


def rescaled(t: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """``(v - min) / (max - min + 1e-7)`` of ``t (B, K, h, w)``, per channel or per row."""
    flat = t.flatten(2) if per_channel else t.flatten(1)
    lo = flat.amin(-1, keepdim=True)
    hi = (flat - lo).amax(-1, keepdim=True)
    return ((flat - lo) / (hi + RESCALE_EPS)).view_as(t)


def psi_sum(terms: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """``sum_k psi(|term_k|)`` before upsampling: ``(N, T, K, h, w)`` -> ``(N, T, h, w)``."""
    n, t = terms.shape[:2]
    return rescaled(terms.abs().flatten(0, 1), per_channel).sum(1).view(n, t, *terms.shape[-2:])


@register(
    "fullgrad",
    "Input-gradient x input plus every conv/batch-norm bias x its gradient, rescaled and "
    "summed (Srinivas & Fleuret 2019)",
    family="gradient",
)
def fullgrad(model, x: torch.Tensor, target=None, *, rescale: str = "channel") -> MethodOutput:
    """FullGrad saliency maps (see the module docstring); no layer to choose.

    Args:
        rescale: ``"channel"`` (pytorch-grad-cam: every channel min-max scaled alone) or
            ``"layer"`` (the authors' code: each term's channels scaled together).

    Returns:
        ``maps (N, T, H, W)`` (unsigned), ``targets (N, T)``; ``extras["biases"]`` counts
        the bias sites found.
    """
    if rescale not in RESCALES:
        raise ValueError(f"rescale must be one of {', '.join(RESCALES)}, got {rescale!r}")
    per_channel = rescale == "channel"
    size = tuple(x.shape[-2:])
    input_grads, biases, bias_grads, targets = full_gradients(model, x, target)
    with torch.no_grad():
        maps = psi_sum(input_grads * x.detach().unsqueeze(1), per_channel)
        by_size: dict[tuple[int, int], torch.Tensor] = {}  # upsampling is linear: sum first
        for b, g in zip(biases, bias_grads):
            term = psi_sum(g * b.view(1, 1, -1, 1, 1), per_channel)
            key = tuple(term.shape[-2:])
            by_size[key] = term if key not in by_size else by_size[key] + term
        for term in by_size.values():
            maps = maps + upsample(term, size)
    return MethodOutput(maps, targets, {"biases": len(biases)})
