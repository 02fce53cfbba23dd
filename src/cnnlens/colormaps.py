"""Colour maps for attribution maps: colorize, overlay on a photo, colour bars.

Small built-in maps (no matplotlib needed), each a few anchor colours
interpolated linearly. Signed maps use a symmetric range around zero and a
diverging map whose centre is near white.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .io import ArrayLike, _to_numpy, to_pil

__all__ = ["COLORMAPS", "colorbar", "colorize", "overlay"]

# Colour maps as anchor colours at evenly spaced positions, interpolated linearly.
# "inferno" and "viridis" are sampled at 11 points of the perceptually uniform maps;
# "jet" is the classic MATLAB rainbow; "coolwarm" is a blue-white-red diverging map whose
# centre is near white so that zero attribution reads as "nothing".
_ANCHORS: dict[str, tuple[tuple[int, int, int], ...]] = {
    "inferno": (
        (0, 0, 4),
        (22, 11, 57),
        (66, 10, 104),
        (106, 23, 110),
        (147, 38, 103),
        (188, 55, 84),
        (221, 81, 58),
        (243, 120, 25),
        (252, 165, 10),
        (246, 215, 70),
        (252, 255, 164),
    ),
    "viridis": (
        (68, 1, 84),
        (72, 36, 117),
        (65, 68, 135),
        (53, 95, 141),
        (42, 120, 142),
        (33, 145, 140),
        (34, 168, 132),
        (68, 191, 112),
        (122, 209, 81),
        (189, 223, 38),
        (253, 231, 37),
    ),
    "jet": (
        (0, 0, 128),
        (0, 0, 255),
        (0, 128, 255),
        (0, 255, 255),
        (128, 255, 128),
        (255, 255, 0),
        (255, 128, 0),
        (255, 0, 0),
        (128, 0, 0),
    ),
    "gray": ((0, 0, 0), (255, 255, 255)),
    "coolwarm": (
        (59, 76, 192),
        (141, 176, 254),
        (245, 245, 245),
        (244, 153, 122),
        (180, 4, 38),
    ),
}

#: Names accepted by the ``cmap`` arguments (append ``"_r"`` to reverse a map).
COLORMAPS: tuple[str, ...] = tuple(_ANCHORS)

_SEQUENTIAL_DEFAULT = "inferno"
_DIVERGING_DEFAULT = "coolwarm"


# --------------------------------------------------------------------------- colour maps


def colorize(
    values: ArrayLike,
    cmap: str | None = None,
    signed: bool = False,
    vmin: float | None = None,
    vmax: float | None = None,
) -> np.ndarray:
    """Map a 2-D array of values to colours.

    The range is ``[min, max]`` of the finite values, or ``[-m, m]`` with ``m`` the largest
    absolute value when ``signed`` is true, so that zero sits at the centre of the map.
    ``vmin``/``vmax`` override either end (with ``signed``, giving only one mirrors it).
    Values outside the range are clipped; NaNs are treated as 0.

    Args:
        values: ``(H, W)`` array or tensor; leading axes of length 1 are dropped.
        cmap: One of :data:`COLORMAPS`, optionally with ``"_r"`` to reverse it. Defaults to
            ``"inferno"``, or ``"coolwarm"`` when ``signed`` is true.
        signed: Use a range symmetric around zero (and a diverging map by default).
        vmin: Value mapped to the first colour.
        vmax: Value mapped to the last colour.

    Returns:
        ``uint8`` array of shape ``(H, W, 3)``.

    Raises:
        ValueError: Unknown colour map, wrong shape, or ``vmin > vmax``.
    """
    data = _as_2d(_to_numpy(values).astype(np.float64))
    low, high = _value_range(data, signed, vmin, vmax)
    table = _lookup_table(_default_cmap(cmap, signed))
    return table[_to_indices(data, low, high, signed)]


def _default_cmap(cmap: str | None, signed: bool) -> str:
    """Return ``cmap`` or the default map for signed/unsigned data."""
    if cmap is not None:
        return cmap
    return _DIVERGING_DEFAULT if signed else _SEQUENTIAL_DEFAULT


def _as_2d(data: np.ndarray) -> np.ndarray:
    """Drop leading length-1 axes and check that a 2-D array remains."""
    while data.ndim > 2 and data.shape[0] == 1:
        data = data[0]
    if data.ndim != 2:
        raise ValueError(f"expected a 2-D map of values (H, W), got shape {tuple(data.shape)}")
    return data


def _value_range(
    data: np.ndarray, signed: bool, vmin: float | None, vmax: float | None
) -> tuple[float, float]:
    """Work out the value range mapped onto the colour map.

    Args:
        data: The values.
        signed: Whether the range is symmetric around zero.
        vmin: Explicit lower end, or None.
        vmax: Explicit upper end, or None.

    Returns:
        ``(low, high)``.
    """
    finite = data[np.isfinite(data)]
    if signed:
        if vmin is None and vmax is not None:
            vmin = -float(vmax)
        if vmax is None and vmin is not None:
            vmax = -float(vmin)
        extent = float(np.abs(finite).max()) if finite.size else 0.0
        low, high = -extent, extent
    else:
        low = float(finite.min()) if finite.size else 0.0
        high = float(finite.max()) if finite.size else 0.0
    low = low if vmin is None else float(vmin)
    high = high if vmax is None else float(vmax)
    if low > high:
        raise ValueError(f"vmin ({low}) must not be larger than vmax ({high})")
    return low, high


def _to_indices(data: np.ndarray, low: float, high: float, signed: bool) -> np.ndarray:
    """Normalise values to ``[0, 1]`` and turn them into indices of a 256-entry table."""
    data = np.where(np.isnan(data), 0.0, data)
    if high > low:
        scaled = (data - low) / (high - low)
    else:  # a flat range: the centre for signed data, the first colour otherwise
        scaled = np.full(data.shape, 0.5 if signed else 0.0)
    return np.rint(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.intp)


def _lookup_table(cmap: str) -> np.ndarray:
    """Build the 256-colour table of a colour map.

    Args:
        cmap: A name from :data:`COLORMAPS`, optionally ending in ``"_r"``.

    Returns:
        ``uint8`` array of shape ``(256, 3)``.

    Raises:
        ValueError: Unknown name.
    """
    name = cmap.lower()
    reverse = name.endswith("_r")
    anchors = _ANCHORS.get(name[:-2] if reverse else name)
    if anchors is None:
        raise ValueError(f"unknown colour map {cmap!r}; choose from {', '.join(COLORMAPS)}")
    colours = np.asarray(anchors, dtype=np.float64)
    positions = np.linspace(0.0, 1.0, len(colours))
    steps = np.linspace(0.0, 1.0, 256)
    table = np.stack([np.interp(steps, positions, colours[:, c]) for c in range(3)], axis=-1)
    table = np.rint(table).astype(np.uint8)
    return table[::-1].copy() if reverse else table


def overlay(
    image: Image.Image | ArrayLike,
    values: ArrayLike,
    alpha: float = 0.5,
    cmap: str | None = None,
    signed: bool = False,
    vmin: float | None = None,
    vmax: float | None = None,
) -> Image.Image:
    """Blend a colour-mapped attribution map over an image.

    Args:
        image: PIL image, or float array/tensor ``(3, H, W)`` / ``(H, W, 3)`` in ``[0, 1]``.
        values: ``(h, w)`` map; resized bilinearly to the image size when it differs.
        alpha: Weight of the colours (0 shows only the image, 1 only the map).
        cmap: Colour map name (see :func:`colorize`).
        signed: Symmetric range around zero (see :func:`colorize`). Signed maps
            are blended with a per-pixel weight ``alpha * |v| / max|v|`` (scaled up
            so half the range is fully ``alpha``), so values near zero leave the
            photo visible instead of washing it out in the map's middle colour.
        vmin: Lower end of the value range (see :func:`colorize`).
        vmax: Upper end of the value range (see :func:`colorize`).

    Returns:
        RGB image of the size of ``image``.

    Raises:
        ValueError: ``alpha`` outside ``[0, 1]`` or bad shapes.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    base = to_pil(image)
    data = _as_2d(_to_numpy(values).astype(np.float64))
    low, high = _value_range(data, signed, vmin, vmax)
    data = _resize_map(data, base.size)
    colours = colorize(data, cmap=cmap, signed=signed, vmin=low, vmax=high)
    weight: float | np.ndarray = alpha
    if signed:
        scale = max(abs(low), abs(high), 1e-12)
        strength = np.clip(2.0 * np.abs(np.nan_to_num(data)) / scale, 0.0, 1.0)
        weight = (alpha * strength)[..., None]
    blended = (1.0 - weight) * np.asarray(base, dtype=np.float64) + weight * colours
    return Image.fromarray(np.rint(blended).astype(np.uint8))


def _resize_map(data: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a 2-D float map bilinearly to ``size`` (width, height).

    NaNs become 0 and infinities the nearest finite extreme first, so they do not spread.
    """
    width, height = size
    if data.shape == (height, width):
        return data
    finite = data[np.isfinite(data)]
    top = float(finite.max()) if finite.size else 0.0
    bottom = float(finite.min()) if finite.size else 0.0
    clean = np.nan_to_num(data, nan=0.0, posinf=top, neginf=bottom).astype(np.float32)
    resized = Image.fromarray(clean).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float64)


def colorbar(
    cmap: str | None = None, width: int = 256, height: int = 12, signed: bool = False
) -> Image.Image:
    """Draw a horizontal colour strip, lowest value on the left.

    Args:
        cmap: Colour map name (defaults as in :func:`colorize`).
        width: Width in pixels.
        height: Height in pixels.
        signed: Use the diverging default map.

    Returns:
        RGB image of ``width`` x ``height``.
    """
    if width < 1 or height < 1:
        raise ValueError(f"colorbar size must be positive, got {width}x{height}")
    ramp = np.tile(np.linspace(0.0, 1.0, width), (height, 1))
    colours = colorize(ramp, cmap=_default_cmap(cmap, signed), vmin=0.0, vmax=1.0)
    return Image.fromarray(colours)
