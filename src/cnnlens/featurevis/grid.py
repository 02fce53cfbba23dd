"""Tiling images into one picture, with optional captions; viewing sizes and colour bars.

:func:`tile` lays pictures out in a grid, :func:`upscale` enlarges a small picture
by a whole factor (nearest-neighbour, so every kernel weight stays a sharp block),
:func:`stack` puts pictures under each other and :class:`ColourScale` is the value
range and colour map of a set of maps, drawn as a colour bar with its end values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from ..colormaps import colorbar
from ..io import to_pil

#: Long side, in pixels, that :func:`upscale` enlarges small pictures to at least.
VIEW_SIDE = 512

_BACKGROUND = (255, 255, 255)
_TEXT = (40, 40, 40)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def tile(
    images: Sequence,
    ncol: int | None = None,
    *,
    captions: Sequence[str] | None = None,
    scale: int = 1,
    pad: int = 2,
    font_size: int = 10,
) -> Image.Image:
    """Arrange images (PIL, tensors or arrays in [0, 1]) in a grid, row by row.

    Args:
        images: pictures of any sizes; each cell is as large as the largest one.
        ncol: columns (default: about square).
        captions: one line of text under each image (shortened with "…" to fit its cell).
        scale: integer upscaling with nearest-neighbour (for tiny kernels and maps).
        pad: pixels between cells and around the grid.
        font_size: caption text size.

    Returns:
        An RGB image.
    """
    pics = [to_pil(im) for im in images]
    if not pics:
        raise ValueError("tile needs at least one image")
    if captions is not None and len(captions) != len(pics):
        raise ValueError(f"{len(captions)} captions for {len(pics)} images")
    if scale > 1:
        pics = [p.resize((p.width * scale, p.height * scale), Image.NEAREST) for p in pics]
    n = len(pics)
    cols = ncol or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    cw = max(p.width for p in pics)
    font = _font(font_size) if captions else None
    text_h = font_size + 4 if captions else 0
    ch = max(p.height for p in pics) + text_h
    canvas = Image.new("RGB", (pad + cols * (cw + pad), pad + rows * (ch + pad)), _BACKGROUND)
    draw = ImageDraw.Draw(canvas) if captions else None
    for i, p in enumerate(pics):
        r, c = divmod(i, cols)
        x, y = pad + c * (cw + pad), pad + r * (ch + pad)
        canvas.paste(p, (x, y))
        if draw is not None:
            text = _fit(draw, str(captions[i]), font, cw - 2)
            draw.text((x + 1, y + p.height + 1), text, fill=_TEXT, font=font)
    return canvas


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """``text``, shortened with an ellipsis so that it fits ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def upscale(picture: Image.Image, min_side: int = VIEW_SIDE) -> tuple[Image.Image, int]:
    """``picture`` enlarged by the smallest whole factor that makes its long side
    ``>= min_side`` (nearest-neighbour), and that factor (1: returned as it is)."""
    factor = max(1, math.ceil(min_side / max(picture.size)))
    if factor == 1:
        return picture, 1
    return picture.resize((picture.width * factor, picture.height * factor), Image.NEAREST), factor


def stack(pictures: Sequence[Image.Image], pad: int = 4) -> Image.Image:
    """Pictures one under the other on white, left-aligned, ``pad`` pixels apart."""
    pics = [p.convert("RGB") for p in pictures]
    width = max(p.width for p in pics)
    height = sum(p.height for p in pics) + pad * (len(pics) - 1)
    canvas = Image.new("RGB", (width, height), _BACKGROUND)
    y = 0
    for p in pics:
        canvas.paste(p, (0, y))
        y += p.height + pad
    return canvas


def _number(v: float) -> str:
    return "0" if v == 0 else f"{v:.3g}"


@dataclass(frozen=True)
class ColourScale:
    """The value range ``[low, high]`` mapped onto colour map ``cmap`` (``signed``:
    ``low == -high`` and zero sits at the map's centre)."""

    low: float
    high: float
    cmap: str
    signed: bool = False

    def ticks(self) -> list[str]:
        """The numbers written under the bar: both ends, and ``0`` in the middle if signed."""
        ends = [_number(self.low), _number(self.high)]
        return [ends[0], "0", ends[1]] if self.signed else ends

    def picture(self, width: int = 256, title: str = "", font_size: int = 10) -> Image.Image:
        """The colour bar, lowest value on the left, with :meth:`ticks` under it and
        ``title`` above it."""
        bar = colorbar(self.cmap, width=width, height=12)
        font = _font(font_size)
        line = font_size + 4
        margin = 24  # room for end labels centred on the bar's ends
        top = line if title else 0
        probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        wide = max(width + 2 * margin, margin + int(probe.textlength(title, font=font)) + 4)
        canvas = Image.new("RGB", (wide, top + 12 + line + 2), _BACKGROUND)
        draw = ImageDraw.Draw(canvas)
        if title:
            draw.text((margin, 0), title, fill=_TEXT, font=font)
        canvas.paste(bar, (margin, top))
        draw.rectangle([margin - 1, top - 1, margin + width, top + 12], outline=_TEXT)
        ticks = self.ticks()
        for i, text in enumerate(ticks):
            x = margin + width * i / (len(ticks) - 1)
            half = draw.textlength(text, font=font) / 2
            x = min(max(x - half, 0), margin + width + margin - 2 * half)
            draw.text((x, top + 14), text, fill=_TEXT, font=font)
        return canvas
