"""Activation maps: what every channel of a layer does with one image.

For an image ``x`` and a layer with output ``A in R^{C x h x w}``, channel ``c``'s
map is ``A[c]`` (Yosinski et al. 2015, "Understanding neural networks through
deep visualization"). Channels are sorted by their mean activation
``mean_{h,w} A[c]``, strongest first, and shown with that value.

The overview strip follows the image through the network's stages
(:func:`~cnnlens.featurevis.presets.stages`): for each stage it shows the
root-mean-square over channels, ``sqrt(mean_c A[c]^2)``, i.e. where the stage
responds at all, whatever the sign of its (possibly linear) outputs.

Colours: a layer whose maps hold negative values (a linear projection, say) is
drawn on a diverging map with zero at its centre (blue negative, white zero, red
positive, range ``[-m, m]`` with ``m = max |A|``); a layer of non-negative values
(after a ReLU) on the sequential ``inferno`` from its minimum to its maximum.
:meth:`ActivationMaps.scale` gives that range, and its colour bar, for the grid
and page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torch import nn

from ..colormaps import colorize
from ..core.hooks import capture, preserved
from ..core.spatial import layer_views
from ..models.base import LoadedModel
from .grid import ColourScale, stack, tile
from .presets import stages


@dataclass
class ActivationMaps:
    """One layer's response to one image.

    Attributes:
        layer: dotted name.
        maps: ``(C, h, w)`` activations (CPU, float32).
        means: ``(C,)`` mean activation per channel.
        order: ``(C,)`` channel indices by decreasing mean.
    """

    layer: str
    maps: torch.Tensor
    means: torch.Tensor
    order: torch.Tensor

    @property
    def rms(self) -> torch.Tensor:
        """``(h, w)``: root-mean-square over channels."""
        return self.maps.pow(2).mean(dim=0).sqrt()

    @property
    def signed(self) -> bool:
        """Whether any value is negative (then maps use a diverging colour map)."""
        return bool(self.maps.min() < 0)

    def scale(self, normalize: str = "joint", cmap: str | None = None) -> ColourScale:
        """The colour range: ``[-m, m]`` (``m = max |A|``) for signed maps, ``[min, max]``
        otherwise. ``normalize="channel"``: each map uses its own range, so the bar shows
        the shape of that range scaled to 1 (``[-1, 1]`` or ``[0, 1]``)."""
        if normalize not in ("joint", "channel"):
            raise ValueError(f"normalize must be 'joint' or 'channel', got {normalize!r}")
        name = cmap or ("coolwarm" if self.signed else "inferno")
        if normalize == "channel":
            return ColourScale(-1.0 if self.signed else 0.0, 1.0, name, self.signed)
        if self.signed:
            m = float(self.maps.abs().max())
            return ColourScale(-m, m, name, True)
        return ColourScale(float(self.maps.min()), float(self.maps.max()), name, False)

    def tiles(
        self, max_channels: int | None = None, normalize: str = "joint", cmap: str | None = None
    ) -> tuple[list[Image.Image], list[str]]:
        """Colour pictures of the channels in sorted order, with ``"#c  mean"`` captions.

        ``normalize="joint"`` uses one value range for all channels (strengths
        comparable, :meth:`scale`); ``"channel"`` stretches each channel to the full
        colour range (its own ``[-m, m]`` if the layer is signed, else ``[min, max]``).
        """
        s = self.scale(normalize, cmap)
        pics, caps = [], []
        for c in self.order[:max_channels].tolist():
            m = self.maps[c]
            kw = {"vmin": s.low, "vmax": s.high} if normalize == "joint" else {}
            pics.append(Image.fromarray(colorize(m, cmap=s.cmap, signed=s.signed, **kw)))
            caps.append(f"#{c} {float(self.means[c]):.3g}")
        return pics, caps

    def colorbar(self, normalize: str = "joint", cmap: str | None = None) -> Image.Image:
        """The colour bar of :meth:`scale`, titled with what its numbers mean."""
        s = self.scale(normalize, cmap)
        what = "activation" if normalize == "joint" else "activation / each map's own max |A|"
        if normalize == "channel" and not s.signed:
            what = "each map from its own min (0) to its own max (1)"
        return s.picture(title=what)

    def grid(
        self,
        max_channels: int | None = None,
        normalize: str = "joint",
        cmap: str | None = None,
        cell: int = 56,
    ) -> Image.Image:
        """Every channel (or the strongest ``max_channels``) as one captioned picture,
        with the colour bar under it."""
        pics, caps = self.tiles(max_channels, normalize, cmap)
        scale = max(1, cell // max(pics[0].size))
        return stack(
            [tile(pics, captions=caps, scale=scale, pad=3), self.colorbar(normalize, cmap)]
        )


def _single(x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"expected one image (1, 3, H, W) or (3, H, W), got {tuple(x.shape)}")
    return x


def _maps(name: str, a: torch.Tensor) -> ActivationMaps:
    a = a[0].detach().float().cpu()
    means = a.flatten(1).mean(dim=1)
    return ActivationMaps(name, a, means, torch.argsort(means, descending=True, stable=True))


@torch.no_grad()
def activation_maps(model: LoadedModel | nn.Module, x: torch.Tensor, layer: str) -> ActivationMaps:
    """Every channel of ``layer`` for one preprocessed image ``x`` ``(1, 3, H, W)``.

    Raises:
        LayerError: unknown layer (with the closest names).
    """
    return overview(model, x, [layer])[0]


@torch.no_grad()
def overview(
    model: LoadedModel | nn.Module, x: torch.Tensor, layers: Sequence[str] | None = None
) -> list[ActivationMaps]:
    """The activations of several layers (default: every stage) from one forward pass."""
    loaded = LoadedModel.wrap(model)
    x = _single(x).to(loaded.device)
    names = list(layers) if layers is not None else stages(loaded, x.shape[-1])
    views = layer_views(loaded.net, names, tuple(x.shape[1:]))
    with preserved(loaded.net), capture(loaded.net, names) as record:
        loaded.net(x)
    return [_maps(n, views[n](record.activations[n])) for n in names]


def overview_strip(
    maps: Sequence[ActivationMaps], image: torch.Tensor | None = None, cell: int = 112
) -> Image.Image:
    """A row: the input image (``(3, H, W)`` in [0, 1], optional), then each layer's RMS map.

    Each map is stretched to its own range (depths differ by orders of magnitude)
    and upscaled to ``cell`` pixels; captions give the layer name and shape.
    """
    pics, caps = [], []
    if image is not None:
        pic = Image.fromarray(
            (image.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(
                "uint8"
            )
        )
        pics.append(pic.resize((cell, cell), Image.BILINEAR))
        caps.append("input")
    for m in maps:
        c, h, w = m.maps.shape
        pic = Image.fromarray(colorize(m.rms, cmap="inferno"))
        pics.append(pic.resize((cell, cell), Image.NEAREST))
        caps.append(f"{m.layer} {c}x{h}x{w}")
    return tile(pics, ncol=len(pics), captions=caps, pad=4)
