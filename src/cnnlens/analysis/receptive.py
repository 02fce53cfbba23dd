"""Receptive fields: which input pixels a unit at position (i, j) of a layer can see.

Analytic rule (Araujo et al., "Computing Receptive Fields of Convolutional Neural
Networks", Distill 2019). Along one axis a layer maps output position ``o`` to the input
interval ``[o*j + lo, o*j + hi]`` (inclusive pixel indices of the network input). A
convolution or pooling with kernel ``k``, stride ``s``, padding ``p`` and dilation ``d``
applied to a tensor with field ``(j, lo, hi)`` gives::

    j' = j * s
    lo' = lo - j * p
    hi' = hi + j * (d * (k - 1) - p)

Point-wise operations (normalisation, activations) keep the field; an element-wise sum or
product of branches (residual connections) takes the union ``(j, min lo, max hi)``. The
graph comes from ``torch.fx`` with every module without children treated as a leaf, and
tensor shapes from one probe pass. Padding is read from the observed shapes: when the
declared padding does not explain the output size (TensorFlow "same" padding, as in timm's
``Conv2dSame``), the total padding is split with the smaller half first, as TensorFlow does.
Tracing, kernels and padding come from :mod:`cnnlens.core.geometry`, shared with
incremental occlusion; this module composes the fields.

Anything the rule cannot follow (an unknown leaf module that mixes positions, an
interpolation, a global pool before the layer) raises :class:`UnsupportedGraph`;
:func:`gradient_field` then measures the field instead: the bounding box of the input
pixels with non-zero gradient of the unit, summed over a few random inputs.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from ..core.geometry import Kernel, UnsupportedGraph, kernel_of, trace_graph
from ..core.hooks import capture, preserved
from ..core.names import resolve_layer
from ..core.pointwise import POINTWISE_MODULES
from ..core.spatial import layer_view

__all__ = [
    "Field1D",
    "ReceptiveField",
    "UnsupportedGraph",
    "analytic_field",
    "gradient_field",
    "receptive_field",
]

_SPATIAL_FUNCTIONS = {
    F.conv2d,
    F.max_pool2d,
    F.avg_pool2d,
    F.interpolate,
    F.pad,
    F.adaptive_avg_pool2d,
    F.adaptive_max_pool2d,
    torch.roll,
    torch.flip,
    torch.nn.functional.grid_sample,
}
_SPATIAL_METHODS = {"roll", "flip", "permute", "transpose", "view", "reshape", "flatten"}
_IGNORED = {operator.getitem, getattr, operator.eq, torch._assert}


@dataclass(frozen=True)
class Field1D:
    """Output position ``o`` sees input pixels ``o * jump + lo`` to ``o * jump + hi``."""

    jump: int
    lo: int
    hi: int

    @property
    def size(self) -> int:
        return self.hi - self.lo + 1

    def compose(self, k: int, s: int, p: int, d: int) -> Field1D:
        return Field1D(
            self.jump * s, self.lo - self.jump * p, self.hi + self.jump * (d * (k - 1) - p)
        )

    def union(self, other: Field1D) -> Field1D:
        if self.jump != other.jump:
            raise UnsupportedGraph("branches with different strides meet")
        return Field1D(self.jump, min(self.lo, other.lo), max(self.hi, other.hi))


@dataclass(frozen=True)
class ReceptiveField:
    """The field of every position of one layer, in network-input pixels.

    Attributes:
        y, x: the field along rows and columns.
        input_size: ``(H, W)`` of the network input it was computed for.
        method: ``"analytic"`` or ``"gradient"``.
    """

    y: Field1D
    x: Field1D
    input_size: tuple[int, int]
    method: str = "analytic"

    def box(self, i: int, j: int, clip: bool = True) -> tuple[int, int, int, int]:
        """``(top, left, bottom, right)`` (end exclusive) of the field of position ``(i, j)``."""
        top, bottom = i * self.y.jump + self.y.lo, i * self.y.jump + self.y.hi + 1
        left, right = j * self.x.jump + self.x.lo, j * self.x.jump + self.x.hi + 1
        if clip:
            h, w = self.input_size
            top, left = max(top, 0), max(left, 0)
            bottom, right = min(bottom, h), min(right, w)
        return top, left, bottom, right


def _spatial(node: fx.Node) -> tuple[int, int] | None:
    meta = node.meta.get("tensor_meta")
    shape = getattr(meta, "shape", None)
    return tuple(shape[-2:]) if shape is not None and len(shape) == 4 else None


def _window_fields(node: fx.Node, kern: Kernel, fin: tuple[Field1D, Field1D]):
    """The fields after a convolution or pooling, its padding solved from the shapes."""
    pad = kern.left_padding(_spatial(node.args[0]), _spatial(node))
    return tuple(fin[a].compose(kern.k[a], kern.s[a], pad[a], kern.d[a]) for a in range(2))


def _node_field(node: fx.Node, net: nn.Module, fields: dict, input_size) -> tuple | None:
    tensor_args = [a for a in node.all_input_nodes if a in fields]
    if not tensor_args:
        return None
    if _spatial(node) is None:
        return "global"
    if any(fields[a] == "global" for a in tensor_args):
        return "global"  # e.g. squeeze-excitation: every position sees the whole image
    if node.op == "call_module":
        m = net.get_submodule(node.target)
        kern = kernel_of(m)
        if kern is not None:
            return _window_fields(node, kern, fields[node.args[0]])
        if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            if _spatial(node) == _spatial(node.args[0]):
                return fields[node.args[0]]
            if _spatial(node) == (1, 1):
                return "global"
            raise UnsupportedGraph(f"adaptive pooling at {node.target}")
        if not isinstance(m, POINTWISE_MODULES):
            raise UnsupportedGraph(f"{node.target} ({type(m).__name__}) is not a known layer")
    elif node.op == "call_function" and node.target in _SPATIAL_FUNCTIONS:
        raise UnsupportedGraph(f"{node.name} calls {node.target.__name__}")
    elif node.op == "call_method" and node.target in _SPATIAL_METHODS:
        raise UnsupportedGraph(f"{node.name} calls .{node.target}()")
    if any(_spatial(a) != _spatial(node) for a in tensor_args):
        raise UnsupportedGraph(f"{node.name} changes the spatial size")
    fy, fx_ = fields[tensor_args[0]]
    for a in tensor_args[1:]:
        fy, fx_ = fy.union(fields[a][0]), fx_.union(fields[a][1])
    return fy, fx_


def analytic_field(
    net: nn.Module, layer: str | nn.Module, input_size: tuple[int, int] = (224, 224)
) -> ReceptiveField:
    """Compose kernels, strides, paddings and dilations through the graph up to ``layer``.

    Args:
        net: the model (left unchanged).
        layer: dotted name or module; a container's field is that of its last operation.
        input_size: ``(H, W)`` of the network input (fields of "same" padding depend on it).

    Returns:
        The layer's :class:`ReceptiveField`.

    Raises:
        UnsupportedGraph: the graph cannot be traced or holds an operation the rule cannot follow.
    """
    name, _ = resolve_layer(net, layer)
    graph = trace_graph(net, leaves=POINTWISE_MODULES)
    gm = fx.GraphModule(net, graph)
    with preserved(net), torch.no_grad():
        p = next(net.parameters(), None)
        probe = torch.zeros(1, 3, *input_size, device=p.device if p is not None else "cpu")
        ShapeProp(gm).propagate(probe)
    fields: dict = {}
    last = None
    for node in graph.nodes:
        if node.op == "placeholder":
            fields[node] = (Field1D(1, 0, 0), Field1D(1, 0, 0))
        elif node.op in ("call_module", "call_function", "call_method"):
            if node.op == "call_function" and node.target in _IGNORED:
                continue
            f = _node_field(node, net, fields, input_size)
            if f is not None:
                fields[node] = f
        stack = node.meta.get("nn_module_stack", {})
        if node.op == "call_module" and node.target == name or name in stack:
            last = node
    if last is None or last not in fields:
        raise UnsupportedGraph(f"layer {name!r} does not appear in the traced graph")
    f = fields[last]
    if f == "global":
        raise UnsupportedGraph(f"layer {name!r} has no spatial positions")
    return ReceptiveField(f[0], f[1], tuple(input_size), "analytic")


def gradient_field(
    net: nn.Module,
    layer: str | nn.Module,
    position: tuple[int, int],
    input_size: tuple[int, int] = (224, 224),
    trials: int = 3,
    seed: int = 0,
) -> tuple[int, int, int, int]:
    """Measure the field of one position: bounding box of non-zero input gradients.

    The unit is the sum over channels at ``position``, so a dead channel cannot hide it;
    gradients of ``trials`` random inputs are added. Regions where every path is switched off
    (ReLU) for all inputs are missed, so this is a lower bound of the analytic field.

    Returns:
        ``(top, left, bottom, right)`` in input pixels, end exclusive.
    """
    gen = torch.Generator().manual_seed(seed)
    p = next(net.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    view = layer_view(net, layer, (3, *input_size))  # channels-last and tokens too
    total = torch.zeros(input_size)
    with preserved(net), torch.enable_grad():
        for _ in range(trials):
            x = torch.randn(1, 3, *input_size, generator=gen).to(device).requires_grad_(True)
            with capture(net, [layer]) as rec:
                net(x)
            act = view(next(iter(rec.activations.values())))
            (g,) = torch.autograd.grad(act[0, :, position[0], position[1]].sum(), x)
            total += g.detach().abs().sum(dim=(0, 1)).cpu()
    rows = torch.nonzero(total.sum(1) > 0).flatten()
    cols = torch.nonzero(total.sum(0) > 0).flatten()
    if rows.numel() == 0:
        raise UnsupportedGraph("the unit has zero gradient with respect to every input pixel")
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def receptive_field(
    net: nn.Module, layer: str | nn.Module, input_size: tuple[int, int] = (224, 224)
) -> ReceptiveField:
    """The analytic field when the rule applies, else one measured by :func:`gradient_field`.

    The measured field is taken at the centre position and assumed to shift with the layer's
    stride (input size divided by the layer's size).
    """
    try:
        return analytic_field(net, layer, input_size)
    except UnsupportedGraph:
        pass
    view = layer_view(net, layer, (3, *input_size))
    with preserved(net), torch.no_grad(), capture(net, [layer]) as rec:
        p = next(net.parameters(), None)
        net(torch.zeros(1, 3, *input_size, device=p.device if p is not None else "cpu"))
    h, w = view(next(iter(rec.activations.values()))).shape[-2:]
    ci, cj = h // 2, w // 2
    top, left, bottom, right = gradient_field(net, layer, (ci, cj), input_size)
    jy, jx = max(1, math.floor(input_size[0] / h)), max(1, math.floor(input_size[1] / w))
    fy = Field1D(jy, top - ci * jy, bottom - 1 - ci * jy)
    fx_ = Field1D(jx, left - cj * jx, right - 1 - cj * jx)
    return ReceptiveField(fy, fx_, tuple(input_size), "gradient")
