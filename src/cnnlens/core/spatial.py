"""Layer outputs as ``(N, C, h, w)`` for the tools that read units, not attributions.

Activation maps, channel objectives of feature visualisation, the dataset index and
its top patches all read "channel ``c`` at position ``(y, x)``" of a layer. They go
through :func:`layer_view`, which reads the layer's layout once from the model
(:func:`cnnlens.core.layouts.layout_of`: NCHW, channels-last or tokens) and returns a
function turning each captured output into ``(N, C, h, w)``. A pooled ``(N, C)``
vector reads as ``(N, C, 1, 1)`` (a unit with one position). Anything else is refused
with the layer's shape and the reason; it is never reshaped on a guess.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .errors import MethodError
from .layouts import Layout, Reader, layout_of
from .names import resolve_layer

View = Callable[[torch.Tensor], torch.Tensor]


def _vector(t: torch.Tensor) -> torch.Tensor:
    if t.dim() != 2:
        raise MethodError(f"expected a pooled (N, C) output, got {tuple(t.shape)}")
    return t[:, :, None, None]


def _spatial(lay: Layout, name: str) -> View:
    def view(t: torch.Tensor) -> torch.Tensor:
        if not isinstance(t, torch.Tensor):
            raise MethodError(f"layer {name!r} outputs a {type(t).__name__}, not a tensor")
        if lay.kind == "tokens" and t.dim() == 3 and t.shape[1] != lay.prefix + math.prod(lay.grid):
            # another input size than the one the layout was read at: a square grid only
            side = math.isqrt(t.shape[1] - lay.prefix)
            if side * side != t.shape[1] - lay.prefix:
                raise MethodError(
                    f"layer {name!r} gave {t.shape[1]} tokens at this input size, which fill no "
                    "square grid after the prefix tokens; use the model's input size"
                )
            return Layout("tokens", (side, side), lay.prefix).to_spatial(t)
        return lay.to_spatial(t)

    return view


def layer_view(net: nn.Module, layer: str, input_shape: tuple[int, ...]) -> View:
    """A function taking ``layer``'s output to ``(N, C, h, w)`` (inputs of ``input_shape``).

    Raises:
        MethodError: the output is neither a spatial map nor a pooled vector (the
            message has its shape, the reason and layers that read as maps).
    """
    name = resolve_layer(net, layer)[0]
    reader = Reader(net, tuple(input_shape), None, 1)
    idx = reader.by_name.get(name)
    out = None if idx is None else reader.sites[idx].out_shape
    if out is not None and len(out) == 2:
        return _vector
    # the reader's trace serves layout_of too (no second Reader over the same sites)
    return _spatial(layout_of(net, name, tuple(input_shape), sites=reader.sites), name)


def layer_views(
    net: nn.Module, layers: Sequence[str], input_shape: tuple[int, ...]
) -> dict[str, View]:
    """:func:`layer_view` of each of ``layers`` (one trace of the model in all)."""
    return {name: layer_view(net, name, input_shape) for name in layers}


def as_maps(views: dict[str, View], acts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``acts`` with every entry that has a view replaced by its ``(N, C, h, w)`` reading."""
    return {n: views[n](a) if n in views else a for n, a in acts.items()}


__all__ = ["View", "as_maps", "layer_view", "layer_views"]
