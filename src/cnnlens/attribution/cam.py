"""Class activation maps: CAM and the gradient-weighted CAM engine.

**CAM** (Zhou et al., CVPR 2016) applies to networks that end in global average
pooling followed by one linear layer. With feature maps A_k and classifier
weights w_ck, the class score is s_c = sum_k w_ck mean_u A_k(u) + b_c, so

    CAM_c(u) = sum_k w_ck A_k(u)

spreads the score over space (its spatial mean is s_c - b_c). One forward pass
gives the map of every class, so top-5 costs no more than top-1.

**Grad-CAM** (Selvaraju et al., ICCV 2017) works on any layer: weight each
channel by its spatially averaged gradient and keep the positive part,

    alpha_ck = mean_u d s_c / d A_k(u),   Grad-CAM_c = ReLU(sum_k alpha_ck A_k).

Other CAM variants only change the channel-weighting rule, which is why
:func:`weighted_cam` takes the rule as an argument. Maps are upsampled
bilinearly to the input size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..core.errors import MethodError
from ..core.hooks import capture
from ..core.layers import default_layer, last_linear
from ..core.names import resolve_layer
from ..core.registry import register
from ..core.targets import resolve_targets
from ..core.tensors import MethodOutput, check_score, target_scores, upsample

WeightRule = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def pick_layer(model, x: torch.Tensor, layer) -> str:
    """The layer to explain at: the given one, or the last conv block."""
    if layer is None:
        return default_layer(model.net, tuple(x.shape[-2:]))
    return resolve_layer(model.net, layer)[0]


def weighted_cam(
    model,
    x: torch.Tensor,
    target,
    layer,
    rule: WeightRule,
    *,
    relu: bool = True,
    score: str = "logit",
) -> MethodOutput:
    """Gradient-weighted CAM with a pluggable channel-weighting ``rule``.

    Args:
        rule: ``rule(activations, gradients) -> weights`` with activations and
            gradients ``(N, K, h, w)`` and weights broadcastable to them.
        relu: keep only the positive part of the weighted sum.

    Returns:
        ``maps (N, T, H, W)`` at input resolution, ``targets (N, T)``.
    """
    check_score(score)
    name = pick_layer(model, x, layer)
    with capture(model.net, [name], gradients=True) as rec:
        logits = model.net(x)
    acts = rec.activations.get(name)
    if not isinstance(acts, torch.Tensor) or acts.dim() != 4:
        raise MethodError(f"layer {name!r} must output a (N, K, h, w) feature map for a CAM method")
    if not logits.requires_grad:
        raise MethodError(
            f"the output does not depend on layer {name!r}; pick a layer before the head"
        )
    targets = resolve_targets(target, x.shape[0], logits)
    scores = target_scores(logits, targets, score)
    cams = []
    for j in range(targets.shape[1]):
        (grads,) = torch.autograd.grad(
            scores[:, j].sum(), acts, retain_graph=j < targets.shape[1] - 1
        )
        with torch.no_grad():
            cams.append((rule(acts, grads) * acts).sum(dim=1))
    maps = torch.stack(cams, dim=1)
    if relu:
        maps = maps.clamp_min(0)
    return MethodOutput(upsample(maps, tuple(x.shape[-2:])).detach(), targets, {"layer": name})


def gradcam_weights(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM's rule: the spatial mean of the gradient per channel."""
    return grads.mean(dim=(2, 3), keepdim=True)


@register(
    "gradcam",
    "Channels weighted by their mean gradient, ReLU of the sum (Selvaraju et al. 2017)",
    family="cam",
)
def gradcam(
    model, x: torch.Tensor, target=None, *, layer=None, score: str = "logit"
) -> MethodOutput:
    """Grad-CAM maps at ``layer`` (default: the last conv block)."""
    return weighted_cam(model, x, target, layer, gradcam_weights, score=score)


@register(
    "cam",
    "Classifier weights applied to the last feature maps of a GAP + linear head (Zhou et al. 2016)",
    family="cam",
)
def cam(model, x: torch.Tensor, target=None, *, layer=None) -> MethodOutput:
    """CAM maps for networks ending in global average pooling and one linear layer.

    The head is found automatically: the last ``nn.Linear`` must receive exactly
    the spatial mean of ``layer``'s feature maps (checked numerically).

    Raises:
        MethodError: the model has another kind of head; use Grad-CAM instead.
    """
    net = model.net
    try:
        lin_name, linear = last_linear(net)
    except Exception:
        raise MethodError(
            f"CAM needs a final nn.Linear after global average pooling; {type(net).__name__} "
            "has none. Use method='gradcam', which works on any architecture."
        ) from None
    name = pick_layer(model, x, layer)
    with capture(net, [name, lin_name], record_inputs=True) as rec, torch.no_grad():
        logits = net(x)
        acts = rec.activations.get(name)
        pooled_in = rec.inputs.get(lin_name)
        ok = (
            isinstance(acts, torch.Tensor)
            and acts.dim() == 4
            and isinstance(pooled_in, torch.Tensor)
            and pooled_in.dim() == 2
            and pooled_in.shape == acts.shape[:2]
            and logits.shape[1] == linear.out_features
        )
        if ok:
            gap = acts.mean(dim=(2, 3))
            tol = 1e-4 * float(gap.abs().max().clamp_min(1.0))
            ok = bool((gap - pooled_in).abs().max() <= tol)
    if not ok:
        default = default_layer(net, tuple(x.shape[-2:]))
        if name != default:
            raise MethodError(
                f"CAM needs the layer whose global average pooling feeds {lin_name!r}, and "
                f"{name!r} is not it; leave layer unset for the default ({default!r}), or use "
                "method='gradcam', which takes any layer."
            )
        raise MethodError(
            f"CAM needs global average pooling of {name!r} feeding the last linear layer "
            f"{lin_name!r} directly, and this model has another head. "
            "Use method='gradcam', which works on any architecture."
        )
    with torch.no_grad():
        targets = resolve_targets(target, x.shape[0], logits)
        weights = linear.weight[targets]  # (N, T, K)
        maps = torch.einsum("ntk,nkhw->nthw", weights.to(acts.dtype), acts)
    return MethodOutput(upsample(maps, tuple(x.shape[-2:])), targets, {"layer": name})
