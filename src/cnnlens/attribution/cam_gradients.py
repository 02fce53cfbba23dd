"""Gradient CAMs beyond Grad-CAM: XGrad-CAM, HiResCAM and guided Grad-CAM.

All three explain a class score s_c at one layer (default: the last conv block)
from its feature maps A_k and their gradients g_k(u) = d s_c / d A_k(u), through
the same engine as Grad-CAM (:func:`.cam.weighted_cam`), so they read NCHW,
channels-last and token layers alike (``layout``/``grid``/``prefix``/``reshape``).

**XGrad-CAM** (Fu et al., "Axiom-based Grad-CAM: Towards Accurate Visualization
and Explanation of CNNs", BMVC 2020) weights each channel by its gradient
averaged with the channel's own activations as weights, which the paper derives
from two axioms (sensitivity and conservation):

    w_k = sum_u g_k(u) A_k(u) / (sum_u A_k(u) + eps),   map = ReLU(sum_k w_k A_k).

``eps`` = ``XGRADCAM_EPS`` = 1e-7, as pytorch-grad-cam adds it; a channel whose
activations sum to (almost) zero gets a large weight, as in both
implementations.

**HiResCAM** (Draelos & Carin, "Use HiResCAM instead of Grad-CAM for faithful
explanations of convolutional neural networks", 2020) does not average the
gradient over space: every location keeps its own gradient,

    map(u) = ReLU(sum_k g_k(u) A_k(u)).

It is to Grad-CAM what an elementwise product is to a mean: when the layer
feeds global average pooling and a linear head directly, both give CAM; after
other heads HiResCAM shows exactly which locations raised the score.

**Guided Grad-CAM** (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep
Networks via Gradient-based Localization", ICCV 2017, section 3.1) multiplies
guided backpropagation (:mod:`.guided`) with the Grad-CAM map upsampled to the
input size, pixel by pixel:

    map(u) = Grad-CAM_c(u) * reduce_colour(GB_c(u)).

Since Grad-CAM is one non-negative number per pixel, reducing the colour
channels of the product (``reduce``: ``"absmax"``, ``"sum"`` or ``"l2"``) equals
the Grad-CAM map times the reduced guided backprop map. pytorch-grad-cam has no
class for it: its example multiplies the min-max scaled Grad-CAM by the
output of ``GuidedBackpropReLUModel``. We keep Grad-CAM unscaled (a positive
factor, and an offset when the map's minimum is not zero, is all that differs),
and our guided backprop also handles clipped and smooth rectifiers and
functional ReLUs, where theirs replaces ``nn.ReLU`` modules only. It is
registered in the ``"cam"`` family: it takes a layer like every CAM, and its
coarse localisation comes from that layer. It costs two forward and two
backward passes per target (Grad-CAM needs the unmodified gradient).
"""

from __future__ import annotations

import torch

from ..core.registry import register
from ..core.tensors import MethodOutput
from .cam import gradcam, weighted_cam
from .gradient import check_reduce
from .guided import guided_backprop

XGRADCAM_EPS = 1e-7


def xgradcam_weights(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """XGrad-CAM's rule: ``sum_u g A / (sum_u A + eps)`` per channel, ``(N, K, 1, 1)``."""
    total = acts.sum(dim=(2, 3), keepdim=True)
    return (grads * acts).sum(dim=(2, 3), keepdim=True) / (total + XGRADCAM_EPS)


def hirescam_weights(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """HiResCAM's rule: the gradient itself at every location, ``(N, K, h, w)``."""
    return grads


@register(
    "xgradcam",
    "Channels weighted by their activation-weighted mean gradient (Fu et al. 2020)",
    family="cam",
)
def xgradcam(
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
    """XGrad-CAM maps at ``layer`` (default: the last conv block).

    Args:
        layer: dotted name or module to explain at.
        score: differentiate the ``"logit"`` (default), ``"prob"`` or ``"logprob"``.
        layout, grid, prefix, reshape: override the layer's layout (see
            :func:`cnnlens.core.layouts.layout_of`).

    Returns:
        ``maps (N, T, H, W)`` (unsigned), ``targets (N, T)``.
    """
    over = {"layout": layout, "grid": grid, "prefix": prefix, "reshape": reshape}
    return weighted_cam(model, x, target, layer, xgradcam_weights, score=score, **over)


@register(
    "hirescam",
    "Activations times their gradient location by location, summed over channels "
    "(Draelos & Carin 2020)",
    family="cam",
)
def hirescam(
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
    """HiResCAM maps at ``layer`` (default: the last conv block).

    Args:
        layer: dotted name or module to explain at.
        score: differentiate the ``"logit"`` (default), ``"prob"`` or ``"logprob"``.
        layout, grid, prefix, reshape: override the layer's layout.

    Returns:
        ``maps (N, T, H, W)`` (unsigned), ``targets (N, T)``.
    """
    over = {"layout": layout, "grid": grid, "prefix": prefix, "reshape": reshape}
    return weighted_cam(model, x, target, layer, hirescam_weights, score=score, **over)


@register(
    "guided_gradcam",
    "Guided backprop times the upsampled Grad-CAM map (Selvaraju et al. 2017)",
    family="cam",
)
def guided_gradcam(
    model,
    x: torch.Tensor,
    target=None,
    *,
    layer=None,
    reduce: str = "absmax",
    layout=None,
    grid=None,
    prefix=None,
    reshape=None,
) -> MethodOutput:
    """Guided Grad-CAM maps: Grad-CAM at ``layer`` times guided backprop, per pixel.

    Args:
        layer: the Grad-CAM layer (default: the last conv block).
        reduce: colour reduction of guided backprop, ``"absmax"`` (default), ``"sum"``
            (signed) or ``"l2"``.
        layout, grid, prefix, reshape: override the layer's layout.

    Returns:
        ``maps (N, T, H, W)``, ``targets (N, T)``; extras name the layer and the
        rectifying activations guided backprop modified.
    """
    check_reduce(reduce)
    over = {"layout": layout, "grid": grid, "prefix": prefix, "reshape": reshape}
    cam = gradcam(model, x, target, layer=layer, **over)
    # The targets Grad-CAM resolved (top-k included) are the ones guided backprop explains.
    guided = guided_backprop(model, x, cam.targets, reduce=reduce)
    extras = {**guided.extras, **cam.extras}
    return MethodOutput((cam.maps * guided.maps).detach(), cam.targets, extras)
