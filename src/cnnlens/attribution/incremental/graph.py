"""The model as a graph whose nodes know their spatial geometry.

Incremental occlusion (Krypton, Nakandala et al., SIGMOD 2019) needs, for every layer,
how an output pixel depends on input pixels. We get the layer graph from ``torch.fx``
(every module without children is a leaf; tracer, kernels and the padding solver are
:mod:`cnnlens.core.geometry`, shared with :mod:`cnnlens.analysis.receptive`) and sort
each node into one of three kinds:

* ``"window"``: a convolution (any groups, stride, dilation), max or average pooling. Its
  per-axis geometry ``(k, s, d, p_left)`` is read from the module and from the input and
  output shapes of one real forward pass, so TF-"same" padding computed inside
  ``forward`` (timm's ``Conv2dSame``) is found too: the total padding
  ``(n_out - 1)*s + d*(k - 1) + 1 - n_in`` is split with the module's own padding on the
  left, else with the smaller half on the left. The geometry is then *verified*: the
  op is re-run on the explicitly padded cached input and must reproduce the cached
  output, otherwise the node is demoted to ``"other"``. A convolution subclass with a
  custom ``forward`` (weight standardisation, say) is therefore never mis-handled.
* ``"pointwise"``: element-wise ops (eval batch norm, activations, identity, dropout in
  eval mode, ``+ - * /``, channel concatenation). A changed band passes through.
* ``"other"``: everything else (global pooling, flatten, linear, unknown modules). The
  engine computes these on whole maps.

The graph runs on a private copy of the network with every ``inplace`` flag off and
in-place tensor methods replaced by their out-of-place twins, so cached activations are
never overwritten; the caller's model is not touched. In that copy each eval-mode batch
norm that alone consumes a convolution's output is folded into the convolution's weight
and bias (exact up to float round-off), which saves one pass over every such map, and a
ReLU / ReLU6 / hardtanh that alone consumes a convolution's output is fused into it
(:mod:`.fuse`), which saves another.
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from ...core.geometry import UnsupportedGraph, kernel_of, trace_graph
from ...core.pointwise import POINTWISE_MODULES
from .fuse import ConvAct, fuse_conv_clamps

POINTWISE_FUNCTIONS = {
    operator.add,
    operator.sub,
    operator.mul,
    operator.truediv,
    operator.neg,
    torch.add,
    torch.sub,
    torch.mul,
    torch.div,
    torch.relu,
    torch.sigmoid,
    torch.tanh,
    torch.clamp,
    torch.cat,
    F.relu,
    F.relu6,
    F.hardtanh,
    F.silu,
    F.gelu,
    F.hardswish,
    F.hardsigmoid,
    F.leaky_relu,
    F.elu,
    F.sigmoid,
    F.batch_norm,
    F.dropout,
}
POINTWISE_METHODS = {"relu", "sigmoid", "tanh", "add", "sub", "mul", "div", "clamp", "contiguous"}
_INPLACE_FUNCTIONS = {operator.iadd: operator.add, operator.imul: operator.mul}


@dataclass(frozen=True)
class Window:
    """Geometry of a windowed op along (rows, cols), with how to run it on a padded crop."""

    op: str  # "conv", "max", "avg"
    k: tuple[int, int]
    s: tuple[int, int]
    d: tuple[int, int]
    p: tuple[int, int]  # left / top padding
    pad_value: float
    module: nn.Module

    def __call__(self, crop: torch.Tensor) -> torch.Tensor:
        m = self.module
        if isinstance(m, ConvAct):
            return m.run(crop, self.s, (0, 0), self.d)
        if self.op == "conv":
            return F.conv2d(crop, m.weight, m.bias, self.s, 0, self.d, m.groups)
        if self.op == "max":
            return F.max_pool2d(crop, self.k, self.s, 0, self.d)
        return F.avg_pool2d(crop, self.k, self.s, 0, divisor_override=m.divisor_override)

    def macs(self, out: torch.Size) -> int:
        """Multiply-adds of one output ``(P, C, h, w)``."""
        if self.op != "conv":
            return 0
        m = self.module
        return out.numel() * (m.in_channels // m.groups) * self.k[0] * self.k[1]


def trace(net: nn.Module) -> tuple[fx.Graph, dict[str, nn.Module], nn.Module]:
    """A private eval copy of ``net`` (in-place off), its fx graph and its modules."""
    try:
        copy_net = copy.deepcopy(net).eval()
    except Exception as e:
        raise UnsupportedGraph(f"the model cannot be copied ({e})") from e
    for m in copy_net.modules():
        if isinstance(getattr(m, "inplace", None), bool):
            m.inplace = False
    graph = trace_graph(copy_net)
    for node in graph.nodes:
        if "inplace" in node.kwargs:
            node.kwargs = {**node.kwargs, "inplace": False}
        if node.op == "call_function" and node.target in _INPLACE_FUNCTIONS:
            node.target = _INPLACE_FUNCTIONS[node.target]
        if (
            node.op == "call_method"
            and node.target.endswith("_")
            and not node.target.startswith("_")
        ):
            if hasattr(torch.Tensor, node.target[:-1]):
                node.target = node.target[:-1]
    modules = dict(copy_net.named_modules())
    _fold_batch_norms(graph, modules, copy_net)
    fuse_conv_clamps(graph, modules, copy_net)
    return graph, modules, copy_net


def _bn_params(node: fx.Node, modules, net) -> tuple | None:
    """``(mean, var, weight, bias, eps)`` of an eval batch norm node, else None."""
    if node.op == "call_module":
        m = modules[node.target]
        if type(m) is not nn.BatchNorm2d or m.training or m.running_mean is None:
            return None
        return m.running_mean, m.running_var, m.weight, m.bias, m.eps
    if (
        node.op != "call_function"
        or node.target is not F.batch_norm
        or not is_pointwise(node, modules)
    ):
        return None
    names = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum")
    args = dict(zip(names, node.args)) | dict(node.kwargs)
    vals = []
    for key in ("running_mean", "running_var", "weight", "bias"):
        a = args.get(key)
        if a is not None and (not isinstance(a, fx.Node) or a.op != "get_attr"):
            return None
        vals.append(None if a is None else _attr(net, a.target))
    return (*vals, args.get("eps", 1e-5))


def _attr(net: nn.Module, target: str):
    for part in target.split("."):
        net = getattr(net, part)
    return net


def _fold_batch_norms(graph: fx.Graph, modules: dict, net: nn.Module) -> None:
    """Fold eval batch norms into the convolution that feeds only them (exact algebra):
    ``w' = w * g / sqrt(v + eps)``, ``b' = beta + (b - mu) * g / sqrt(v + eps)``."""
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    for node in list(graph.nodes):
        src = node.args[0] if node.args else None
        if not isinstance(src, fx.Node) or src.op != "call_module" or calls[src.target] != 1:
            continue
        others = [u for u in src.users if u is not node]
        if any(u.op != "call_function" or u.target is not getattr for u in others):
            continue  # the unnormalised output is needed elsewhere (shape queries are fine)
        conv = modules[src.target]
        if not isinstance(conv, nn.Conv2d):
            continue
        bn = _bn_params(node, modules, net)
        if bn is None:
            continue
        mean, var, weight, bias, eps = bn
        with torch.no_grad():
            scale = torch.rsqrt(var + eps)
            if weight is not None:
                scale = scale * weight
            b = conv.bias if conv.bias is not None else torch.zeros_like(mean)
            new_bias = (b - mean) * scale + (bias if bias is not None else 0)
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
            conv.bias = nn.Parameter(new_bias.to(conv.weight.dtype), requires_grad=False)
        node.replace_all_uses_with(src)
        graph.erase_node(node)


def is_pointwise(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Element-wise in space (the output pixel depends only on the same input pixel)."""
    if node.op == "call_module":
        m = modules[node.target]
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training:
            return False
        return isinstance(m, POINTWISE_MODULES)
    if node.op == "call_function":
        if node.target is torch.cat:
            dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
            return dim in (1, -3)
        if node.target is F.batch_norm:
            return not node.kwargs.get("training", node.args[5] if len(node.args) > 5 else False)
        if node.target is F.dropout:
            return not node.kwargs.get("training", node.args[2] if len(node.args) > 2 else True)
        return node.target in POINTWISE_FUNCTIONS
    if node.op == "call_method":
        return node.target in POINTWISE_METHODS
    return False


_PAD_VALUES = {"conv": 0.0, "max": float("-inf"), "avg": 0.0}


def _runnable(m: nn.Module, op: str, padding: tuple[int, int] | None) -> bool:
    """Whether :class:`Window` can run ``m`` on an explicitly zero/-inf padded crop."""
    if padding is None:  # "same"/"valid" strings: left to the module
        return False
    if op == "conv":
        return m.padding_mode == "zeros"
    if op == "max":
        return not m.return_indices
    return m.count_include_pad or padding == (0, 0)


def window_of(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Window | None:
    """The verified geometry of module ``m`` seen mapping ``x`` to ``y``, or None.

    Args:
        m: a module of the traced copy.
        x: its cached input ``(1, C, H, W)``.
        y: its cached output ``(1, C', h, w)``.

    Returns:
        The :class:`Window` whose padded re-run reproduces ``y``, else None.
    """
    if x.dim() != 4 or y.dim() != 4:
        return None
    kern = kernel_of(m)
    if kern is None or not _runnable(m, kern.op, kern.padding):
        return None
    pv = _PAD_VALUES[kern.op]
    for (pt, pb), (pl, pr) in kern.paddings(x.shape[2:], y.shape[2:]):
        if min(pt, pb, pl, pr) < 0 and kern.op != "conv":
            continue
        w = Window(kern.op, kern.k, kern.s, kern.d, (pt, pl), pv, m)
        padded = F.pad(x, (pl, pr, pt, pb), value=pv)
        try:
            out = w(padded)
        except RuntimeError:
            continue
        if out.shape == y.shape and torch.allclose(out, y, rtol=1e-4, atol=1e-5):
            return w
    return None
