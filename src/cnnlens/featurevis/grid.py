"""Tiling images into one picture, with optional captions (PIL only)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from ..io import to_pil

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
