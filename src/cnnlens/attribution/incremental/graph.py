"""The model as a graph whose nodes know their spatial geometry.

Incremental occlusion (Krypton, Nakandala et al., SIGMOD 2019) needs, for every layer,
how an output pixel depends on input pixels. We get the layer graph from ``torch.fx``
(every module without children is a leaf, as in :mod:`cnnlens.analysis.receptive`) and
sort each node into one of three kinds:

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


class UnsupportedGraph(RuntimeError):
    """The model cannot be traced or run by the incremental engine."""


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


class _LeafTracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return len(list(m.children())) == 0


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def trace(net: nn.Module) -> tuple[fx.Graph, dict[str, nn.Module], nn.Module]:
    """A private eval copy of ``net`` (in-place off), its fx graph and its modules."""
    try:
        copy_net = copy.deepcopy(net).eval()
    except Exception as e:
        raise UnsupportedGraph(f"the model cannot be copied ({e})") from e
    for m in copy_net.modules():
        if isinstance(getattr(m, "inplace", None), bool):
            m.inplace = False
    try:
        graph = _LeafTracer().trace(copy_net)
    except Exception as e:
        raise UnsupportedGraph(f"torch.fx cannot trace the model ({e})") from e
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


def _split_padding(n_in: int, n_out: int, k: int, s: int, d: int, own: int) -> list[tuple]:
    total = (n_out - 1) * s + d * (k - 1) + 1 - n_in
    return [(own, total - own), (total // 2, total - total // 2)]


def window_of(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Window | None:
    """The verified geometry of module ``m`` seen mapping ``x`` to ``y``, or None."""
    if x.dim() != 4 or y.dim() != 4:
        return None
    if isinstance(m, nn.Conv2d) and m.padding_mode == "zeros" and isinstance(m.padding, tuple):
        op, k, s, d, own, pv = "conv", m.kernel_size, m.stride, m.dilation, m.padding, 0.0
    elif isinstance(m, nn.MaxPool2d) and not m.return_indices:
        op, pv = "max", float("-inf")
        k, s, d, own = (
            _pair(m.kernel_size),
            _pair(m.stride or m.kernel_size),
            _pair(m.dilation),
            _pair(m.padding),
        )
    elif isinstance(m, nn.AvgPool2d) and (m.count_include_pad or _pair(m.padding) == (0, 0)):
        op, pv = "avg", 0.0
        k, s, d, own = (
            _pair(m.kernel_size),
            _pair(m.stride or m.kernel_size),
            (1, 1),
            _pair(m.padding),
        )
    else:
        return None
    k, s, d = _pair(k), _pair(s), _pair(d)
    own = _pair(own)
    rows = _split_padding(x.shape[2], y.shape[2], k[0], s[0], d[0], own[0])
    cols = _split_padding(x.shape[3], y.shape[3], k[1], s[1], d[1], own[1])
    for (pt, pb), (pl, pr) in zip(rows, cols):
        if min(pt, pb, pl, pr) < 0 and op != "conv":
            continue
        w = Window(op, k, s, d, (pt, pl), pv, m)
        padded = F.pad(x, (pl, pr, pt, pb), value=pv)
        try:
            out = w(padded)
        except RuntimeError:
            continue
        if out.shape == y.shape and torch.allclose(out, y, rtol=1e-4, atol=1e-5):
            return w
    return None
