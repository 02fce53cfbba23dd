"""Tests of cnnlens.io and cnnlens.imaging; every fixture is built in tmp_path with PIL, NumPy."""

from __future__ import annotations

import base64
import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlens import colormaps as ccm
from cnnlens import imaging as cimg
from cnnlens import io as cio
from cnnlens.core.errors import ImageError

# --------------------------------------------------------------------------- fixture helpers


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _raw_png(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes) -> bytes:
    """Assemble a PNG by hand (PIL cannot write 16-bit RGB or lie about the size)."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(rows))
        + _png_chunk(b"IEND", b"")
    )


def _png16_rgb(pixels: np.ndarray) -> bytes:
    """16-bit RGB PNG from an (H, W, 3) uint16 array."""
    height, width, _ = pixels.shape
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(height))
    return _raw_png(width, height, 16, 2, rows)


def _save(tmp_path: Path, name: str, img: Image.Image, **kwargs) -> Path:
    path = tmp_path / name
    img.save(path, **kwargs)
    return path


def _pixel(img: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    return tuple(int(v) for v in img.getpixel(xy))


def _close(actual, expected, tol: int) -> bool:
    return all(abs(int(a) - int(e)) <= tol for a, e in zip(actual, expected, strict=True))


# --------------------------------------------------------------------------- list_images


def test_list_images_recursion_sorting_and_explicit_files(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".hidden").mkdir()
    for rel in ["b.png", "a.JPG", "sub/c.webp", "sub/deeper/d.tiff", ".hidden/e.png", ".f.png"]:
        (root / rel).write_bytes(b"x")
    (root / "notes.txt").write_text("not an image")
    odd = tmp_path / "photo.weird"
    odd.write_bytes(b"x")

    found = cio.list_images([root, odd])
    assert found == [
        root / "a.JPG",
        root / "b.png",
        root / "sub" / "c.webp",
        root / "sub" / "deeper" / "d.tiff",
        odd,
    ]
    assert cio.list_images([root], recursive=False) == [root / "a.JPG", root / "b.png"]
    # a single path, order of arguments kept, duplicates dropped
    assert cio.list_images(str(odd)) == [odd]
    assert cio.list_images([odd, root / "b.png", odd]) == [odd, root / "b.png"]


def test_list_images_keeps_a_missing_path_for_load_image_to_report_once(tmp_path: Path) -> None:
    good = _save(tmp_path, "a.png", Image.new("RGB", (2, 2)))
    missing = tmp_path / "nope.png"
    assert cio.list_images([tmp_path, missing]) == [good, missing]
    with pytest.raises(ImageError) as info:
        cio.load_image(missing)
    assert info.value.path == str(missing) and info.value.reason == "no such file or directory"
    assert str(info.value) == f"{missing}: no such file or directory"  # the path once


def test_image_extensions_are_lowercase_with_dot() -> None:
    for ext in (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"):
        assert ext in cio.IMAGE_EXTENSIONS
    assert all(e.startswith(".") and e == e.lower() for e in cio.IMAGE_EXTENSIONS)


# --------------------------------------------------------------------------- load_image: modes


@pytest.mark.parametrize(
    ("fmt", "suffix", "tol"),
    [
        ("PNG", "png", 0),
        ("JPEG", "jpg", 6),
        ("WEBP", "webp", 8),
        ("BMP", "bmp", 0),
        ("TIFF", "tif", 0),
    ],
)
def test_load_rgb_formats(tmp_path: Path, fmt: str, suffix: str, tol: int) -> None:
    arr = np.zeros((24, 32, 3), np.uint8)
    arr[:, :16] = (200, 30, 60)
    arr[:, 16:] = (10, 120, 250)
    path = _save(tmp_path, f"img.{suffix}", Image.fromarray(arr), format=fmt, quality=95)
    img = cio.load_image(path)
    assert img.mode == "RGB" and img.size == (32, 24)
    assert _close(_pixel(img, (4, 12)), (200, 30, 60), tol)
    assert _close(_pixel(img, (28, 12)), (10, 120, 250), tol)


def test_load_greyscale_and_one_bit(tmp_path: Path) -> None:
    grey = _save(tmp_path, "grey.png", Image.new("L", (5, 4), 100))
    img = cio.load_image(grey)
    assert img.mode == "RGB" and _pixel(img, (2, 2)) == (100, 100, 100)

    bits = Image.new("1", (4, 2), 0)
    bits.putpixel((3, 1), 1)
    img = cio.load_image(_save(tmp_path, "bits.png", bits))
    assert img.mode == "RGB"
    assert _pixel(img, (0, 0)) == (0, 0, 0)
    assert _pixel(img, (3, 1)) == (255, 255, 255)


def test_load_palette_and_palette_with_transparency(tmp_path: Path) -> None:
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30, 250, 5, 5] + [0] * (256 * 3 - 9))
    pal.putpixel((0, 0), 2)
    img = cio.load_image(_save(tmp_path, "pal.png", pal))
    assert img.mode == "RGB"
    assert _pixel(img, (1, 1)) == (10, 200, 30)
    assert _pixel(img, (0, 0)) == (250, 5, 5)

    # index 0 is black but transparent: it must come out white
    pal.putpixel((3, 3), 0)
    for name in ("trans.png", "trans.gif"):
        img = cio.load_image(_save(tmp_path, name, pal, transparency=0))
        assert img.mode == "RGB"
        assert _pixel(img, (3, 3)) == (255, 255, 255), name
        assert _pixel(img, (1, 1)) == (10, 200, 30), name


def test_load_alpha_is_composited_over_white(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (3, 1), (255, 0, 0, 128))
    rgba.putpixel((1, 0), (0, 0, 255, 0))
    rgba.putpixel((2, 0), (0, 255, 0, 255))
    img = cio.load_image(_save(tmp_path, "rgba.png", rgba))
    assert img.mode == "RGB"
    assert _close(_pixel(img, (0, 0)), (255, 127, 127), 1)
    assert _pixel(img, (1, 0)) == (255, 255, 255)
    assert _pixel(img, (2, 0)) == (0, 255, 0)

    la = Image.new("LA", (2, 1), (0, 0))
    la.putpixel((1, 0), (0, 255))
    img = cio.load_image(_save(tmp_path, "la.png", la))
    assert _pixel(img, (0, 0)) == (255, 255, 255)
    assert _pixel(img, (1, 0)) == (0, 0, 0)


@pytest.mark.parametrize(("fmt", "suffix", "tol"), [("JPEG", "jpg", 6), ("TIFF", "tif", 0)])
def test_load_cmyk(tmp_path: Path, fmt: str, suffix: str, tol: int) -> None:
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red ink
    cmyk.paste((0, 0, 0, 255), (8, 0, 16, 16))  # black
    path = _save(tmp_path, f"cmyk.{suffix}", cmyk, format=fmt, quality=95)
    with Image.open(path) as raw:
        assert raw.mode == "CMYK"
    img = cio.load_image(path)
    assert img.mode == "RGB"
    assert _close(_pixel(img, (3, 8)), (255, 0, 0), tol)
    assert _close(_pixel(img, (12, 8)), (0, 0, 0), tol)


def _gradient16(width: int = 256) -> np.ndarray:
    row = np.linspace(0, 65535, width).round().astype(np.uint16)
    return np.repeat(row[None, :], 3, axis=0)


def _assert_full_range_gradient(img: Image.Image) -> None:
    assert img.mode == "RGB"
    arr = np.asarray(img)
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()
    row = arr[1, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255
    assert (np.diff(row) >= 0).all()
    assert len(np.unique(row)) > 200  # a real gradient, not clipped to white
    assert abs(row[len(row) // 2] - 128) <= 1


@pytest.mark.parametrize("suffix", ["png", "tif"])
def test_load_16bit_grey_spans_full_range(tmp_path: Path, suffix: str) -> None:
    src = Image.fromarray(_gradient16())
    assert src.mode == "I;16"
    path = _save(tmp_path, f"g16.{suffix}", src)
    with Image.open(path) as raw:
        assert raw.mode in ("I;16", "I")
    _assert_full_range_gradient(cio.load_image(path))


def test_load_16bit_big_endian_tiff(tmp_path: Path) -> None:
    data = _gradient16()
    src = Image.frombytes("I;16B", (data.shape[1], data.shape[0]), data.astype(">u2").tobytes())
    path = _save(tmp_path, "g16b.tif", src)
    with Image.open(path) as raw:
        assert raw.mode == "I;16B"
    _assert_full_range_gradient(cio.load_image(path))


def test_load_32bit_integer_modes(tmp_path: Path) -> None:
    in16 = Image.fromarray(_gradient16().astype(np.int32))
    assert in16.mode == "I"
    _assert_full_range_gradient(cio.load_image(_save(tmp_path, "i32.tif", in16)))

    wide = Image.fromarray(np.array([[-1000, 0, 99000]], np.int32))
    img = cio.load_image(_save(tmp_path, "wide.tif", wide))
    assert [_pixel(img, (x, 0))[0] for x in range(3)] == [0, 3, 255]  # 1000 / 100000 * 255 = 2.55


def test_load_16bit_rgb_png(tmp_path: Path) -> None:
    pixels = np.zeros((2, 3, 3), np.uint16)
    pixels[0, 0] = (65535, 0, 0)
    pixels[0, 1] = (0, 32896, 0)
    pixels[1, 2] = (2570, 5140, 65535)
    path = tmp_path / "rgb16.png"
    path.write_bytes(_png16_rgb(pixels))
    img = cio.load_image(path)
    assert img.mode == "RGB" and img.size == (3, 2)
    assert _pixel(img, (0, 0)) == (255, 0, 0)
    assert _close(_pixel(img, (1, 0)), (0, 128, 0), 1)
    assert _close(_pixel(img, (2, 1)), (10, 20, 255), 1)


def test_load_float_is_min_max_scaled(tmp_path: Path) -> None:
    values = np.array([[-1.0, 1.0, 3.0]], np.float32)
    img = cio.load_image(_save(tmp_path, "float.tif", Image.fromarray(values)))
    assert img.mode == "RGB"
    assert [_pixel(img, (x, 0)) for x in range(3)] == [(0,) * 3, (128,) * 3, (255,) * 3]


def test_load_applies_exif_orientation(tmp_path: Path) -> None:
    stored = Image.new("RGB", (40, 20), (255, 255, 255))
    stored.paste((255, 0, 0), (0, 0, 8, 8))  # marker in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # display = stored rotated 90 degrees clockwise
    path = _save(tmp_path, "rotated.jpg", stored, exif=exif.tobytes(), quality=95)
    img = cio.load_image(path)
    assert img.mode == "RGB"
    assert img.size == (20, 40)
    assert _close(_pixel(img, (16, 3)), (255, 0, 0), 30)  # now top-right
    assert _close(_pixel(img, (3, 3)), (255, 255, 255), 30)
    assert _close(_pixel(img, (3, 36)), (255, 255, 255), 30)


def test_loaded_image_is_independent_of_file(tmp_path: Path) -> None:
    path = _save(tmp_path, "x.png", Image.new("RGB", (4, 4), (1, 2, 3)))
    img = cio.load_image(path)
    path.unlink()
    assert _pixel(img, (0, 0)) == (1, 2, 3)
    assert img.copy().tobytes() == bytes([1, 2, 3]) * 16


# --------------------------------------------------------------------------- load_image: errors


def _expect_error(path: Path, *words: str, **kwargs) -> ImageError:
    with pytest.raises(ImageError) as info:
        cio.load_image(path, **kwargs)
    message = str(info.value)
    assert path.name in message
    for word in words:
        assert word in message.lower(), message
    assert isinstance(info.value, ValueError)
    return info.value


def test_error_missing_file(tmp_path: Path) -> None:
    _expect_error(tmp_path / "missing.png", "no such file")


def test_error_directory(tmp_path: Path) -> None:
    folder = tmp_path / "folder.png"
    folder.mkdir()
    _expect_error(folder, "directory")


def test_error_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    _expect_error(empty, "empty")


def test_error_text_file(tmp_path: Path) -> None:
    text = tmp_path / "readme.png"
    text.write_text("this is not an image\n" * 20)
    _expect_error(text, "not an image")


@pytest.mark.parametrize(("fmt", "suffix"), [("JPEG", "jpg"), ("PNG", "png")])
def test_error_truncated(tmp_path: Path, fmt: str, suffix: str) -> None:
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    noise.save(buffer, format=fmt)
    data = buffer.getvalue()
    path = tmp_path / f"cut.{suffix}"
    path.write_bytes(data[: len(data) // 2])
    _expect_error(path, "truncated")


def test_error_decompression_bomb_by_local_limit(tmp_path: Path) -> None:
    before = Image.MAX_IMAGE_PIXELS
    path = _save(tmp_path, "bomb.png", Image.new("RGB", (20, 20)))
    error = _expect_error(path, "pixels", "limit", max_pixels=100)
    assert "20x20" in str(error)
    assert cio.load_image(path, max_pixels=400).size == (20, 20)
    assert Image.MAX_IMAGE_PIXELS == before  # no global change


def test_error_bomb_header_is_rejected_before_decoding(tmp_path: Path) -> None:
    # the header claims 5000 x 5000 pixels but there is almost no data
    path = tmp_path / "header.png"
    path.write_bytes(_raw_png(5000, 5000, 8, 2, b"\x00" * 16))
    _expect_error(path, "limit", max_pixels=1_000_000)
    _expect_error(path, "truncated")  # within the limit: decoding starts, data runs out

    huge = tmp_path / "huge.png"
    huge.write_bytes(_raw_png(20000, 20000, 8, 2, b"\x00" * 16))
    _expect_error(huge, "pixels")  # above the default limit


def test_error_above_pils_own_limit_states_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.png"  # 400 MP: PIL refuses it inside Image.open
    path.write_bytes(_raw_png(20000, 20000, 8, 2, b"\x00" * 16))
    error = _expect_error(path)
    assert error.reason == (
        "image has 400,000,000 pixels, more than the limit of 100,000,000 (possible "
        "decompression bomb); if you trust the file, raise the limit (--max-pixels, "
        "max_pixels= in Python)"
    )
    error = _expect_error(path, max_pixels=10**12)
    assert error.reason == (
        "image has 400,000,000 pixels, more than PIL's own limit of 178,956,970, which "
        "max_pixels cannot raise (possible decompression bomb)"
    )


def test_pil_bomb_warning_never_reaches_the_caller(tmp_path: Path) -> None:
    medium = tmp_path / "medium.png"  # 110 MP: between PIL's warning and error sizes
    medium.write_bytes(_raw_png(11000, 10000, 8, 0, b"\x00" * 16))  # grey: 110 MB if decoded
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _expect_error(medium, "110,000,000 pixels", "limit of 100,000,000")
        _expect_error(medium, "truncated", max_pixels=110_000_000)  # decoding started
    assert [w.category.__name__ for w in caught] == []
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # a strict caller
        _expect_error(medium, "truncated", max_pixels=110_000_000)


def test_error_corrupt_data(tmp_path: Path) -> None:
    path = tmp_path / "garbage.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\xff" * 64)
    _expect_error(path)


# --------------------------------------------------------------------------- sample_images


def test_sample_images_defaults() -> None:
    images = cio.sample_images()
    assert list(images) == ["chelsea", "coffee", "astronaut"]
    assert all(img.mode == "RGB" for img in images.values())
    assert images["chelsea"].size == (451, 300)
    assert images["coffee"].size == (600, 400)
    assert images["astronaut"].size == (512, 512)


def test_sample_images_grey_and_unknown() -> None:
    camera = cio.sample_images(["camera"])["camera"]
    assert camera.mode == "RGB" and camera.size == (512, 512)
    arr = np.asarray(camera)
    assert (arr[..., 0] == arr[..., 2]).all()
    with pytest.raises(ValueError, match="chelsea") as info:
        cio.sample_images(["chelsea", "dog"])
    assert "'dog'" in str(info.value)


# --------------------------------------------------------------------------- colour maps


@pytest.mark.parametrize(
    ("cmap", "first", "last"),
    [
        ("inferno", (0, 0, 4), (252, 255, 164)),
        ("gray", (0, 0, 0), (255, 255, 255)),
        ("jet", (0, 0, 128), (128, 0, 0)),
        ("coolwarm", (59, 76, 192), (180, 4, 38)),
    ],
)
def test_colorize_endpoints(cmap: str, first: tuple, last: tuple) -> None:
    values = np.array([[3.0, 5.0], [7.0, 11.0]])
    out = ccm.colorize(values, cmap=cmap)
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    assert tuple(out[0, 0]) == first
    assert tuple(out[1, 1]) == last
    rev = ccm.colorize(values, cmap=cmap + "_r")
    assert tuple(rev[0, 0]) == last and tuple(rev[1, 1]) == first


def test_colormaps_listed() -> None:
    assert {"inferno", "jet", "gray", "coolwarm"} <= set(ccm.COLORMAPS)
    with pytest.raises(ValueError, match="inferno"):
        ccm.colorize(np.zeros((2, 2)), cmap="rainbowz")


def test_inferno_lightness_increases() -> None:
    ramp = ccm.colorize(np.linspace(0, 1, 256)[None, :], cmap="inferno")[0].astype(float)
    luma = ramp @ np.array([0.2126, 0.7152, 0.0722])
    assert (np.diff(luma) > -1.0).all()
    assert luma[-1] - luma[0] > 200


def test_inferno_close_to_matplotlib() -> None:
    matplotlib = pytest.importorskip("matplotlib")
    steps = np.linspace(0, 1, 256)
    ours = ccm.colorize(steps[None, :], cmap="inferno")[0].astype(int)
    theirs = np.rint(matplotlib.colormaps["inferno"](steps)[:, :3] * 255).astype(int)
    assert np.abs(ours - theirs).max() <= 16


def test_colorize_signed_uses_symmetric_coolwarm() -> None:
    values = np.array([[-2.0, 0.0, 1.0, np.nan]])
    out = ccm.colorize(values, signed=True)
    negative, zero, positive, nan = (tuple(int(c) for c in px) for px in out[0])
    assert negative == (59, 76, 192)  # -2 is the lower end of [-2, 2]
    assert min(zero) >= 220 and max(zero) - min(zero) <= 10  # white-ish centre
    assert positive[0] > positive[2] + 40  # half way to red
    assert positive != (180, 4, 38)
    assert nan == zero  # NaN counts as 0
    assert tuple(ccm.colorize(np.zeros((1, 1)), signed=True)[0, 0]) == zero


def test_colorize_range_options_and_tensors() -> None:
    values = np.array([[0.0, 0.5, 1.0, 2.0]])
    clipped = ccm.colorize(values, cmap="gray", vmin=0.0, vmax=1.0)
    assert [int(v) for v in clipped[0, :, 0]] == [0, 128, 255, 255]
    tensor = torch.tensor([[[0.0, 0.5, 1.0, 2.0]]], dtype=torch.float16)
    assert np.array_equal(ccm.colorize(tensor, cmap="gray"), ccm.colorize(values, cmap="gray"))
    flat = ccm.colorize(np.full((2, 2), 3.0), cmap="gray")
    assert (flat == 0).all()
    with pytest.raises(ValueError, match="vmin"):
        ccm.colorize(values, vmin=2.0, vmax=1.0)
    with pytest.raises(ValueError, match="2-D"):
        ccm.colorize(np.zeros((2, 2, 2)))


def test_colorbar() -> None:
    bar = ccm.colorbar()
    assert bar.mode == "RGB" and bar.size == (256, 12)
    assert _pixel(bar, (0, 5)) == (0, 0, 4)
    assert _pixel(bar, (255, 5)) == (252, 255, 164)
    signed = ccm.colorbar(width=101, height=3, signed=True)
    assert signed.size == (101, 3)
    assert _pixel(signed, (0, 0)) == (59, 76, 192)
    assert min(_pixel(signed, (50, 1))) >= 220


# --------------------------------------------------------------------------- overlay / to_pil


def test_overlay_resizes_and_blends() -> None:
    image = Image.new("RGB", (40, 30), (100, 100, 100))
    values = np.zeros((7, 5))
    values[0, 0] = 1.0
    out = ccm.overlay(image, values, alpha=0.5, cmap="gray")
    assert out.mode == "RGB" and out.size == (40, 30)
    assert _pixel(ccm.overlay(image, values, alpha=0.0), (3, 3)) == (100, 100, 100)
    full = ccm.overlay(image, np.ones((30, 40)), alpha=1.0, cmap="gray", vmin=0, vmax=1)
    assert _pixel(full, (10, 10)) == (255, 255, 255)
    # far from the hot corner the map is 0 (black), so the blend halves the grey
    assert _pixel(out, (39, 29)) == (50, 50, 50)
    assert _pixel(out, (0, 0))[0] > 50
    with pytest.raises(ValueError, match="alpha"):
        ccm.overlay(image, values, alpha=1.5)


def test_overlay_accepts_chw_tensor() -> None:
    tensor = torch.zeros(3, 16, 24)
    tensor[0] = 1.0
    out = ccm.overlay(tensor, torch.rand(4, 6), alpha=0.25)
    assert out.size == (24, 16)
    assert _pixel(out, (5, 5))[0] >= 191


def test_to_pil_layouts_and_clamping() -> None:
    chw = torch.zeros(3, 2, 4)
    chw[1] = 0.5
    chw[2, 0, 0] = 2.0
    chw[0, 1, 3] = -1.0
    img = cio.to_pil(chw)
    assert img.mode == "RGB" and img.size == (4, 2)
    assert _pixel(img, (0, 0)) == (0, 128, 255)
    assert _pixel(img, (3, 1)) == (0, 128, 0)

    hwc = np.zeros((2, 4, 3), np.uint8)
    hwc[1, 2] = (9, 8, 7)
    img = cio.to_pil(hwc)
    assert img.size == (4, 2) and _pixel(img, (2, 1)) == (9, 8, 7)

    assert _pixel(cio.to_pil(np.full((3, 5), 0.2)), (0, 0)) == (51, 51, 51)
    assert cio.to_pil(torch.rand(1, 3, 6, 7)).size == (7, 6)
    rgba = np.zeros((1, 1, 4), np.uint8)  # transparent black over white
    assert _pixel(cio.to_pil(rgba), (0, 0)) == (255, 255, 255)
    assert cio.to_pil(np.zeros((1, 8, 3))).size == (8, 1)
    assert cio.to_pil(np.zeros((1, 8, 9))).size == (9, 8)
    with pytest.raises(ValueError, match="shape"):
        cio.to_pil(np.zeros((5, 6, 7)))


def test_to_numpy_reads_tensors_and_arrays() -> None:
    half = cimg.to_numpy(torch.full((2, 3), 0.5, dtype=torch.float16, requires_grad=True))
    assert half.dtype == np.float32 and half.shape == (2, 3) and float(half[0, 0]) == 0.5
    assert cimg.to_numpy([[1, 2], [3, 4]]).tolist() == [[1, 2], [3, 4]]
    ints = np.arange(4, dtype=np.int16)
    assert cimg.to_numpy(ints) is ints


def test_io_keeps_the_writing_names() -> None:
    for name in ("to_pil", "to_numpy", "png_bytes", "data_uri", "save_png", "ArrayLike"):
        assert getattr(cio, name) is getattr(cimg, name)


# --------------------------------------------------------------------------- writing


def test_save_png_round_trip_and_parent_dirs(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    target = tmp_path / "a" / "b" / "out.png"
    returned = cio.save_png(Image.fromarray(arr), target)
    assert returned == target
    with Image.open(target) as back:
        assert back.format == "PNG"
        assert np.array_equal(np.asarray(back.convert("RGB")), arr)
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.png"]

    cio.save_png(torch.ones(3, 2, 2), target)  # overwrite with a tensor
    assert np.asarray(cio.load_image(target)).tolist() == [[[255] * 3] * 2] * 2
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.png"]


def test_save_png_failure_leaves_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "keep.png"
    cio.save_png(Image.new("RGB", (2, 2), (1, 2, 3)), target)
    old = target.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk on fire"):
        cio.save_png(Image.new("RGB", (2, 2), (9, 9, 9)), target)
    assert target.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["keep.png"]


def test_png_bytes_and_data_uri() -> None:
    img = Image.new("RGBA", (3, 2), (10, 20, 30, 40))
    data = cio.png_bytes(img)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(data)) as back:
        assert back.mode == "RGBA" and back.getpixel((0, 0)) == (10, 20, 30, 40)
    uri = cio.data_uri(img)
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == data
    with Image.open(io.BytesIO(cio.png_bytes(np.zeros((2, 2, 3))))) as back:
        assert back.mode == "RGB" and back.size == (2, 2)
