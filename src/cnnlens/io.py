"""Image files for cnnlens: listing folders, loading and validating images, bundled samples.

Reading: :func:`list_images` turns files and folders into a list of image paths and
:func:`load_image` opens one file as a fully decoded, upright RGB :class:`PIL.Image.Image`,
whatever its mode (grey, 1-bit, palette, alpha, CMYK, 16-bit, float). Every failure is reported
as :class:`cnnlens.core.errors.ImageError` naming the file and the reason.

:func:`sample_images` returns photographs bundled with scikit-image, for demos and tests.

Writing and converting pictures (:func:`to_pil`, :func:`to_numpy`, :func:`save_png`,
:func:`png_bytes`, :func:`data_uri`) is :mod:`cnnlens.imaging`; those names are re-exported
here so ``cnnlens.io.save_png`` and the like keep working. Colour maps live in
:mod:`cnnlens.colormaps`.

Nothing here changes PIL's global settings (``Image.MAX_IMAGE_PIXELS``,
``ImageFile.LOAD_TRUNCATED_IMAGES``); the pixel limit is applied per call, and PIL's
``DecompressionBombWarning`` is silenced only around the ``Image.open`` that would raise it
(the limit here replaces it).
"""

from __future__ import annotations

import os
import re
import struct
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .core.errors import ImageError
from .imaging import (
    ArrayLike,
    PathLike,
    data_uri,
    grey_to_rgb,
    png_bytes,
    save_png,
    to_numpy,
    to_pil,
    to_rgb,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_SAMPLES",
    "IMAGE_EXTENSIONS",
    "SAMPLE_NAMES",
    "ArrayLike",
    "NoImagesError",
    "PathLike",
    "data_uri",
    "list_images",
    "load_image",
    "png_bytes",
    "sample_images",
    "save_png",
    "to_numpy",
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

#: Default pixel limit of :func:`load_image` (width times height): 100 megapixels, more than
#: almost any camera photo; PIL itself refuses only above 178,956,970 (see :func:`load_image`).
DEFAULT_MAX_PIXELS = 100_000_000

#: Photographs available from :func:`sample_images` (all ship inside scikit-image).
SAMPLE_NAMES: tuple[str, ...] = ("astronaut", "camera", "chelsea", "coffee", "rocket")

#: Names :func:`sample_images` returns when none are asked for.
DEFAULT_SAMPLES: tuple[str, ...] = ("chelsea", "coffee", "astronaut")


# --------------------------------------------------------------------------- listing files


class NoImagesError(ImageError):
    """The folders given hold no image file (and no file was named): nothing to process.

    ``str(error)`` is the one-line message ``no images found in FOLDER (...)``; ``path`` names
    the folder(s) and ``reason`` says what was looked for.
    """

    def __init__(self, folders: Sequence[Path]):
        self.looked_for = "looked for " + ", ".join(IMAGE_EXTENSIONS)
        super().__init__(", ".join(str(f) for f in folders), f"no images found ({self.looked_for})")

    def __str__(self) -> str:
        return f"no images found in {self.path} ({self.looked_for})"


def list_images(paths: Sequence[PathLike] | PathLike, recursive: bool = True) -> list[Path]:
    """Expand files and folders into the list of image files to process.

    Files named explicitly are kept whatever their extension, and so are paths that do not
    exist, so that a bad or missing file is reported once, when it is loaded (by
    :func:`load_image`, with the other unreadable files), instead of being skipped silently
    or stopping the whole list. Folders are expanded to the files whose extension is in
    :data:`IMAGE_EXTENSIONS` (case-insensitive), sorted by path; hidden entries (names
    starting with ``"."``) inside folders are skipped. The order of the arguments is kept and
    duplicates are dropped.

    Args:
        paths: Files and/or folders (a single path is accepted too).
        recursive: Descend into sub-folders of the given folders.

    Returns:
        The image paths (empty only when ``paths`` is).

    Raises:
        NoImagesError: Only folders were given and none holds an image file.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: list[Path] = []
    seen: set[Path] = set()
    folders: list[Path] = []
    for raw in paths:
        path = Path(raw)
        items = [path]
        if path.is_dir():
            folders.append(path)
            items = _images_in_folder(path, recursive)
        for item in items:
            if item not in seen:
                seen.add(item)
                found.append(item)
    if folders and not found:
        raise NoImagesError(folders)
    return found


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
            decoding them (default 100 million). PIL's own guard still rejects anything above
            twice ``PIL.Image.MAX_IMAGE_PIXELS`` (178,956,970 pixels by default), so a larger
            value cannot lift that limit.

    Returns:
        A new RGB image not tied to the file.

    Raises:
        ImageError: The file is missing, empty, not an image, truncated or corrupt, or too
            large (the message then states the limit). The message names the file once and
            gives the reason; ``error.reason`` is the reason alone.
    """
    file_path = Path(path)
    _check_regular_file(file_path)
    try:
        with _open_quietly(file_path) as img:
            _check_pixel_count(file_path, img.size, max_pixels)
            img.load()
            return to_rgb(_upright(img))
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(file_path, _over_pil_limit(exc, max_pixels)) from exc
    except Exception as exc:  # PIL raises many unrelated types for broken files
        raise ImageError(file_path, _describe_failure(exc)) from exc


def _open_quietly(path: Path) -> Image.Image:
    """``Image.open`` without PIL's ``DecompressionBombWarning``: the caller checks the size.

    The filter is set only for this call (``catch_warnings`` restores the previous ones).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(path)


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


_RAISE_LIMIT = "if you trust the file, raise the limit (--max-pixels, max_pixels= in Python)"


def _check_pixel_count(path: Path, size: tuple[int, int], max_pixels: int) -> None:
    """Raise :class:`ImageError` when an image of ``size`` exceeds ``max_pixels``."""
    width, height = size
    if width * height > max_pixels:
        raise ImageError(
            path,
            f"image is {width}x{height} = {width * height:,} pixels, more than the limit of "
            f"{max_pixels:,} (possible decompression bomb); {_RAISE_LIMIT}",
        )


def _over_pil_limit(exc: Exception, max_pixels: int) -> str:
    """The reason for an image PIL refused to open (above twice its ``MAX_IMAGE_PIXELS``)."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    count = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
    hard = 2 * Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS else None
    if hard is None or max_pixels < hard:
        return (
            f"image has {count}, more than the limit of {max_pixels:,} "
            f"(possible decompression bomb); {_RAISE_LIMIT}"
        )
    return (
        f"image has {count}, more than PIL's own limit of {hard:,}, which max_pixels "
        "cannot raise (possible decompression bomb)"
    )


def _describe_failure(exc: BaseException) -> str:
    """Turn an exception raised by PIL while reading a file into a human reason."""
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
        return grey_to_rgb(pixels.astype(np.uint8))
    return Image.fromarray(np.ascontiguousarray(pixels[..., :3].astype(np.uint8)))
