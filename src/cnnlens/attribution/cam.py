"""Class activation maps: CAM and the gradient-weighted CAM engine.

**CAM** (Zhou et al., CVPR 2016) applies to networks that end in global average
pooling followed by one linear layer. With feature maps A_k and classifier
weights w_ck, the class score is s_c = sum_k w_ck mean_u A_k(u) + b_c, so

    CAM_c(u) = sum_k w_ck A_k(u)

spreads the score over space (its spatial mean is s_c - b_c). One forward pass
gives the map of every class, so top-5 costs no more than top-1. A_k is the map
the pooling consumes: from the layer, pointwise operations on the way to the
pooling (DenseNet's functional ReLU, dropout, a per-position norm, a permute)
are followed (:mod:`.cam_pooling`), and the numbers are checked.

**Grad-CAM** (Selvaraju et al., ICCV 2017) works on any layer: weight each
channel by its spatially averaged gradient and keep the positive part,

    alpha_ck = mean_u d s_c / d A_k(u),   Grad-CAM_c = ReLU(sum_k alpha_ck A_k).

Other CAM variants only change the channel-weighting rule, which is why
:func:`weighted_cam` takes the rule as an argument. Maps are upsampled
bilinearly to the input size.

Every method reads its layer through :mod:`cnnlens.core.layouts`: channels-last
outputs and token sequences (ViT, Swin) become ``(N, C, h, w)`` maps, gradients
through the same reshape, and a tensor that cannot be read as a map is refused.
``layout=``, ``grid=``, ``prefix=`` and ``reshape=`` override what the model says;
``extras["layer"]`` and ``extras["layout"]`` record what was used.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..core.errors import MethodError
from ..core.hooks import capture
from ..core.layers import default_layer
from ..core.layouts import Layout, check_override, layout_of
from ..core.names import resolve_layer
from ..core.registry import register
from ..core.sites import Traced, observe
from ..core.targets import resolve_targets
from ..core.tensors import MethodOutput, check_score, target_scores, upsample
from .cam_pooling import watch_pooling

WeightRule = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def pick_layer(model, x: torch.Tensor, layer) -> str:
    """The layer to explain at: the given one, or the default (:func:`default_layer`)."""
    if layer is None:
        return default_layer(model.net, tuple(x.shape[-2:]))
    return resolve_layer(model.net, layer)[0]


def overrides(layout=None, grid=None, prefix=None, reshape=None) -> dict:
    """The layout override parameters, validated before any forward pass."""
    check_override(layout, grid, prefix, reshape)
    return {"layout": layout, "grid": grid, "prefix": prefix, "reshape": reshape}


def read_layout(model, x: torch.Tensor, name: str, seen: Traced, over: dict) -> Layout:
    """How layer ``name``'s output reads as ``(N, C, h, w)``, from the pass ``seen`` of ``x``.

    Raises:
        MethodError: the output cannot be read as a spatial map (shape and reason).
    """
    shape = tuple(x.shape[1:])
    return layout_of(model.net, name, shape, sites=seen.sites, batch=len(x), **over)


def spatial(lay: Layout, name: str, t) -> torch.Tensor:
    """The captured output ``t`` of layer ``name`` as ``(N, C, h, w)``."""
    if not isinstance(t, torch.Tensor):
        raise MethodError(f"layer {name!r} outputs a {type(t).__name__}, not a tensor")
    return lay.to_spatial(t)


def layer_extras(name: str, lay: Layout) -> dict:
    """What a layer-based method records: the layer used and how its output was read."""
    return {"layer": name, "layout": lay.describe()}


def weighted_cam(
    model,
    x: torch.Tensor,
    target,
    layer,
    rule: WeightRule,
    *,
    relu: bool = True,
    score: str = "logit",
    layout=None,
    grid=None,
    prefix=None,
    reshape=None,
) -> MethodOutput:
    """Gradient-weighted CAM with a pluggable channel-weighting ``rule``.

    Args:
        rule: ``rule(activations, gradients) -> weights`` with activations and
            gradients ``(N, K, h, w)`` and weights broadcastable to them.
        relu: keep only the positive part of the weighted sum.
        layout, grid, prefix, reshape: override the layer's layout (see
            :func:`cnnlens.core.layouts.layout_of`).

    Returns:
        ``maps (N, T, H, W)`` at input resolution, ``targets (N, T)``.
    """
    check_score(score)
    over = overrides(layout, grid, prefix, reshape)
    name = pick_layer(model, x, layer)
    with observe(model.net) as seen, capture(model.net, [name], gradients=True) as rec:
        logits = model.net(x)
    lay = read_layout(model, x, name, seen, over)
    raw = rec.activations.get(name)
    acts = spatial(lay, name, raw).detach()
    if not logits.requires_grad:
        raise MethodError(
            f"the output does not depend on layer {name!r}; pick a layer before the head"
        )
    targets = resolve_targets(target, x.shape[0], logits)
    scores = target_scores(logits, targets, score)
    cams = []
    for j in range(targets.shape[1]):
        (grads,) = torch.autograd.grad(
            scores[:, j].sum(), raw, retain_graph=j < targets.shape[1] - 1
        )
        with torch.no_grad():
            cams.append((rule(acts, lay.to_spatial(grads)) * acts).sum(dim=1))
    maps = torch.stack(cams, dim=1)
    if relu:
        maps = maps.clamp_min(0)
    maps = upsample(maps, tuple(x.shape[-2:])).detach()
    return MethodOutput(maps, targets, layer_extras(name, lay))


def gradcam_weights(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM's rule: the spatial mean of the gradient per channel."""
    return grads.mean(dim=(2, 3), keepdim=True)


@register(
    "gradcam",
    "Channels weighted by their mean gradient, ReLU of the sum (Selvaraju et al. 2017)",
    family="cam",
)
def gradcam(
    model,
    x: torch.Tensor,
    target=None,
    *,
    layer=None,
    score: str = "logit",
    layout=None,
    grid=None,
    prefix=None,
    reshape=None,
) -> MethodOutput:
    """Grad-CAM maps at ``layer`` (default: :func:`cnnlens.core.layers.default_layer`)."""
    return weighted_cam(
        model,
        x,
        target,
        layer,
        gradcam_weights,
        score=score,
        layout=layout,
        grid=grid,
        prefix=prefix,
        reshape=reshape,
    )


def _head(watch, lay: Layout, logits, linear, pooled_in):
    """``(map, layout, ops, weight)`` of the map whose spatial mean is what the classifier
    reads: the input of the last linear layer (``weight`` its matrix) or, with no linear
    layer after it, the output itself (``weight`` None: SqueezeNet's class maps); else None."""
    wanted = []
    if linear is not None and isinstance(pooled_in, torch.Tensor) and pooled_in.dim() == 2:
        if isinstance(logits, torch.Tensor) and logits.shape[-1] == linear.out_features:
            wanted.append((pooled_in, linear.weight))
    if isinstance(logits, torch.Tensor) and logits.dim() == 2:
        wanted.append((logits, None))
    for t, t_lay, ops in watch.pooled(lay):
        acts = t_lay.to_spatial(t)
        gap = acts.mean(dim=(2, 3))
        tol = 1e-4 * float(gap.abs().max().clamp_min(1.0))
        for vec, weight in wanted:
            if acts.shape[:2] == vec.shape and bool((gap - vec).abs().max() <= tol):
                return acts, t_lay, ops, weight
    return None


def _refuse(net, x, name: str, lin_name: str | None) -> MethodError:
    default = default_layer(net, tuple(x.shape[-2:]))
    reads = "is the output" if lin_name is None else f"feeds {lin_name!r}"
    if name != default:
        return MethodError(
            f"CAM needs the layer whose global average pooling {reads}, and {name!r} is not "
            f"it; leave layer unset for the default ({default!r}), or use method='gradcam', "
            "which takes any layer."
        )
    if lin_name is None:
        return MethodError(
            f"CAM needs global average pooling of {name!r} (or of a pointwise function of it) "
            f"feeding a final nn.Linear, or being the output itself; {type(net).__name__} has "
            "neither. Use method='gradcam', which works on any architecture."
        )
    return MethodError(
        f"CAM needs global average pooling of {name!r} (or of a pointwise function of it) "
        f"feeding the last linear layer {lin_name!r} directly, and this model has another "
        "head. Use method='gradcam', which works on any architecture."
    )


@register(
    "cam",
    "Classifier weights applied to the last feature maps of a GAP + linear head (Zhou et al. 2016)",
    family="cam",
    targets="output",
    targets_reason="CAM splits a class logit over the feature map with the weights of the linear "
    "layer after global average pooling (gradcam gives the same map on such heads)",
)
def cam(
    model,
    x: torch.Tensor,
    target=None,
    *,
    layer=None,
    layout=None,
    grid=None,
    prefix=None,
    reshape=None,
) -> MethodOutput:
    """CAM maps for networks ending in global average pooling and one linear layer.

    The head is found automatically: the last ``nn.Linear`` to run must receive
    exactly the spatial mean of the map the pooling consumes, which is ``layer``'s
    output or a pointwise function of it (checked numerically). ``extras["pooled"]``
    names the operations followed, e.g. ``"features -> relu"``. When the pooled mean
    is the output itself (SqueezeNet and network-in-network heads: a 1x1 convolution
    makes one map per class, then global average pooling), class ``c``'s map is
    channel ``c``, whose mean is its logit.

    Raises:
        MethodError: the model has another kind of head; use Grad-CAM instead.
    """
    net = model.net
    linears = {n: m for n, m in net.named_modules() if isinstance(m, nn.Linear)}
    over = overrides(layout, grid, prefix, reshape)
    name = pick_layer(model, x, layer)
    module = resolve_layer(net, name)[1]
    with (
        observe(net) as seen,
        capture(net, list(linears), record_inputs=True) as rec,
        torch.no_grad(),
        watch_pooling(module) as watch,
    ):
        logits = net(x)
    lay = read_layout(model, x, name, seen, over)
    ran = [s.name for s in seen.sites if s.name in linears] or list(linears)
    lin_name = ran[-1] if ran else None  # the last linear layer to finish: the classifier
    found = _head(watch, lay, logits, linears.get(lin_name), rec.inputs.get(lin_name))
    if found is None:
        raise _refuse(net, x, name, lin_name)
    acts, t_lay, ops, weight = found
    with torch.no_grad():
        targets = resolve_targets(target, x.shape[0], logits)
        if weight is None:  # the pooled map is the output itself: channel c is class c's map
            maps = acts.gather(1, targets[:, :, None, None].expand(-1, -1, *acts.shape[2:]))
        else:
            maps = torch.einsum("ntk,nkhw->nthw", weight[targets].to(acts.dtype), acts)
    extras = layer_extras(name, lay)
    extras["pooled"] = " -> ".join((name, *ops))
    return MethodOutput(upsample(maps, tuple(x.shape[-2:])), targets, extras)
