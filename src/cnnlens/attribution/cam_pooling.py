"""The tensor a global average pooling consumes, followed from a layer through pointwise ops.

CAM decomposes a class score over the positions of the map that the global
average pooling *consumes*. That map is often not a module's output: DenseNet
applies ``F.relu`` in ``forward`` between ``features`` and
``F.adaptive_avg_pool2d``, torchvision's Swin normalises and permutes its last
stage. :class:`PoolWatch` is a ``TorchFunctionMode`` active only inside one
forward pass (no global patching): starting at the layer's output, it follows
every torch call that maps that tensor position by position and keeps its
shape, and records the input of the first global average pooling it reaches.

Followed: elementwise activations, dropout (eval), ``clone``/``contiguous``/
``to``, batch norm on a channels-first map, layer norm over the channels of a
channels-last map or tokens, the two permutes between NCHW and NHWC,
``x[:, k:]`` dropping exactly the ``k`` special tokens, and ``transpose(1, 2)`` of
tokens without special tokens (``(N, C, L)``, Hugging Face Swin's pooler input).
Recognised pools: ``adaptive_avg_pool2d(., 1)``, ``adaptive_avg_pool1d(., 1)`` of
transposed tokens, and ``mean`` over exactly the spatial dimensions (NCHW, NHWC, or
tokens without special tokens). Anything else (a
convolution, an addition, reading the class token) ends the trail, and CAM
refuses as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..core.hooks import attached
from ..core.layouts import Layout

ELEMENTWISE = frozenset(
    "relu relu_ relu6 hardtanh hardtanh_ gelu silu silu_ hardswish hardswish_ mish elu elu_ "
    "leaky_relu leaky_relu_ selu celu sigmoid tanh softplus hardsigmoid dropout dropout1d "
    "dropout2d feature_dropout alpha_dropout contiguous clone to float".split()
)
_SPATIAL = {"nchw": {2, 3}, "nhwc": {1, 2}}


FOLLOWED = ELEMENTWISE | {"batch_norm", "layer_norm", "permute", "transpose", "__getitem__"}
POOLS = frozenset({"adaptive_avg_pool2d", "adaptive_avg_pool1d", "mean"})


class ChannelsFirstTokens:
    """``(N, C, h*w)`` (tokens transposed) -> ``(N, C, h, w)``: a re-indexing only."""

    def __init__(self, grid: tuple[int, int]):
        self.grid = tuple(grid)

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(len(t), t.shape[1], *self.grid)


# One call on the trail: its name and what decides how it acts on a layout.
Step = tuple[str, tuple]


def _arg(args: tuple, kwargs: dict, i: int, key: str):
    return args[i] if len(args) > i else kwargs.get(key)


def _detail(name: str, args: tuple, kwargs: dict, t: torch.Tensor) -> tuple:
    """What of a call's arguments matters for its layout (recorded during the pass)."""
    if name == "permute":
        rest = args[1:] if len(args) > 1 else (kwargs.get("dims") or ())
        if len(rest) == 1 and isinstance(rest[0], list | tuple):
            rest = rest[0]
        return tuple(rest)
    if name == "layer_norm":
        return (tuple(_arg(args, kwargs, 1, "normalized_shape") or ()), t.shape[-1])
    if name in ("adaptive_avg_pool2d", "adaptive_avg_pool1d"):
        size = _arg(args, kwargs, 1, "output_size")
        return (size in (1, (1,), [1], (1, 1), [1, 1]),)
    if name == "transpose":
        dims = (_arg(args, kwargs, 1, "dim0"), _arg(args, kwargs, 2, "dim1"))
        return tuple(sorted(d % t.dim() for d in dims)) if None not in dims else ()
    if name == "__getitem__":  # x[:, k:] drops k special tokens
        key = _arg(args, kwargs, 1, "key")
        if isinstance(key, tuple) and len(key) == 2 and key[0] == slice(None):
            part = key[1]
            if isinstance(part, slice) and part.stop is None and part.step in (None, 1):
                return (part.start or 0,)
        return (None,)
    if name == "mean":
        dims = _arg(args, kwargs, 1, "dim")
        if dims is None:
            return ()
        return tuple(sorted({d % t.dim() for d in ((dims,) if isinstance(dims, int) else dims)}))
    return ()


def _after(step: Step, lay: Layout) -> Layout | None:
    """The layout after one followed call, or None when it does not act per position."""
    name, detail = step
    if name in ELEMENTWISE:
        return lay
    if name == "batch_norm":
        return lay if lay.kind == "nchw" else None
    if name == "layer_norm":
        shape, last = detail
        return lay if lay.kind in ("nhwc", "tokens") and shape == (last,) else None
    if name == "__getitem__":
        if lay.kind == "tokens" and detail == (lay.prefix,):
            return Layout("tokens", lay.grid, 0)
        return None
    if name == "transpose":
        if lay.kind == "tokens" and lay.prefix == 0 and detail == (1, 2):
            return Layout("custom", lay.grid, reshape=ChannelsFirstTokens(lay.grid))
        return None
    if name == "permute":
        if lay.kind == "nhwc" and detail == (0, 3, 1, 2):
            return Layout("nchw")
        if lay.kind == "nchw" and detail == (0, 2, 3, 1):
            return Layout("nhwc")
    return None


def _pools(step: Step, lay: Layout) -> bool:
    """Whether the call averages over exactly the map's positions."""
    name, detail = step
    if name == "adaptive_avg_pool2d":
        return lay.kind == "nchw" and detail == (True,)
    if name == "adaptive_avg_pool1d":
        return isinstance(lay.reshape, ChannelsFirstTokens) and detail == (True,)
    if lay.kind == "tokens":
        return lay.prefix == 0 and detail == (1,)
    return set(detail) == _SPATIAL.get(lay.kind)


class PoolWatch(TorchFunctionMode):
    """Follows one module's output through shape-keeping torch calls to global poolings.

    During the pass it records the trail of calls (the layer's layout is not known
    yet); :meth:`pooled` replays each trail on the layout once it is.
    """

    def __init__(self):
        super().__init__()
        self.tracked: dict[int, tuple[torch.Tensor, tuple[Step, ...]]] = {}
        self.reached: list[tuple[torch.Tensor, tuple[Step, ...], Step]] = []

    def track(self, t: torch.Tensor, steps: tuple[Step, ...] = ()) -> None:
        self.tracked[id(t)] = (t, steps)  # the strong reference keeps the id unique

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        src = _arg(args, kwargs, 0, "input")
        entry = self.tracked.get(id(src)) if isinstance(src, torch.Tensor) else None
        if entry is None or entry[0] is not src:
            return out
        name = getattr(func, "__name__", "")
        if name in POOLS:
            self.reached.append((src, entry[1], (name, _detail(name, args, kwargs, src))))
        elif name in FOLLOWED and isinstance(out, torch.Tensor) and out.dim() == src.dim():
            self.track(out, entry[1] + ((name, _detail(name, args, kwargs, src)),))
        return out

    def pooled(self, lay: Layout) -> list[tuple[torch.Tensor, Layout, tuple[str, ...]]]:
        """``(map, its layout, call names)`` for every global average pooling of the layer's
        output (read as ``lay``) or of a per-position function of it, in call order."""
        found = []
        for t, steps, pool in self.reached:
            cur = lay
            for step in steps:
                cur = _after(step, cur) if cur is not None else None
            if cur is not None and _pools(pool, cur):
                found.append((t, cur, tuple(name for name, _ in steps)))
        return found


@contextmanager
def watch_pooling(module: nn.Module) -> Iterator[PoolWatch]:
    """Inside the block, follow ``module``'s output to the global poolings it reaches."""
    watch = PoolWatch()

    def hook(mod, args, output):
        if isinstance(output, torch.Tensor):
            watch.track(output)

    with attached([(module, hook)]), watch:
        yield watch
