"""Image input and output for cnnlens.

Reading: :func:`list_images` turns files and folders into a list of image paths and
:func:`load_image` opens one file as a fully decoded, upright RGB :class:`PIL.Image.Image`,
whatever its mode (grey, 1-bit, palette, alpha, CMYK, 16-bit, float). Every failure is reported
as :class:`cnnlens.core.errors.ImageError` naming the file and the reason.

Writing: :func:`to_pil`, :func:`save_png`, :func:`png_bytes` and :func:`data_uri` convert and
store pictures (colour maps live in :mod:`cnnlens.colormaps`).

:func:`sample_images` returns photographs bundled with scikit-image, for demos and tests.

Nothing here changes PIL's global settings (``Image.MAX_IMAGE_PIXELS``,
``ImageFile.LOAD_TRUNCATED_IMAGES``); the pixel limit is applied per call.
"""

from __future__ import annotations

import base64
import io
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .core.atomic import write_bytes_atomic
from .core.errors import ImageError

if TYPE_CHECKING:
    import torch

    ArrayLike = np.ndarray | torch.Tensor
else:
    ArrayLike = Any

PathLike = str | os.PathLike

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_SAMPLES",
    "IMAGE_EXTENSIONS",
    "SAMPLE_NAMES",
    "data_uri",
    "list_images",
    "load_image",
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
    write_bytes_atomic(target, png_bytes(image))
    return target
