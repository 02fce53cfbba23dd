"""cnnlens.io: the messages for empty folders and images above the pixel limit, by hand."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from cnnlens import io as cio
from cnnlens.core.errors import ImageError

LOOKED_FOR = "looked for .bmp, .gif, .jpeg, .jpg, .png, .tif, .tiff, .webp"


def _header_only_png(path: Path, width: int, height: int) -> Path:
    """A grey PNG that claims ``width`` x ``height`` pixels but holds 16 bytes of data."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + data)
    return path


def test_empty_folder_says_no_images_found_in_it(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(cio.NoImagesError) as info:
        cio.list_images(empty)
    assert str(info.value) == f"no images found in {empty} ({LOOKED_FOR})"
    assert isinstance(info.value, ImageError) and info.value.path == str(empty)
    assert info.value.reason == f"no images found ({LOOKED_FOR})"


def test_folders_with_no_image_files_are_named_together(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    (a / "sub").mkdir(parents=True)
    b.mkdir()
    (a / "notes.txt").write_text("x")
    (a / ".hidden.png").write_bytes(b"x")  # hidden files do not count
    (a / "sub" / "deep.png").write_bytes(b"x")
    with pytest.raises(cio.NoImagesError) as info:
        cio.list_images([a, b], recursive=False)  # deep.png is below a/sub
    assert str(info.value) == f"no images found in {a}, {b} ({LOOKED_FOR})"
    assert cio.list_images([a, b]) == [a / "sub" / "deep.png"]


def test_an_empty_folder_next_to_a_file_is_no_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    photo = tmp_path / "photo.jpg"
    assert cio.list_images([empty, photo]) == [photo]  # kept even though it does not exist
    assert cio.list_images([]) == []


def test_121_megapixel_png_is_refused_before_decoding_with_the_limit_stated(
    tmp_path: Path,
) -> None:
    path = _header_only_png(tmp_path / "black.png", 11000, 11000)
    with pytest.raises(ImageError) as info:
        cio.load_image(path)
    reason = (
        "image is 11000x11000 = 121,000,000 pixels, more than the limit of 100,000,000 "
        "(possible decompression bomb); if you trust the file, raise the limit "
        "(--max-pixels, max_pixels= in Python)"
    )
    assert info.value.reason == reason
    assert str(info.value) == f"{path}: {reason}"
    assert cio.DEFAULT_MAX_PIXELS == 100_000_000


def test_limit_is_inclusive_and_per_call(tmp_path: Path) -> None:
    path = tmp_path / "small.png"
    Image.new("RGB", (25, 4), (9, 8, 7)).save(path)
    assert cio.load_image(path, max_pixels=100).size == (25, 4)  # 100 pixels: at the limit
    with pytest.raises(ImageError) as info:
        cio.load_image(path, max_pixels=99)
    assert info.value.reason.startswith("image is 25x4 = 100 pixels, more than the limit of 99 ")
