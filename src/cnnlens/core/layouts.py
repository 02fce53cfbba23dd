"""Reading a layer's output as a spatial feature map ``(N, C, h, w)``, or refusing to.

Layer-based methods (the CAM family, activations at a layer, channel objectives)
need one feature vector per image position. Networks hand them three layouts:

- ``"nchw"``: ``(N, C, h, w)``, PyTorch's convention for convolutions;
- ``"nhwc"``: channels last, ``(N, h, w, C)`` (torchvision's Swin, the MLP of a
  ConvNeXt block, anything an ``nn.Linear`` or ``nn.LayerNorm`` acts on);
- ``"tokens"``: ``(N, k + h*w, D)``, ``k`` leading special tokens (class,
  distillation, registers) then an ``h x w`` grid of patches in row-major order.

A :class:`Layout` turns such a tensor into ``(N, C, h, w)`` and back. Which layout
a layer has is decided from what the model says, never from the shape alone:

- a 4-D output is channels-first or channels-last by *module evidence*: the last
  module inside the layer that produced a tensor of that shape (a convolution,
  2-D batch norm or pooling says channels-first; ``nn.Linear``, a ``LayerNorm``
  over the last dimension or a permute to ``(0, 2, 3, 1)`` says channels-last), or
  the first module that consumes it. The chosen reading must also match the input
  grid (``h x w`` about ``H/s x W/s`` for one stride ``s``). Without evidence, a
  tensor that reads as a grid only channels-first is channels-first; one that could
  be either, or only channels-last, is refused: the caller passes ``layout=``.
- a 3-D output is a token sequence; the number of special tokens comes from the
  model (timm's ``num_prefix_tokens``, else its ``cls_token`` / ``class_token`` /
  ``dist_token`` / ``register_tokens`` parameters) and the grid from its patch
  size and the input size; the remaining tokens must fill exactly one grid.
- 4-D tensors inside an attention module (heads x tokens x head dim, attention
  weights), outputs whose first dimension folds images together (window
  attention), pooled ``(N, D)`` vectors and anything else are refused with the
  shape and the reason.

The model is traced once per input size (one pass of one image, cached weakly);
:func:`layout_of` is the entry point, :func:`spatial_layers` lists what reads.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from .errors import MethodError
from .names import resolve_layer
from .sites import Site, sites_of

LAYOUTS = ("nchw", "nhwc", "tokens")
TOKEN_PARAMS = (
    "cls_token",
    "class_token",
    "dist_token",
    "distillation_token",
    "reg_token",
    "register_tokens",
)


@dataclass(frozen=True)
class Layout:
    """How one layer's output maps onto ``(N, C, h, w)``.

    ``kind`` is one of :data:`LAYOUTS` or ``"custom"`` (a user's ``reshape``
    callable, which must only re-index: gradients go through the same callable).
    """

    kind: str
    grid: tuple[int, int] | None = None
    prefix: int = 0
    reshape: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, compare=False)

    def to_spatial(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` in this layout -> ``(N, C, h, w)`` (a view where possible)."""
        if self.kind == "custom":
            out = self.reshape(t)
            if not isinstance(out, torch.Tensor) or out.dim() != 4 or len(out) != len(t):
                got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise MethodError(f"reshape= must return (N, C, h, w) for N={len(t)}, got {got}")
            return out
        need = 3 if self.kind == "tokens" else 4
        if t.dim() != need:
            raise MethodError(f"a {self.describe()} layout needs a {need}-D tensor, got {shape(t)}")
        if self.kind == "nchw":
            return t
        if self.kind == "nhwc":
            return t.permute(0, 3, 1, 2)
        h, w = self.grid
        if t.shape[1] != self.prefix + h * w:
            raise MethodError(
                f"{shape(t)} does not hold {self.prefix} prefix tokens + a {h}x{w} grid; "
                "pass grid=(h, w) and prefix=k to match it"
            )
        return t[:, self.prefix :].transpose(1, 2).reshape(len(t), t.shape[2], h, w)

    def from_spatial(self, m: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, C, h, w)`` -> this layout; prefix tokens are taken from ``like`` (else zeros)."""
        if self.kind == "nchw":
            return m
        if self.kind == "nhwc":
            return m.permute(0, 2, 3, 1)
        if self.kind == "custom":
            raise MethodError("a reshape= layout has no inverse; pass layout= instead")
        body = m.flatten(2).transpose(1, 2)
        if like is None:
            head = body.new_zeros(len(m), self.prefix, body.shape[2])
        else:
            head = like[:, : self.prefix].to(body.dtype)
        return torch.cat([head, body], dim=1)

    def describe(self) -> str:
        if self.kind == "tokens":
            return f"tokens ({self.prefix} prefix + {self.grid[0]}x{self.grid[1]} grid)"
        return {"nchw": "NCHW", "nhwc": "NHWC (channels last)"}.get(self.kind, "custom reshape")


def shape(t) -> str:
    """``(N, 7, 7, 768)``: a tensor's (or a traced shape's) shape with the batch as N."""
    dims = tuple(t.shape) if isinstance(t, torch.Tensor) else tuple(t)
    return "(" + ", ".join(["N", *map(str, dims[1:])]) + ")"


# ----------------------------------------------------------------------------- reading


def model_prefix(net: nn.Module) -> int:
    """Leading special tokens: timm's ``num_prefix_tokens``, else the token parameters."""
    for m in net.modules():
        k = getattr(m, "num_prefix_tokens", None)
        if isinstance(k, int) and not isinstance(k, bool):
            return k
    total = 0
    for name, p in net.named_parameters():
        if name.rsplit(".", 1)[-1] in TOKEN_PARAMS:
            total += p.shape[1] if p.dim() == 3 else 1
    return total


def model_patch(net: nn.Module) -> tuple[int, int] | None:
    """The patch size of the model's patch embedding, when a module declares one."""
    for m in net.modules():
        p = getattr(m, "patch_size", None)
        if isinstance(p, int) and not isinstance(p, bool) and p > 0:
            return (p, p)
        if isinstance(p, list | tuple) and len(p) == 2 and all(isinstance(v, int) for v in p):
            return (int(p[0]), int(p[1]))
    return None


def token_grids(n: int, hw: tuple[int, int], patch: tuple[int, int] | None) -> list:
    """Grids ``(h, w)`` with ``h*w == n`` that an input ``hw`` gives at one stride."""
    H, W = hw
    if patch:
        strides = [(patch[0] << j, patch[1] << j) for j in range(8)]
    else:
        strides = [(s, s) for s in range(1, max(H, W) + 1)]
    found = set()
    for sh, sw in strides:
        for h, w in ((-(-H // sh), -(-W // sw)), (H // sh, W // sw)):
            if h > 0 and h * w == n:
                found.add((h, w))
    return sorted(found)


def fits(h: int, w: int, hw: tuple[int, int]) -> bool:
    """``h x w`` is about ``H/s x W/s`` for one stride ``s >= 0.5`` (valid convs shave a few)."""
    lo, hi = 0.5, math.inf
    for d, D in ((h, hw[0]), (w, hw[1])):
        tol = 1 + 0.1 * d
        lo = max(lo, D / (d + tol))
        if d - tol > 0:
            hi = min(hi, D / (d - tol))
    return lo <= hi


class Reader:
    """What a model says about its layers' layouts at one input size."""

    def __init__(
        self,
        net: nn.Module,
        input_shape: tuple[int, ...],
        sites: list[Site] | None = None,
        batch: int = 1,
    ):
        self.sites = sites if sites is not None else sites_of(net, input_shape)
        self.batch = batch if sites is not None else 1
        self.by_name = {s.name: i for i, s in enumerate(self.sites)}
        self.hw = tuple(input_shape[-2:])
        self.prefix = model_prefix(net)
        self.patch = model_patch(net)
        self.leaves = sorted((s for s in self.sites if s.leaf), key=lambda s: s.called)

    def evidence(self, site: Site) -> set[str]:
        """Layouts the producing and the consuming module imply for ``site``'s 4-D output.

        The producer is the site itself when its type says, else the last leaf inside it
        with an output of the same shape that says, else (for a leaf that passes its
        input on unchanged in shape: activation, dropout) the leaf before it.
        """
        found, want = set(), site.out_shape
        chain = site.leaf and site.in_shape == want
        if site.out_fmt:
            found.add(site.out_fmt)
        for other in reversed(self.sites[: self.by_name[site.name]] if not found else []):
            inside = other.done > site.called
            if not other.leaf:
                continue
            if not (inside or chain):
                break
            if other.out_shape == want and other.out_fmt:
                found.add(other.out_fmt)
                break
            if not inside:
                chain = other.out_shape == want and other.in_shape == want
        for other in self.leaves:
            if other.called < site.done:
                continue
            if other.in_shape != want:
                break
            if other.in_fmt:
                found.add(other.in_fmt)
                break
            if other.out_shape != want:
                break
        return found

    def read(self, site: Site) -> Layout | str:
        """The layout of ``site``'s output, or the reason it has none."""
        s = site.out_shape
        if s is None:
            return "its output is not a tensor"
        if len(s) >= 2 and s[0] != self.batch:
            return f"{shape(s)} folds images together (first dimension {s[0]} for {self.batch})"
        if len(s) == 2:
            return f"{shape(s)} is a pooled vector with no spatial extent"
        if len(s) == 3 and site.pooling:
            return f"{shape(s)} is pooled over a sequence ({site.type}): channels first, not tokens"
        if len(s) == 3:
            return self._tokens(s)
        if len(s) != 4:
            return f"{shape(s)} is not a 3-D token sequence or a 4-D feature map"
        if site.attention:
            return f"{shape(s)} comes from inside attention module {site.attention!r}"
        ev, first, last = self.evidence(site), fits(s[2], s[3], self.hw), fits(s[1], s[2], self.hw)
        grid = f"the {self.hw[0]}x{self.hw[1]} input"
        if len(ev) > 1:
            return f"{shape(s)}: the modules around it disagree on channels-first or -last"
        if ev:
            kind = ev.pop()
            ok = first if kind == "nchw" else last
            return Layout(kind) if ok else f"{shape(s)} as {kind.upper()} does not fit {grid}"
        if first and not last:
            return Layout("nchw")
        if first:
            return f"{shape(s)} could be channels-first or channels-last; nothing in the model says"
        if last:
            return f"{shape(s)} looks channels-last, but nothing in the model says so"
        return f"{shape(s)} fits {grid} neither channels-first nor channels-last"

    def _tokens(self, s: tuple[int, ...]) -> Layout | str:
        for k in dict.fromkeys((self.prefix, 0)):
            grids = token_grids(s[1] - k, self.hw, self.patch)
            if len(grids) == 1:
                return Layout("tokens", grids[0], k)
        return (
            f"{shape(s)}: {s[1]} tokens ({self.prefix} special) fill no single grid "
            f"of the {self.hw[0]}x{self.hw[1]} input"
        )


def spatial_layers(
    net: nn.Module, input_shape: tuple[int, ...], reader: Reader | None = None
) -> list[tuple[str, Layout]]:
    """Layers readable as spatial maps with more than one position, in completion order;
    modules of (or inside) attention and pooling layers are left out."""
    reader = reader or Reader(net, input_shape)
    out = []
    for site in reader.sites:
        if site.attention or site.pooling:
            continue
        lay = reader.read(site)
        if isinstance(lay, Layout):
            h, w = lay.grid or (site.out_shape[1:3] if lay.kind == "nhwc" else site.out_shape[2:])
            if h * w > 1:
                out.append((site.name, lay))
    return out


def check_override(layout=None, grid=None, prefix=None, reshape=None) -> None:
    """Validate the override parameters alone (before any forward pass)."""
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)} or None, got {layout!r}")
    if reshape is not None and (layout is not None or not callable(reshape)):
        raise ValueError("reshape= takes a callable and excludes layout=")
    if grid is not None and not (
        isinstance(grid, list | tuple) and len(grid) == 2 and all(_count(v, 1) for v in grid)
    ):
        raise ValueError(f"grid must be two positive integers (h, w), got {grid!r}")
    if prefix is not None and not _count(prefix, 0):
        raise ValueError(f"prefix must be a non-negative integer, got {prefix!r}")
    if (grid is not None or prefix is not None) and layout not in (None, "tokens"):
        raise ValueError("grid= and prefix= describe token layouts; use them with layout='tokens'")


def _count(v, least: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= least


def layout_of(
    net: nn.Module,
    layer: str | nn.Module,
    input_shape: tuple[int, ...],
    *,
    layout: str | None = None,
    grid: tuple[int, int] | None = None,
    prefix: int | None = None,
    reshape: Callable | None = None,
    sites: list[Site] | None = None,
    batch: int = 1,
) -> Layout:
    """The layout of ``layer``'s output for inputs of ``input_shape`` (``(C, H, W)``).

    ``layout``/``grid``/``prefix``/``reshape`` override what the model says. ``sites``
    are records of a pass of ``batch`` images (:func:`cnnlens.core.sites.observe`)
    to read instead of tracing the model once more.

    Raises:
        MethodError: the output cannot be read as a spatial map; the message gives its
            shape, the reason, layers that can be read, and the override to pass.
    """
    check_override(layout, grid, prefix, reshape)
    if reshape is not None:
        return Layout("custom", reshape=reshape)
    name = resolve_layer(net, layer)[0]
    if layout in ("nchw", "nhwc"):
        return Layout(layout)
    reader = Reader(net, input_shape, sites, batch)
    site = reader.sites[reader.by_name[name]] if name in reader.by_name else None
    if site is None:
        raise MethodError(f"layer {name!r} does not run in the forward pass; pick one that does")
    s = site.out_shape
    if layout == "tokens" or grid is not None or prefix is not None:
        if s is None or len(s) != 3:
            raise MethodError(f"layer {name!r} outputs {shape(s or ())}, not (N, tokens, D)")
        k = prefix if prefix is not None else reader.prefix
        if grid is not None:
            k = s[1] - grid[0] * grid[1] if prefix is None else k
            if k < 0 or k + grid[0] * grid[1] != s[1]:
                raise MethodError(f"{shape(s)} does not hold {k} prefix tokens + a {grid} grid")
            return Layout("tokens", tuple(grid), k)
        grids = token_grids(s[1] - k, reader.hw, reader.patch)
        if len(grids) != 1:
            raise MethodError(f"{shape(s)} with {k} prefix tokens fills no single grid; pass grid=")
        return Layout("tokens", grids[0], k)
    found = reader.read(site)
    if isinstance(found, Layout):
        return found
    near = [n for n, _ in spatial_layers(net, input_shape, reader)]
    idx = reader.by_name[name]
    near.sort(key=lambda n: abs(reader.by_name[n] - idx))
    hint = f" Layers that read as maps: {', '.join(near[:3])}." if near else ""
    raise MethodError(
        f"layer {name!r} cannot be read as a spatial feature map: {found}.{hint} If you know "
        "its layout, pass layout='nchw'|'nhwc'|'tokens' (with grid=(h, w), prefix=k) or reshape=."
    )
