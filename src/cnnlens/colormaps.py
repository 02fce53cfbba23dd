"""Colour maps for attribution maps: colorize, overlay on a photo, colour bars.

Small built-in maps (no matplotlib needed), each a few anchor colours
interpolated linearly. Signed maps use a symmetric range around zero and a
diverging map whose centre is near white.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .imaging import ArrayLike, to_numpy, to_pil

__all__ = ["COLORMAPS", "colorbar", "colorize", "overlay"]

# Colour maps as anchor colours (hex RGB) at evenly spaced positions, interpolated linearly.
# "inferno" and "viridis" are sampled at 11 points of the perceptually uniform maps;
# "jet" is the classic MATLAB rainbow; "coolwarm" is a blue-white-red diverging map whose
# centre is near white so that zero attribution reads as "nothing".
_ANCHORS: dict[str, str] = {
    "inferno": "000004 160b39 420a68 6a176e 932667 bc3754 dd513a f37819 fca50a f6d746 fcffa4",
    "viridis": "440154 482475 414487 355f8d 2a788e 21918c 22a884 44bf70 7ad151 bddf26 fde725",
    "jet": "000080 0000ff 0080ff 00ffff 80ff80 ffff00 ff8000 ff0000 800000",
    "gray": "000000 ffffff",
    "coolwarm": "3b4cc0 8db0fe f5f5f5 f4997a b40426",
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
    data = _as_2d(values)
    low, high = _value_range(data, signed, vmin, vmax)
    table = _lookup_table(_default_cmap(cmap, signed))
    return table[_to_indices(data, low, high, signed)]


def _default_cmap(cmap: str | None, signed: bool) -> str:
    """Return ``cmap`` or the default map for signed/unsigned data."""
    if cmap is not None:
        return cmap
    return _DIVERGING_DEFAULT if signed else _SEQUENTIAL_DEFAULT


def _as_2d(values: ArrayLike) -> np.ndarray:
    """Float64 values with leading length-1 axes dropped; a 2-D array must remain."""
    data = to_numpy(values).astype(np.float64)
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
    if signed:
        if vmin is None and vmax is not None:
            vmin = -float(vmax)
        if vmax is None and vmin is not None:
            vmax = -float(vmin)
        extent = max(abs(v) for v in _finite_range(data))
        low, high = -extent, extent
    else:
        low, high = _finite_range(data)
    low = low if vmin is None else float(vmin)
    high = high if vmax is None else float(vmax)
    if low > high:
        raise ValueError(f"vmin ({low}) must not be larger than vmax ({high})")
    return low, high


def _finite_range(data: np.ndarray) -> tuple[float, float]:
    """``(min, max)`` of the finite values, ``(0.0, 0.0)`` when there are none."""
    finite = data[np.isfinite(data)]
    if not finite.size:
        return 0.0, 0.0
    return float(finite.min()), float(finite.max())


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
    colours = np.array([list(bytes.fromhex(c)) for c in anchors.split()], dtype=np.float64)
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
    data = _as_2d(values)
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
    bottom, top = _finite_range(data)
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
