"""Pictures for the report page: shrunk photos, compact ``data:`` URIs, colour bars, sizes.

Photos, overlays, masks and edited images are JPEG (quality ``JPEG_QUALITY``,
no chroma subsampling, so the colours that encode a map's values stay put): a
224-pixel overlay of a photo takes about a fifth of the bytes of the same
picture as PNG. Colour bars stay PNG (tiny, and sharp-edged). Everything is
inlined as a ``data:`` URI: the page is one file and makes no request.
"""

from __future__ import annotations

import base64
import io

import torch
from PIL import Image

from ..colormaps import colorbar
from ..imaging import data_uri, to_pil

# Longest side, in pixels, of every picture embedded in the page. Larger
# inputs are shrunk first so the HTML file stays a reasonable size.
MAX_SIDE = 224
JPEG_QUALITY = 80


def photo(image: torch.Tensor) -> Image.Image:
    """A ``(3, H, W)`` [0, 1] tensor to an RGB PIL image no larger than ``MAX_SIDE``."""
    pil = to_pil(image.detach().float().cpu().clamp(0, 1))
    if max(pil.size) > MAX_SIDE:
        pil = pil.copy()
        pil.thumbnail((MAX_SIDE, MAX_SIDE), Image.LANCZOS)
    return pil


def jpeg_bytes(image: Image.Image) -> bytes:
    """``image`` as a JPEG file (RGB, quality ``JPEG_QUALITY``, 4:4:4 chroma)."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=True)
    return buf.getvalue()


def picture_uri(image: Image.Image) -> str:
    """A ``data:image/jpeg;base64,...`` URI of a photo-like picture (see :func:`jpeg_bytes`)."""
    return "data:image/jpeg;base64," + base64.b64encode(jpeg_bytes(image)).decode("ascii")


def colorbars() -> dict[bool, str]:
    """PNG data URIs of the two colour bars: sequential (unsigned) and diverging (signed)."""
    return {
        False: data_uri(colorbar(width=256, height=10, signed=False)),
        True: data_uri(colorbar(width=256, height=10, signed=True)),
    }


def human_size(n_bytes: int) -> str:
    """A file size for people: ``"812 B"``, ``"48 kB"``, ``"3.4 MB"`` (powers of 1000).

    Args:
        n_bytes: the size in bytes (not negative).

    Returns:
        The text.
    """
    if n_bytes < 1000:
        return f"{n_bytes} B"
    if n_bytes < 999_500:
        return f"{n_bytes / 1e3:.0f} kB"
    return f"{n_bytes / 1e6:.1f} MB"


__all__ = ["JPEG_QUALITY", "MAX_SIDE", "colorbars", "human_size", "jpeg_bytes", "photo",
           "picture_uri"]  # fmt: skip
