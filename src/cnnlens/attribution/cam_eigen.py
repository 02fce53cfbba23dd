"""Eigen-CAM: the first principal component of a layer's feature maps.

**Eigen-CAM** (Muhammad & Yeasin, "Eigen-CAM: Class Activation Map using
Principal Components", IJCNN 2020) needs neither gradients nor class scores.
The feature maps of one image, read as a matrix with one row per location and
one column per channel, ``A (hw, K)``, are centred per channel and decomposed,
``A - mean = U S V^T``; the map is the projection of every location on the first
right singular vector,

    map(u) = ReLU((A(u) - mean) . v_1),

upsampled bilinearly to the input size. It is **class-agnostic**: every target
of an image gets the same map (the output still has one map per target,
``(N, T, H, W)``, so it slots in wherever a class map is expected).

Centring follows pytorch-grad-cam (its comment: without it the projection is
mostly negative); the paper projects the raw activations, which
``center=False`` gives. A singular vector is defined only up to sign, and
LAPACK's choice in pytorch-grad-cam is arbitrary (it can flip between
libraries or for a tiny change of the input), which after the ReLU selects
an entirely different region. We fix the sign: v_1 is oriented so that the
projection correlates positively with the total activation ``sum_k A_k(u)``
(the component points where the layer is more active, not less). The
cross-check with pytorch-grad-cam therefore compares up to that sign.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..core.hooks import capture
from ..core.layouts import Layout
from ..core.registry import register
from ..core.sites import observe
from ..core.targets import resolve_targets
from ..core.tensors import MethodOutput, upsample
from .cam import layer_extras, overrides, pick_layer, read_layout, spatial


def principal_projection(acts: torch.Tensor, center: bool = True) -> torch.Tensor:
    """Projection of each location on the first principal component, sign fixed.

    Args:
        acts: ``(N, K, h, w)`` feature maps.
        center: subtract each channel's spatial mean before the decomposition.

    Returns:
        ``(N, h, w)`` projections (not rectified) in ``acts``' dtype; positively
        correlated with ``acts.sum(1)`` (ties: unchanged).
    """
    n, k, h, w = acts.shape
    rows = acts.flatten(2).transpose(1, 2).double()  # (N, hw, K)
    rows = torch.nan_to_num(rows)
    if center:
        rows = rows - rows.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(rows, full_matrices=False)
    proj = rows @ vh[:, 0, :, None]  # (N, hw, 1)
    total = acts.double().flatten(2).sum(1)  # (N, hw)
    total = total - total.mean(dim=1, keepdim=True)
    agree = (proj[..., 0] * total).sum(1)
    sign = torch.where(agree < 0, -1.0, 1.0).to(proj.dtype)
    return (proj[..., 0] * sign[:, None]).view(n, h, w).to(acts.dtype)


class LayerPass(NamedTuple):
    """What :func:`layer_pass` read: the layer's name, how its output reads, its raw
    output, that output as ``(N, K, h, w)``, the model's output, and how many times the
    layer ran in the pass."""

    name: str
    layout: Layout
    raw: torch.Tensor
    acts: torch.Tensor
    logits: torch.Tensor
    calls: int


def layer_pass(model, net: torch.nn.Module, x: torch.Tensor, layer, over: dict) -> LayerPass:
    """One forward pass without gradients that reads the explained layer.

    Args:
        model: the LoadedModel (its default layer and layout evidence).
        net: the module to run: ``model.net`` or a prepared copy of it.
        layer: the layer asked for (None: the default).
        over: the layout overrides (:func:`.cam.overrides`).

    Raises:
        MethodError: the output cannot be read as a spatial map.
    """
    name = pick_layer(model, x, layer)
    # gradients=True hands the layers downstream a copy (no in-place overwrite); no graph.
    with torch.no_grad(), observe(net) as seen, capture(net, [name], gradients=True) as rec:
        logits = net(x)
    lay = read_layout(model, x, name, seen, over)
    raw = rec.activations.get(name)
    acts = spatial(lay, name, raw).detach()
    return LayerPass(name, lay, raw.detach(), acts, logits, rec.calls.get(name, 0))


@register(
    "eigencam",
    "First principal component of the layer's feature maps; class-agnostic "
    "(Muhammad & Yeasin 2020)",
    family="cam",
)
def eigencam(
    model,
    x: torch.Tensor,
    target=None,
    *,
    layer=None,
    center: bool = True,
    layout=None,
    grid=None,
    prefix=None,
    reshape=None,
) -> MethodOutput:
    """Eigen-CAM maps at ``layer`` (default: the last conv block), one forward pass.

    The map does not depend on the target: every target of an image gets the same map.

    Args:
        layer: dotted name or module whose output is decomposed.
        center: centre each channel over space first (pytorch-grad-cam's choice, default);
            False projects the raw activations, as the paper writes it.
        layout, grid, prefix, reshape: override the layer's layout (see
            :func:`cnnlens.core.layouts.layout_of`).

    Returns:
        ``maps (N, T, H, W)``, the same map repeated over ``T``; ``targets (N, T)``.
    """
    if not isinstance(center, bool):
        raise ValueError(f"center must be True or False, got {center!r}")
    over = overrides(layout, grid, prefix, reshape)
    seen = layer_pass(model, model.net, x, layer, over)
    targets = resolve_targets(target, x.shape[0], seen.logits)
    proj = principal_projection(seen.acts, center).clamp_min(0)
    maps = upsample(proj.unsqueeze(1), tuple(x.shape[-2:]))
    maps = maps.expand(-1, targets.shape[1], -1, -1).contiguous()
    return MethodOutput(maps, targets, layer_extras(seen.name, seen.layout))
