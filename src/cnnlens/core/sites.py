"""Tracing a model once: every module's last call, its shapes, and what its type says.

The layout reader (:mod:`cnnlens.core.layouts`) and the default-layer choice
(:mod:`cnnlens.core.layers`) read these records. A trace runs one image through
the model with a hook pair on every named module (removed in ``finally``);
:func:`sites_of` caches the records per model and input shape, weakly.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .hooks import attached, preserved

_CHANNELS_FIRST = (
    nn.Conv2d,
    nn.ConvTranspose2d,
    nn.BatchNorm2d,
    nn.InstanceNorm2d,
    nn.GroupNorm,
    nn.LocalResponseNorm,
)
_POOLING = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
# Pooling over a sequence reads (N, C, L), channels first: its (N, C, 1) output is a pooled
# vector (Hugging Face Swin's pooler), never C tokens of one feature.
_POOLING_1D = (nn.MaxPool1d, nn.AvgPool1d, nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d)
_TAIL = (nn.LayerNorm, nn.Identity, nn.Dropout, nn.Flatten)


@dataclass(frozen=True)
class Site:
    """One module's last call in a traced pass (batch 1): shapes and what its type says.

    ``called``/``done`` are ticks of one clock, so a module's descendants are the
    sites called after it and done before it. ``out_fmt``/``in_fmt`` are the layouts
    its type implies for a 4-D output/input (None: it does not say).
    """

    name: str
    type: str
    called: int
    done: int
    in_shape: tuple[int, ...] | None
    out_shape: tuple[int, ...] | None
    leaf: bool
    out_fmt: str | None
    in_fmt: str | None
    attention: str | None  # the attention module this one is (inside), if any
    pooling: bool
    tail: bool  # a norm, identity, dropout, flatten or permute: never a default layer


@dataclass
class Traced:
    """:func:`trace`'s result: sites in completion order, the output, kept tensors."""

    sites: list[Site]
    result: Any
    outputs: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)


def _formats(m: nn.Module) -> tuple[str | None, str | None]:
    """The layouts ``m``'s type implies for its 4-D output and input."""
    kind = type(m).__name__.lower()
    fmt = getattr(m, "data_format", None)  # Hugging Face ConvNext's LayerNorm
    if fmt in ("channels_last", "channels_first"):
        v = "nhwc" if fmt == "channels_last" else "nchw"
        return v, v
    dims = getattr(m, "dims", None)
    if "permute" in kind and isinstance(dims, list | tuple):
        return {(0, 3, 1, 2): ("nchw", "nhwc"), (0, 2, 3, 1): ("nhwc", "nchw")}.get(
            tuple(dims), (None, None)
        )
    if isinstance(m, _CHANNELS_FIRST + _POOLING) or (isinstance(m, nn.LayerNorm) and "2d" in kind):
        return "nchw", "nchw"
    if isinstance(m, nn.Linear) or (isinstance(m, nn.LayerNorm) and len(m.normalized_shape) == 1):
        return "nhwc", "nhwc"
    return None, None


def _is_attention(m: nn.Module) -> bool:
    return isinstance(m, nn.MultiheadAttention) or "attention" in type(m).__name__.lower()


def _dims(t) -> tuple[int, ...] | None:
    return tuple(t.shape) if isinstance(t, torch.Tensor) else None


@contextmanager
def observe(net: nn.Module, *, keep: bool = False) -> Iterator[Traced]:
    """Record every named module's last call in the forward passes run inside the block.

    The yielded :class:`Traced` gets its ``sites`` when the block ends (hooks removed in
    ``finally``). With ``keep`` the outputs and first inputs themselves are kept too.
    """
    clock = itertools.count()
    named = [(n, m) for n, m in net.named_modules() if n]
    called: dict[str, int] = {}
    rows: dict[str, tuple] = {}
    traced = Traced([], None)

    def pre(name):
        def hook(module, args):
            called[name] = next(clock)

        return hook

    def post(name):
        def hook(module, args, out):
            first = args[0] if args and isinstance(args[0], torch.Tensor) else None
            rows[name] = (called.get(name, -1), next(clock), _dims(first), _dims(out))
            if keep:
                traced.outputs[name], traced.inputs[name] = out, first

        return hook

    hooks = itertools.chain(
        ((m, pre(n), "forward_pre") for n, m in named), ((m, post(n), "forward") for n, m in named)
    )
    with attached(hooks):
        yield traced
    traced.sites = _sites(named, rows)


def _sites(named: list[tuple[str, nn.Module]], rows: dict[str, tuple]) -> list[Site]:
    modules = dict(named)
    attention = {n for n, m in named if _is_attention(m)}
    sites = []
    for name, (c, d, ins, outs) in sorted(rows.items(), key=lambda kv: kv[1][1]):
        m = modules[name]
        parts = name.split(".")
        owner = next(
            (p for p in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if p in attention),
            None,
        )
        tail = "permute" in type(m).__name__.lower() or isinstance(m, _TAIL)
        leaf = next(m.children(), None) is None
        fmts = _formats(m)
        pooling = isinstance(m, _POOLING + _POOLING_1D)
        sites.append(
            Site(name, type(m).__name__, c, d, ins, outs, leaf, *fmts, owner, pooling, tail)
        )
    return sites


def trace(net: nn.Module, x: torch.Tensor, *, keep: bool = False) -> Traced:
    """Run ``net(x)`` once under :func:`observe`."""
    with observe(net, keep=keep) as traced:
        traced.result = net(x)
    return traced


def probe(net: nn.Module, input_shape: tuple[int, ...]) -> torch.Tensor:
    """A fixed random batch of one input of ``input_shape`` on the model's device and dtype."""
    p = next((p for p in net.parameters() if p.is_floating_point()), None)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, *input_shape, generator=gen)
    return x if p is None else x.to(device=p.device, dtype=p.dtype)


# model -> {input shape: (module ids, sites)}; weak, so a freed model's entry goes with it.
_SITES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def remember(net: nn.Module, input_shape: tuple[int, ...], sites: list[Site]) -> None:
    """Cache a trace's sites for ``net`` at ``input_shape`` (``(C, H, W)``)."""
    ids = tuple(map(id, net.modules()))
    _SITES.setdefault(net, {})[tuple(input_shape)] = (ids, sites)


def sites_of(net: nn.Module, input_shape: tuple[int, ...]) -> list[Site]:
    """The model's sites for one ``(C, H, W)`` input, traced once (no gradients) and cached."""
    entry = _SITES.get(net, {}).get(tuple(input_shape))
    if entry is not None and entry[0] == tuple(map(id, net.modules())):
        return entry[1]
    with preserved(net), torch.no_grad():
        sites = trace(net, probe(net, input_shape)).sites
    remember(net, input_shape, sites)
    return sites
