"""Pictures in memory: tensors, arrays and PIL images converted to RGB and encoded as PNG.

:func:`to_pil` turns a tensor or array (``(H, W)``, ``(C, H, W)`` or ``(H, W, C)``, float
in ``[0, 1]`` or integer) into an RGB image and :func:`to_rgb` a PIL image of any mode
(grey, 1-bit, palette, alpha composited over white, CMYK, 16-bit scaled by 65535, float
by its own range); :func:`to_numpy` reads tensors and arrays alike. :func:`png_bytes`,
:func:`data_uri` and :func:`save_png` encode and store pictures. Reading files is
:mod:`cnnlens.io`; colour maps are :mod:`cnnlens.colormaps`.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from .core.atomic import write_bytes_atomic

if TYPE_CHECKING:
    import torch

    ArrayLike = np.ndarray | torch.Tensor
else:
    ArrayLike = Any

PathLike = str | os.PathLike

__all__ = [
    "ArrayLike",
    "PathLike",
    "data_uri",
    "grey_to_rgb",
    "png_bytes",
    "save_png",
    "to_numpy",
    "to_pil",
    "to_rgb",
]

_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_PNG_MODES = frozenset({"1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"})
_WHITE = (255, 255, 255, 255)
_UINT16_MAX = 65535.0


# --------------------------------------------------------------------------- PIL modes


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert an image of any PIL mode to a new 8-bit RGB image.

    Args:
        img: A loaded image.

    Returns:
        The RGB image.
    """
    if img.mode.startswith("I;16") or img.mode == "I":
        return grey_to_rgb(_integer_to_uint8(np.asarray(img), img.mode))
    if img.mode == "F":
        return grey_to_rgb(_float_to_uint8(np.asarray(img)))
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        return _flatten_on_white(img)
    return img.convert("RGB")


def _flatten_on_white(img: Image.Image) -> Image.Image:
    """Composite an image with transparency over a white background."""
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, _WHITE)
    return Image.alpha_composite(background, rgba).convert("RGB")


def _integer_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Scale 16- or 32-bit integer grey values to 0..255.

    16-bit data (and 32-bit data that fits in 0..65535, which is how older PIL versions open
    16-bit PNGs) is scaled by the full 16-bit range; anything else by its own min and max.

    Args:
        values: Integer array.
        mode: The PIL mode it came from.

    Returns:
        ``uint8`` array of the same shape.
    """
    data = values.astype(np.float64)
    if mode.startswith("I;16") or (data.min() >= 0 and data.max() <= _UINT16_MAX):
        return np.rint(data * (255.0 / _UINT16_MAX)).astype(np.uint8)
    return _min_max_to_uint8(data)


def _float_to_uint8(values: np.ndarray) -> np.ndarray:
    """Scale float grey values to 0..255 by their finite minimum and maximum."""
    return _min_max_to_uint8(values.astype(np.float64))


def _min_max_to_uint8(data: np.ndarray) -> np.ndarray:
    """Map the finite range of ``data`` to 0..255; non-finite values and flat images give 0."""
    finite = np.isfinite(data)
    if not finite.any():
        return np.zeros(data.shape, np.uint8)
    low, high = float(data[finite].min()), float(data[finite].max())
    span = high - low if high > low else 1.0
    scaled = np.where(finite, (data - low) / span, 0.0)
    return np.rint(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)


def grey_to_rgb(grey: np.ndarray) -> Image.Image:
    """Build an RGB image from a grey ``uint8`` array.

    Args:
        grey: ``(H, W)`` values.

    Returns:
        RGB image of size ``W`` x ``H`` with the three channels equal.
    """
    return Image.fromarray(np.ascontiguousarray(np.stack([grey] * 3, axis=-1)))


# --------------------------------------------------------------------------- arrays


def to_pil(image: Image.Image | ArrayLike) -> Image.Image:
    """Convert a tensor, array or PIL image to an RGB PIL image.

    Float data is taken to be in ``[0, 1]`` and clamped (NaN becomes 0); ``uint8`` data is
    used as is, ``uint16`` is scaled by 65535, booleans become black and white. Accepted
    layouts: ``(H, W)``, ``(3, H, W)``, ``(H, W, 3)``, one or four channels instead of three
    (alpha is composited over white), and a leading batch axis of length 1. Channels-first
    wins when both end axes could hold the channels, except that a length-1 axis loses to
    3 or 4 channels at the other end.

    Args:
        image: The picture.

    Returns:
        RGB image.

    Raises:
        ValueError: The shape cannot be read as an image.
    """
    if isinstance(image, Image.Image):
        return to_rgb(image)
    pixels = _channels_last(to_numpy(image))
    pixels = _to_uint8(pixels)
    if pixels.shape[-1] == 1:
        return grey_to_rgb(pixels[..., 0])
    if pixels.shape[-1] == 4:
        return _flatten_on_white(Image.fromarray(np.ascontiguousarray(pixels)))
    return Image.fromarray(np.ascontiguousarray(pixels))


def _channels_last(pixels: np.ndarray) -> np.ndarray:
    """Return an ``(H, W, C)`` view with C in (1, 3, 4)."""
    if pixels.ndim == 4 and pixels.shape[0] == 1:
        pixels = pixels[0]
    if pixels.ndim == 2:
        return pixels[..., None]
    if pixels.ndim == 3:
        first, last = pixels.shape[0], pixels.shape[-1]
        for colour in (True, False):  # colour channels first, then a single grey channel
            wanted = (3, 4) if colour else (1,)
            if first in wanted:
                return np.moveaxis(pixels, 0, -1)
            if last in wanted:
                return pixels
    raise ValueError(
        f"cannot read shape {tuple(pixels.shape)} as an image; expected (H, W), (C, H, W) or "
        "(H, W, C) with C in 1, 3, 4"
    )


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Convert pixel values of any dtype to ``uint8``."""
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype == np.bool_:
        return pixels.astype(np.uint8) * 255
    if pixels.dtype == np.uint16:
        return np.rint(pixels * (255.0 / _UINT16_MAX)).astype(np.uint8)
    if np.issubdtype(pixels.dtype, np.integer):
        return np.clip(pixels, 0, 255).astype(np.uint8)
    data = np.nan_to_num(pixels.astype(np.float64), nan=0.0)
    return np.rint(np.clip(data, 0.0, 1.0) * 255.0).astype(np.uint8)


def to_numpy(values: ArrayLike) -> np.ndarray:
    """Turn a NumPy array, torch tensor or nested sequence into a NumPy array.

    Tensors are detached and moved to the CPU; half-precision floats become float32.

    Args:
        values: Array, tensor (any device) or nested sequence.

    Returns:
        Array of the same shape.
    """
    if hasattr(values, "detach") and hasattr(values, "cpu"):
        tensor = values.detach().cpu()
        if tensor.is_floating_point() and tensor.element_size() < 4:
            tensor = tensor.float()
        return tensor.numpy()
    return np.asarray(values)


# --------------------------------------------------------------------------- encoding


def png_bytes(image: Image.Image | ArrayLike) -> bytes:
    """Encode an image (or tensor/array, see :func:`to_pil`) as PNG.

    PIL images in a mode PNG can store (RGB, RGBA, L, ...) keep their mode; others are
    converted to RGB.

    Args:
        image: The picture.

    Returns:
        The PNG file contents.
    """
    if isinstance(image, Image.Image) and image.mode in _PNG_MODES:
        picture = image
    else:
        picture = to_pil(image)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def data_uri(image: Image.Image | ArrayLike) -> str:
    """Encode an image as a ``data:image/png;base64,...`` URI for self-contained HTML.

    Args:
        image: The picture (see :func:`png_bytes`).

    Returns:
        The data URI.
    """
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")


def save_png(image: Image.Image | ArrayLike, path: PathLike) -> Path:
    """Write an image as a PNG file atomically, creating missing parent folders.

    The data goes to a temporary file in the same folder, which then replaces ``path`` in
    one step, so readers never see a half-written file.

    Args:
        image: The picture (see :func:`png_bytes`).
        path: Destination file (written in PNG format whatever its extension).

    Returns:
        The destination path.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(target, png_bytes(image))
    return target
