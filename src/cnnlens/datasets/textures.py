"""Natural-looking backgrounds from scikit-image's bundled grey images.

A background is a random crop of one texture (grass, gravel, brick, ...) at a
random scale, flipped or turned, and coloured with two muted tints: dark pixels
take one tint, bright pixels another. Keeping the tints muted (low saturation)
is what keeps the class in the objects: object colours are saturated, so no
background can look like an object's colour, yet backgrounds still differ from
image to image in texture, scale, hue and brightness, and a model cannot use
them to guess the class.
"""

from __future__ import annotations

import colorsys
from functools import cache

import numpy as np
from PIL import Image

# Grey images shipped inside scikit-image (no download). "coins" and "checkerboard"
# are left out on purpose: their discs and squares would look like objects.
TEXTURES = ("grass", "gravel", "brick", "moon", "camera", "cell")


@cache
def texture(name: str) -> np.ndarray:
    """The named scikit-image sample as a read-only ``(H, W)`` uint8 array."""
    import skimage.data

    if name not in TEXTURES:
        raise ValueError(f"unknown texture {name!r}; choose from {', '.join(TEXTURES)}")
    img = np.ascontiguousarray(getattr(skimage.data, name)())
    if img.ndim != 2:
        raise ValueError(f"texture {name!r} is not a grey image")
    img.setflags(write=False)
    return img


def _tint(rng: np.random.Generator, hue: float, value: tuple[float, float]) -> np.ndarray:
    sat = rng.uniform(0.0, 0.35)
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, sat, rng.uniform(*value)), dtype=np.float32)


def background(
    rng: np.random.Generator,
    size: int,
    textures: tuple[str, ...],
    scale: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """One coloured texture crop.

    Args:
        rng: the sample's random generator (consumed in a fixed order).
        size: output side in pixels.
        textures: names to choose from (see :data:`TEXTURES`).
        scale: range of the crop side as a fraction of the texture's shorter side;
            small crops are magnified, large ones shrunk (scale jitter).

    Returns:
        ``(rgb, grey)``: ``(size, size, 3)`` float32 colours in [0, 1] and the
        ``(size, size)`` grey texture in [0, 1] (used to shade objects).
    """
    src = texture(textures[rng.integers(len(textures))])
    h, w = src.shape
    side = max(8, int(rng.uniform(*scale) * min(h, w)))
    top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    crop = src[top : top + side, left : left + side]
    crop = np.rot90(crop, k=int(rng.integers(4)))
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    grey = Image.fromarray(np.ascontiguousarray(crop)).resize((size, size), Image.BILINEAR)
    g = np.asarray(grey, dtype=np.float32) / 255.0
    # Contrast jitter around the mean, so some backgrounds are calm and some busy.
    g = np.clip((g - g.mean()) * rng.uniform(0.5, 1.1) + 0.5, 0.0, 1.0)
    hue = rng.random()
    dark = _tint(rng, hue, (0.05, 0.35))
    light = _tint(rng, hue + rng.uniform(-0.15, 0.15), (0.5, 0.9))
    rgb = dark + g[..., None] * (light - dark)
    return rgb.astype(np.float32), g
