"""Convolution and a clamping activation (ReLU, ReLU6, hardtanh) as one op.

A convolution followed by ReLU6 writes its output map and then reads and writes it again.
oneDNN, PyTorch's CPU convolution library, can clamp each value as it is written (a
"post-op"); PyTorch exposes that as ``torch.ops.mkldnn._convolution_pointwise``, the op
its own compiler emits for CPU code. The engine rewrites its private copy of the graph so
that a plain ``nn.Conv2d`` whose only consumer is such an activation becomes one
:class:`ConvAct` node. The clamp is the same arithmetic either way; a one-time check on
a small convolution guards against a PyTorch build whose op is missing or disagrees, and
anything but float32 CPU tensors without autograd (or a build without the op) runs the two
ops one after the other.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import fx, nn

_CLAMP_FUNCTIONS = {F.relu: "relu", torch.relu: "relu", F.relu6: "relu6", F.hardtanh: "hardtanh"}


class ConvAct(nn.Conv2d):
    """An ``nn.Conv2d`` (sharing the original's parameters) with a clamp on its output."""

    act: str  # "relu" or "hardtanh"
    bounds: tuple[float, float]

    @classmethod
    def wrap(cls, conv: nn.Conv2d, act: str, bounds: tuple[float, float]) -> ConvAct:
        fused = cls.__new__(cls)
        fused.__dict__.update(conv.__dict__)  # same parameters, buffers and hooks
        fused.act, fused.bounds = act, bounds
        return fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x, self.stride, self.padding, self.dilation)

    def run(self, x: torch.Tensor, stride, padding, dilation) -> torch.Tensor:
        fast = x.device.type == "cpu" and x.dtype == torch.float32
        if fast and not torch.is_grad_enabled() and _fused_ok():  # the op has no gradient
            scalars = [] if self.act == "relu" else list(self.bounds)
            return torch.ops.mkldnn._convolution_pointwise(
                x, self.weight, self.bias, list(padding), list(stride), list(dilation),
                self.groups, self.act, scalars, "",
            )  # fmt: skip
        y = F.conv2d(x, self.weight, self.bias, stride, padding, dilation, self.groups)
        return F.relu(y) if self.act == "relu" else F.hardtanh(y, *self.bounds)


@functools.cache
def _fused_ok() -> bool:
    """Whether the fused op exists here and matches conv + clamp on a small case."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(2, 4, 9, 9, generator=gen)
        w = torch.randn(6, 2, 3, 3, generator=gen)
        b = torch.randn(6, generator=gen)
        with torch.inference_mode():
            out = torch.ops.mkldnn._convolution_pointwise(
                x, w, b, [1, 1], [2, 2], [1, 1], 2, "hardtanh", [0.0, 1.5], ""
            )
            ref = F.hardtanh(F.conv2d(x, w, b, 2, 1, 1, 2), 0.0, 1.5)
        return out.shape == ref.shape and torch.allclose(out, ref, atol=1e-5)
    except (RuntimeError, AttributeError, TypeError):
        return False


def _clamp_of(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[str, tuple] | None:
    """``("relu", ...)`` or ``("hardtanh", (lo, hi))`` for a clamping activation node."""
    if node.op == "call_module":
        m = modules[node.target]
        if type(m) is nn.ReLU:
            return "relu", (0.0, 0.0)
        if type(m) in (nn.ReLU6, nn.Hardtanh):
            return "hardtanh", (float(m.min_val), float(m.max_val))
        return None
    if node.op == "call_function" and node.target in _CLAMP_FUNCTIONS:
        kind = _CLAMP_FUNCTIONS[node.target]
        if kind == "relu":
            return ("relu", (0.0, 0.0)) if len(node.args) == 1 else None
        if kind == "relu6":
            return ("hardtanh", (0.0, 6.0)) if len(node.args) == 1 else None
        args = list(node.args[1:3])
        lo = node.kwargs.get("min_val", args[0] if args else -1.0)
        hi = node.kwargs.get("max_val", args[1] if len(args) > 1 else 1.0)
        if isinstance(lo, (int, float)) and isinstance(hi, (int, float)):
            return "hardtanh", (float(lo), float(hi))
    if node.op == "call_method" and node.target == "relu" and len(node.args) == 1:
        return "relu", (0.0, 0.0)
    return None


def fuse_conv_clamps(graph: fx.Graph, modules: dict[str, nn.Module], net: nn.Module) -> int:
    """Rewrite ``conv -> clamp`` pairs into :class:`ConvAct` nodes; returns how many.

    Only plain ``nn.Conv2d`` modules (not subclasses with their own ``forward``) called
    once, whose output nothing else reads but shape queries, are fused. Identity nodes
    between the two (timm's ``BatchNormAct2d`` has a ``drop`` identity) are removed first.
    """
    for node in list(graph.nodes):
        if node.op == "call_module" and type(modules[node.target]) is nn.Identity:
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    fused = 0
    for node in list(graph.nodes):
        if node.op != "call_module" or calls[node.target] != 1 or node.kwargs:
            continue
        conv = modules[node.target]
        if type(conv) is not nn.Conv2d or conv.padding_mode != "zeros":
            continue
        if not isinstance(conv.padding, tuple):
            continue
        # shape queries (timm asserts ``x.ndim == 4``) read the fused output just as well
        users = [u for u in node.users if u.op != "call_function" or u.target is not getattr]
        if len(users) != 1:
            continue
        user = users[0]
        spec = _clamp_of(user, modules)
        if spec is None or user.args[0] is not node:
            continue
        new = ConvAct.wrap(conv, *spec)
        parent, _, name = node.target.rpartition(".")
        setattr(net.get_submodule(parent) if parent else net, name, new)
        modules[node.target] = new
        user.replace_all_uses_with(node)
        graph.erase_node(user)
        fused += 1
    return fused
