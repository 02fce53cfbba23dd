"""Image input and output for cnnlens.

Reading: :func:`list_images` turns files and folders into a list of image paths and
:func:`load_image` opens one file as a fully decoded, upright RGB :class:`PIL.Image.Image`,
whatever its mode (grey, 1-bit, palette, alpha, CMYK, 16-bit, float). Every failure is reported
as :class:`cnnlens.errors.ImageError` naming the file and the reason.

Writing: :func:`colorize`, :func:`overlay` and :func:`colorbar` turn attribution maps into
pictures with small built-in colour maps (no matplotlib needed); :func:`to_pil`,
:func:`save_png`, :func:`png_bytes` and :func:`data_uri` convert and store results.

:func:`sample_images` returns photographs bundled with scikit-image, for demos and tests.

Nothing here changes PIL's global settings (``Image.MAX_IMAGE_PIXELS``,
``ImageFile.LOAD_TRUNCATED_IMAGES``); the pixel limit is applied per call.
"""

from __future__ import annotations

import base64
import io
import os
import secrets
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnlens.errors import ImageError

if TYPE_CHECKING:
    import torch

    ArrayLike = np.ndarray | torch.Tensor
else:
    ArrayLike = Any

PathLike = str | os.PathLike

__all__ = [
    "COLORMAPS",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_SAMPLES",
    "IMAGE_EXTENSIONS",
    "SAMPLE_NAMES",
    "colorbar",
    "colorize",
    "data_uri",
    "list_images",
    "load_image",
    "overlay",
    "png_bytes",
    "sample_images",
    "save_png",
    "to_pil",
]

#: File name endings (lower case, with the dot) that :func:`list_images` picks up in folders.
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".bmp",
    ".gif",
    ".jpeg",
    ".jpg",
    ".png",
    ".tif",
    ".tiff",
    ".webp",
)

#: Default pixel limit of :func:`load_image`: the size at which PIL itself refuses to open.
DEFAULT_MAX_PIXELS = 178_956_970

#: Photographs available from :func:`sample_images` (all ship inside scikit-image).
SAMPLE_NAMES: tuple[str, ...] = ("astronaut", "camera", "chelsea", "coffee", "rocket")

#: Names :func:`sample_images` returns when none are asked for.
DEFAULT_SAMPLES: tuple[str, ...] = ("chelsea", "coffee", "astronaut")

_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_PNG_MODES = frozenset({"1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"})
_WHITE = (255, 255, 255, 255)
_UINT16_MAX = 65535.0

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


# --------------------------------------------------------------------------- listing files


def list_images(paths: Sequence[PathLike] | PathLike, recursive: bool = True) -> list[Path]:
    """Expand files and folders into the list of image files to process.

    Files named explicitly are kept whatever their extension, so that a bad file is reported
    when it is loaded instead of being skipped silently. Folders are expanded to the files
    whose extension is in :data:`IMAGE_EXTENSIONS` (case-insensitive), sorted by path; hidden
    entries (names starting with ``"."``) inside folders are skipped. The order of the
    arguments is kept and duplicates are dropped.

    Args:
        paths: Files and/or folders (a single path is accepted too).
        recursive: Descend into sub-folders of the given folders.

    Returns:
        The image paths.

    Raises:
        ImageError: A path does not exist.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: list[Path] = []
    seen: set[Path] = set()
    for raw in paths:
        for item in _expand_path(Path(raw), recursive):
            if item not in seen:
                seen.add(item)
                found.append(item)
    return found


def _expand_path(path: Path, recursive: bool) -> list[Path]:
    """Return ``[path]`` for a file, the images inside a folder, or raise if missing."""
    if path.is_dir():
        return _images_in_folder(path, recursive)
    if path.exists():
        return [path]
    raise ImageError(path, "no such file or directory")


def _images_in_folder(folder: Path, recursive: bool) -> list[Path]:
    """Return the sorted image files inside ``folder``.

    Args:
        folder: Folder to scan.
        recursive: Whether to scan sub-folders too.

    Returns:
        Paths of files with an extension from :data:`IMAGE_EXTENSIONS`.
    """
    images: list[Path] = []
    for root, dirnames, filenames in os.walk(folder):
        dirnames[:] = [name for name in dirnames if not name.startswith(".")]
        images.extend(
            Path(root, name)
            for name in filenames
            if not name.startswith(".") and _has_image_extension(name)
        )
        if not recursive:
            break
    return sorted(images)


def _has_image_extension(name: str) -> bool:
    """Tell whether a file name ends with one of :data:`IMAGE_EXTENSIONS`."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


# --------------------------------------------------------------------------- loading


def load_image(path: PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open an image file as a fully decoded, upright RGB image.

    The EXIF orientation is applied; transparency is composited over white; CMYK, palette,
    grey and 1-bit images are converted; 16-bit grey values are scaled by the 16-bit range
    (0..65535 maps to 0..255) and float images by their own minimum and maximum. Only the
    first frame of animated or multi-page files is read.

    Args:
        path: The image file.
        max_pixels: Refuse images with more pixels than this (width times height), before
            decoding them. PIL's own guard still rejects anything above twice
            ``PIL.Image.MAX_IMAGE_PIXELS``, so a larger value cannot lift that limit.

    Returns:
        A new RGB image not tied to the file.

    Raises:
        ImageError: The file is missing, empty, not an image, truncated or corrupt, or too
            large. The message names the file and the reason.
    """
    file_path = Path(path)
    _check_regular_file(file_path)
    try:
        with Image.open(file_path) as img:
            _check_pixel_count(file_path, img.size, max_pixels)
            img.load()
            return _to_rgb(_upright(img))
    except ImageError:
        raise
    except Exception as exc:  # PIL raises many unrelated types for broken files
        raise ImageError(file_path, _describe_failure(exc)) from exc


def _check_regular_file(path: Path) -> None:
    """Raise :class:`ImageError` unless ``path`` is an existing, non-empty regular file."""
    try:
        if path.is_dir():
            raise ImageError(path, "is a directory, not an image file")
        if not path.exists():
            raise ImageError(path, "no such file or directory")
        if not path.is_file():
            raise ImageError(path, "not a regular file")
        size = path.stat().st_size
    except OSError as exc:
        raise ImageError(path, f"cannot access the file ({exc.strerror or exc})") from exc
    if size == 0:
        raise ImageError(path, "file is empty (0 bytes)")


def _check_pixel_count(path: Path, size: tuple[int, int], max_pixels: int) -> None:
    """Raise :class:`ImageError` when an image of ``size`` exceeds ``max_pixels``."""
    width, height = size
    if width * height > max_pixels:
        raise ImageError(
            path,
            f"image is {width}x{height} = {width * height} pixels, more than the limit of "
            f"{max_pixels} (possible decompression bomb); pass a larger max_pixels if the "
            "file is trusted",
        )


def _describe_failure(exc: BaseException) -> str:
    """Turn an exception raised by PIL while reading a file into a human reason."""
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"image has too many pixels (possible decompression bomb): {exc}"
    if isinstance(exc, UnidentifiedImageError):
        return "not an image file, or an image format PIL cannot read"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, MemoryError):
        return "not enough memory to decode the image"
    message = str(exc) or type(exc).__name__
    if "truncated" in message.lower() or isinstance(exc, EOFError):
        return f"file is truncated or incomplete ({message})"
    if isinstance(exc, (OSError, SyntaxError, ValueError, struct.error, zlib.error)):
        return f"corrupt or unsupported image data ({message})"
    return f"cannot read image ({type(exc).__name__}: {message})"


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag, if any, and return the upright image.

    Malformed EXIF data is ignored: it should not make an otherwise good image unreadable.
    """
    try:
        upright = ImageOps.exif_transpose(img)
    except Exception:  # broken EXIF blocks raise assorted errors inside PIL
        return img
    return img if upright is None else upright


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert an image of any PIL mode to a new 8-bit RGB image.

    Args:
        img: A loaded image.

    Returns:
        The RGB image.
    """
    if img.mode.startswith("I;16") or img.mode == "I":
        return _grey_array_to_rgb(_integer_to_uint8(np.asarray(img), img.mode))
    if img.mode == "F":
        return _grey_array_to_rgb(_float_to_uint8(np.asarray(img)))
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


def _grey_array_to_rgb(grey: np.ndarray) -> Image.Image:
    """Build an RGB image from a 2-D ``uint8`` array."""
    return Image.fromarray(np.ascontiguousarray(np.stack([grey] * 3, axis=-1)))


# --------------------------------------------------------------------------- sample images


def sample_images(names: Sequence[str] | None = None) -> dict[str, Image.Image]:
    """Return photographs bundled with scikit-image as RGB images (no network needed).

    Args:
        names: Which images, from :data:`SAMPLE_NAMES`; defaults to :data:`DEFAULT_SAMPLES`
            ("chelsea" 451x300, "coffee" 600x400, "astronaut" 512x512).

    Returns:
        Name to RGB image, in the order asked for.

    Raises:
        ValueError: A name is not one of :data:`SAMPLE_NAMES`.
    """
    if names is None:
        names = DEFAULT_SAMPLES
    elif isinstance(names, str):
        names = [names]
    unknown = [name for name in names if name not in SAMPLE_NAMES]
    if unknown:
        raise ValueError(
            f"unknown sample image(s) {', '.join(map(repr, unknown))}; "
            f"choose from {', '.join(SAMPLE_NAMES)}"
        )
    return {name: _sample_image(name) for name in names}


def _sample_image(name: str) -> Image.Image:
    """Load one scikit-image sample as an RGB image."""
    from skimage import data as skimage_data  # imported lazily: slow and rarely needed

    pixels = np.asarray(getattr(skimage_data, name)())
    if pixels.ndim == 2:
        return _grey_array_to_rgb(pixels.astype(np.uint8))
    return Image.fromarray(np.ascontiguousarray(pixels[..., :3].astype(np.uint8)))


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


# --------------------------------------------------------------------------- conversion


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
        return _to_rgb(image)
    pixels = _channels_last(_to_numpy(image))
    pixels = _to_uint8(pixels)
    if pixels.shape[-1] == 1:
        return _grey_array_to_rgb(pixels[..., 0])
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


def _to_numpy(values: ArrayLike) -> np.ndarray:
    """Turn a NumPy array, torch tensor or nested sequence into a NumPy array.

    Tensors are detached and moved to the CPU; half-precision floats become float32.
    """
    if hasattr(values, "detach") and hasattr(values, "cpu"):
        tensor = values.detach().cpu()
        if tensor.is_floating_point() and tensor.element_size() < 4:
            tensor = tensor.float()
        return tensor.numpy()
    return np.asarray(values)


# --------------------------------------------------------------------------- writing


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
    _write_atomically(target, png_bytes(image))
    return target


def _write_atomically(target: Path, data: bytes) -> None:
    """Write ``data`` to a temporary sibling of ``target``, then rename it over ``target``."""
    fd, temp = _create_sibling_temp(target)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _create_sibling_temp(target: Path) -> tuple[int, Path]:
    """Create a new hidden file next to ``target``; return its descriptor and path.

    The file is created with the usual permissions (0o666 minus the umask), unlike
    :mod:`tempfile`, which makes files readable by the owner only.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        temp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(temp, flags, 0o666), temp
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a temporary file next to {target}")
