"""CAM variants: Grad-CAM++, LayerCAM and Score-CAM.

All three explain a class score s_c through the feature maps A_k (k = 1..K) of
one layer (default: the last conv block), combine them into a map at feature
resolution, keep its positive part, and upsample it bilinearly (half-pixel
centres) to the input size. Maps are unsigned.

**Grad-CAM++** (Chattopadhyay et al., "Grad-CAM++: Generalized Gradient-Based
Visual Explanations for Deep Convolutional Networks", WACV 2018) weights each
channel by a weighted sum of the positive gradients instead of their plain mean:

    w_k = sum_u alpha_k(u) ReLU(g_k(u)),          g_k(u) = d s_c / d A_k(u),
    map = ReLU(sum_k w_k A_k).

The paper explains Y_c = exp(s_c); its higher derivatives are then powers of
the first one, which gives the closed form (paper, eq. 19)

    alpha_k(u) = g_k(u)^2 / (2 g_k(u)^2 + S_k g_k(u)^3),   S_k = sum_v A_k(v).

The paper's ReLU(dY_c/dA) = exp(s_c) ReLU(g) differs from ReLU(g) by a
positive factor per map, which any display normalisation removes; we leave
it out, as pytorch-grad-cam does. We also follow pytorch-grad-cam in adding
``GRADCAMPP_EPS`` = 1e-6 to the denominator, and set alpha to 0 where the
gradient is 0 or the denominator is exactly 0 (the authors' code does the
latter; pytorch-grad-cam would divide by zero there). The epsilon is not
scale-free: it is comparable with 2 g^2 when gradients are about 1e-3, as at
the last block of an ImageNet CNN, so it visibly changes such maps; we keep
it for agreement with the most widely used implementation.

**LayerCAM** (Jiang et al., "LayerCAM: Exploring Hierarchical Class
Activation Maps for Localization", IEEE TIP 2021) weights every location
separately by its positive gradient:

    map(u) = ReLU(sum_k ReLU(g_k(u)) A_k(u)).

Unlike Grad-CAM it stays sharp at shallow layers, where spatially averaged
gradients wash out.

**Score-CAM** (Wang et al., "Score-CAM: Score-Weighted Visual Explanations for
Convolutional Neural Networks", CVPR Workshops 2020) uses no gradients. Each
channel, upsampled to the input size and min-max scaled to [0, 1], masks the
image; the target's logit on the masked image scores the channel, and the
weights are a softmax of those scores over channels (the paper's Algorithm 1;
its baseline term f_c(X_b) is the same for every channel and cancels):

    M_k = (up(A_k) - min up(A_k)) / (max up(A_k) - min up(A_k))    (0 if constant),
    w_k = exp(s_c(x * M_k)) / sum_j exp(s_c(x * M_j)),
    map = ReLU(sum_k w_k A_k).

pytorch-grad-cam computes the same weights with one difference: it upsamples
the masks with corner-aligned bilinear interpolation
(``nn.UpsamplingBilinear2d``), we with half-pixel centres, the convention every
cnnlens map is displayed with. (The authors' released code instead weights
channels by the target's softmax probability without a softmax over channels;
that is a different method.) Score-CAM costs K forward passes per image,
batched ``batch_size`` at a time on a channels-last copy of the model; every
target of an image is scored from the same passes, so top-5 costs no more
than top-1.
"""

from __future__ import annotations

import torch

from ..core import progress
from ..core.batching import FastNet, batch_size_for, chunks, score_batches
from ..core.hooks import capture
from ..core.maps import minmax
from ..core.registry import register
from ..core.sites import observe
from ..core.targets import resolve_targets
from ..core.tensors import MethodOutput, check_batch_size, upsample
from .cam import layer_extras, overrides, pick_layer, read_layout, spatial, weighted_cam

GRADCAMPP_EPS = 1e-6


def gradcampp_weights(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++'s rule: ``sum_u alpha(u) ReLU(g(u))`` per channel, ``(N, K, 1, 1)``."""
    g2 = grads * grads
    denom = 2 * g2 + acts.sum(dim=(2, 3), keepdim=True) * g2 * grads + GRADCAMPP_EPS
    ok = (grads != 0) & (denom != 0)
    alpha = torch.where(ok, g2 / torch.where(ok, denom, torch.ones_like(denom)), 0.0)
    return (alpha * grads.clamp_min(0)).sum(dim=(2, 3), keepdim=True)


def layercam_weights(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """LayerCAM's rule: the positive gradient at every location, ``(N, K, h, w)``."""
    return grads.clamp_min(0)


@register(
    "gradcampp",
    "Channels weighted by alpha-weighted positive gradients (Chattopadhyay et al. 2018)",
    family="cam",
)
def gradcampp(
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
    """Grad-CAM++ maps at ``layer`` (default: the last conv block), from the logits."""
    over = {"layout": layout, "grid": grid, "prefix": prefix, "reshape": reshape}
    return weighted_cam(model, x, target, layer, gradcampp_weights, **over)


@register(
    "layercam",
    "Activations weighted location by location by their positive gradient (Jiang et al. 2021)",
    family="cam",
)
def layercam(
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
    """LayerCAM maps at ``layer`` (default: the last conv block), from the logits."""
    over = {"layout": layout, "grid": grid, "prefix": prefix, "reshape": reshape}
    return weighted_cam(model, x, target, layer, layercam_weights, **over)


def channel_masks(acts: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Score-CAM masks: ``(B, h, w)`` feature maps -> ``(B, 1, H, W)`` scaled to [0, 1]."""
    return minmax(upsample(acts.unsqueeze(0), size)[0]).unsqueeze(1)


def masked_logits(
    net: torch.nn.Module | FastNet,
    x: torch.Tensor,
    acts: torch.Tensor,
    targets: torch.Tensor,
    batch_size: int,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> torch.Tensor:
    """The targets' logits on ``x`` masked by each channel: ``(N, K, T)`` float32.

    Args:
        net: a :class:`FastNet`, or a model whose inputs take ``memory_format``.
        x: ``(N, C, H, W)`` images.
        acts: ``(N, K, h, w)`` feature maps; channel ``k`` masks the image (see
            :func:`channel_masks`).
        targets: ``(N, T)`` classes scored on every masked image.
        batch_size: masked images per forward pass.
        memory_format: the layout ``net`` runs on (ignored for a :class:`FastNet`).

    Run it under ``torch.inference_mode``.
    """
    fast = net if isinstance(net, FastNet) else FastNet(net, memory_format)
    n, k = acts.shape[:2]
    size = tuple(x.shape[-2:])
    per_image = []
    with progress.task("scorecam", n * len(chunks(k, batch_size))) as advance:
        for i in range(n):

            def make(rows: slice, i: int = i) -> torch.Tensor:
                return x[i : i + 1] * channel_masks(acts[i, rows], size)

            wanted = targets[i].expand(k, -1)
            # progress counts forward passes
            per_image.append(
                score_batches(fast, make, wanted, "logit", batch_size, lambda _: advance(1))
            )
    return torch.stack(per_image)


@register(
    "scorecam",
    "Channels weighted by the class score of the image masked by each channel (Wang et al. 2020)",
    family="cam",
)
def scorecam(
    model,
    x: torch.Tensor,
    target=None,
    *,
    layer=None,
    batch_size: int | None = None,
    layout=None,
    grid=None,
    prefix=None,
    reshape=None,
) -> MethodOutput:
    """Score-CAM maps at ``layer`` (default: the last conv block).

    Args:
        layer: the layer whose channels mask the image.
        batch_size: masked images per forward pass (default: memory-aware).
        layout, grid, prefix, reshape: override the layer's layout (see
            :func:`cnnlens.core.layouts.layout_of`).

    Returns:
        ``maps (N, T, H, W)``; costs one forward pass plus ``N * K`` masked ones
        (``K`` channels), whatever the number of targets.
    """
    check_batch_size(batch_size)
    over = overrides(layout, grid, prefix, reshape)
    name = pick_layer(model, x, layer)
    bs = batch_size_for(x, batch_size)
    fast = FastNet.of(model.net, x)
    # gradients=True hands the layers downstream a copy, so an in-place activation after
    # the layer (BN -> ReLU(inplace)) cannot overwrite the captured maps; no graph is built.
    with (
        torch.no_grad(),
        observe(fast.net) as seen,
        capture(fast.net, [name], gradients=True) as rec,
    ):
        logits = fast(x)
    lay = read_layout(model, x, name, seen, over)
    acts = spatial(lay, name, rec.activations.get(name)).detach()
    targets = resolve_targets(target, x.shape[0], logits)
    with torch.inference_mode():
        scores = masked_logits(fast, x, acts, targets, bs)
    # Outside inference mode so that the maps are ordinary tensors.
    weights = torch.softmax(scores.clone(), dim=1).to(acts.dtype)  # (N, K, T)
    maps = torch.einsum("nkt,nkhw->nthw", weights, acts).clamp_min(0)
    return MethodOutput(upsample(maps, tuple(x.shape[-2:])), targets, layer_extras(name, lay))
