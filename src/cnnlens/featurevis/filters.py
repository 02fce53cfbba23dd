"""Learned filters as pictures.

A first-layer kernel ``W[o] in R^{3 x k x k}`` acts directly on RGB pixels, so
it can be shown as a small colour image: the pattern the filter correlates
with (Krizhevsky et al. 2012, fig. 3; Zeiler & Fergus 2014). Deeper kernels
act on feature maps, not colours: they are shown per input channel in
grey, rows = output filters, columns = input channels, but only the first
layer is directly interpretable (what a deeper unit responds to is better seen
with activation maximisation, :func:`~cnnlens.featurevis.render`).

Weights are mapped to [0, 1] symmetrically, ``0.5 + 0.5 * w / m``, so zero is
mid-grey and the sign of a weight is visible; ``m = max |w|`` over all filters
(``normalize="joint"``: filters comparable in strength) or over each filter
(``normalize="filter"``: every filter uses the full range).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image
from torch import nn

from ..core.names import resolve_layer
from ..models.base import LoadedModel
from .grid import tile

NOTE_DEEP = (
    "Only the first layer's filters act on pixels and are directly interpretable; these act "
    "on feature maps (shown per input channel in grey: mid-grey = 0). Use `cnnlens dream` to "
    "see what the units respond to."
)
NOTE_FIRST = (
    "First-layer kernels act on RGB pixels: each tile is the colour pattern the filter "
    "correlates with (mid-grey = 0; the input is normalised before the filter)."
)


def conv_layers(model: LoadedModel | nn.Module) -> list[str]:
    """Dotted names of every ``nn.Conv2d`` (subclasses included), in registration order."""
    net = LoadedModel.wrap(model).net
    return [n for n, m in net.named_modules() if isinstance(m, nn.Conv2d)]


def first_conv(model: LoadedModel | nn.Module) -> str:
    """The first convolution that reads the 3-channel input (the one with RGB kernels)."""
    net = LoadedModel.wrap(model).net
    convs = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    for n, m in convs:
        if m.in_channels == 3 and m.groups == 1:
            return n
    if convs:
        return convs[0][0]
    raise ValueError(f"{type(net).__name__} has no nn.Conv2d layer")


@dataclass
class FilterBank:
    """The kernels of one conv layer.

    Attributes:
        layer: dotted name.
        weight: ``(out, in / groups, kh, kw)``, detached copy on the CPU.
        rgb: whether the kernels act on the 3-channel input (shown in colour).
    """

    layer: str
    weight: torch.Tensor
    rgb: bool

    @property
    def note(self) -> str:
        return NOTE_FIRST if self.rgb else NOTE_DEEP

    def images(self, normalize: str = "joint") -> torch.Tensor:
        """Kernels mapped to [0, 1] (``0.5 + 0.5 w / max|w|``), same shape as ``weight``."""
        w = self.weight.float()
        if normalize == "joint":
            m = w.abs().max().clamp(min=1e-12)
        elif normalize == "filter":
            m = w.abs().flatten(1).max(dim=1).values.clamp(min=1e-12).view(-1, 1, 1, 1)
        else:
            raise ValueError(f"normalize must be 'joint' or 'filter', got {normalize!r}")
        return (0.5 + 0.5 * w / m).clamp(0, 1)

    def grid(
        self,
        normalize: str = "joint",
        *,
        max_filters: int = 64,
        max_inputs: int = 32,
        cell: int = 24,
    ) -> Image.Image:
        """All (or the first ``max_filters``) kernels as one picture.

        RGB layers: one colour tile per filter in a square grid. Others: one row
        per filter, one grey tile per input channel (at most ``max_inputs``);
        depthwise kernels (one input each) in a square grid.
        """
        imgs = self.images(normalize)[:max_filters]
        kh = imgs.shape[-2]
        # 1x1 kernels are single weights: small cells read as a weight matrix
        scale = max(1, (cell if kh > 1 else cell // 3) // kh)
        if self.rgb:
            return tile(list(imgs), scale=scale, pad=2)
        if imgs.shape[1] == 1:
            return tile(list(imgs[:, :1].expand(-1, 3, -1, -1)), scale=scale, pad=2)
        rows = imgs[:, :max_inputs]
        cells = [
            rows[o, i][None].expand(3, -1, -1)
            for o in range(rows.shape[0])
            for i in range(rows.shape[1])
        ]
        return tile(cells, ncol=rows.shape[1], scale=scale, pad=1)

    def __len__(self) -> int:
        return int(self.weight.shape[0])


def filter_bank(model: LoadedModel | nn.Module, layer: str | None = None) -> FilterBank:
    """The kernels of ``layer`` (default: the first conv on the input).

    Raises:
        LayerError: unknown name (with the closest names).
        ValueError: the layer is not a 2-D convolution.
    """
    net = LoadedModel.wrap(model).net
    name, module = resolve_layer(net, layer or first_conv(net))
    if not isinstance(module, nn.Conv2d):
        convs = conv_layers(net)
        hint = ", ".join(convs[:5]) + (" ..." if len(convs) > 5 else "")
        raise ValueError(
            f"layer {name!r} is a {type(module).__name__}, not a Conv2d; conv layers: {hint}"
        )
    weight = module.weight.detach().to("cpu").clone()
    rgb = module.in_channels == 3 and module.groups == 1
    return FilterBank(name, weight, rgb)
