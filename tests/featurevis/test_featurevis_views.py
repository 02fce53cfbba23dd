"""What the feature-visualisation pictures show: viewing sizes, colour maps and colour bars
(hand-checked numbers and pixels)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlens.colormaps import colorbar
from cnnlens.featurevis.activations import ActivationMaps
from cnnlens.featurevis.grid import ColourScale, stack, upscale
from cnnlens.featurevis.objectives import _plural


def _maps(values) -> ActivationMaps:
    maps = torch.tensor(values, dtype=torch.float32)
    means = maps.flatten(1).mean(1)
    return ActivationMaps("x", maps, means, torch.argsort(means, descending=True, stable=True))


def test_upscale_picks_the_smallest_whole_factor():
    pic = Image.new("RGB", (158, 100), "red")
    big, factor = upscale(pic)
    assert factor == 4 and big.size == (632, 400)  # 3 * 158 = 474 < 512 <= 632
    same, factor = upscale(Image.new("RGB", (600, 20)))
    assert factor == 1 and same.size == (600, 20)
    assert upscale(Image.new("RGB", (512, 2)))[1] == 1
    assert upscale(Image.new("RGB", (511, 2)))[1] == 2


def test_upscale_is_nearest_neighbour():
    pic = Image.fromarray(np.array([[[0, 0, 0], [255, 255, 255]]], dtype=np.uint8))  # 2x1
    big, factor = upscale(pic, min_side=6)
    arr = np.asarray(big)
    assert factor == 3 and big.size == (6, 3)
    assert (arr[:, :3] == 0).all() and (arr[:, 3:] == 255).all()  # no blended grey


def test_stack_puts_pictures_under_each_other():
    out = stack([Image.new("RGB", (10, 5), "red"), Image.new("RGB", (4, 3), "blue")], pad=2)
    assert out.size == (10, 5 + 2 + 3)
    arr = np.asarray(out)
    assert tuple(arr[0, 0]) == (255, 0, 0) and tuple(arr[7, 0]) == (0, 0, 255)
    assert tuple(arr[9, 9]) == (255, 255, 255)  # right of the narrow picture: background


def test_signed_maps_use_a_diverging_map_with_a_symmetric_range():
    m = _maps([[[-3.0, 0.0], [1.0, 2.0]], [[0.5, 0.5], [0.5, 0.5]]])
    assert m.signed
    s = m.scale("joint")
    assert (s.low, s.high, s.cmap, s.signed) == (-3.0, 3.0, "coolwarm", True)
    assert s.ticks() == ["-3", "0", "3"]
    # channel 1 (mean 0.5) comes first; channel 0 second
    (first, second), caps = m.tiles()
    assert caps == ["#1 0.5", "#0 0"]
    bar = np.asarray(colorbar("coolwarm", width=256, height=1))[0]
    px = np.asarray(second)
    assert tuple(px[0, 0]) == tuple(bar[0])  # -3, the range's low end: the bar's left end
    assert tuple(px[0, 1]) == tuple(bar[128])  # 0: the bar's centre (near white)
    # index 128 lies (128/255 - 0.5) / 0.25 = 0.0078 of the way from the centre anchor
    # f5f5f5 to f4997a: green 245 - 92 * 0.0078 = 244.3, blue 245 - 123 * 0.0078 = 244.0
    assert tuple(int(v) for v in px[0, 1]) == (245, 244, 244)
    # 2 sits at (2 + 3) / 6 of the range
    assert tuple(px[1, 1]) == tuple(bar[round(5 / 6 * 255)])


def test_non_negative_maps_keep_the_sequential_map_and_their_own_range():
    m = _maps([[[0.0, 4.0], [1.0, 2.0]]])
    assert not m.signed
    s = m.scale("joint")
    assert (s.low, s.high, s.cmap, s.signed) == (0.0, 4.0, "inferno", False)
    assert s.ticks() == ["0", "4"]
    (pic,), _ = m.tiles()
    bar = np.asarray(colorbar("inferno", width=256, height=1))[0]
    assert tuple(np.asarray(pic)[0, 1]) == tuple(bar[255])  # the maximum: the bar's right end


def test_per_channel_colours_have_a_unit_bar():
    signed = _maps([[[-1.0, 2.0], [0.0, 0.0]], [[-10.0, 0.0], [0.0, 5.0]]])
    assert signed.scale("channel").ticks() == ["-1", "0", "1"]
    pics, _ = signed.tiles(normalize="channel")
    bar = np.asarray(colorbar("coolwarm", width=256, height=1))[0]
    # channel 0 (mean 0.25) comes before channel 1 (mean -1.25); each channel's own
    # max |v| reaches an end of the map: 2 in channel 0, -10 in channel 1
    first, second = (np.asarray(p) for p in pics)
    assert tuple(first[0, 1]) == tuple(bar[255]) and tuple(second[0, 0]) == tuple(bar[0])
    assert tuple(second[1, 1]) == tuple(bar[191])  # 5 in [-10, 10]: 0.75 * 255 = 191.25
    assert _maps([[[1.0, 3.0]]]).scale("channel").ticks() == ["0", "1"]
    with pytest.raises(ValueError, match="normalize"):
        signed.scale("layer")


def test_the_grid_carries_its_colour_bar():
    m = _maps(np.linspace(-1, 1, 3 * 16).reshape(3, 4, 4).tolist())
    pics, _ = m.tiles()
    grid = m.grid()
    bar = m.colorbar()
    assert grid.height > bar.height + pics[0].height and grid.width >= bar.width
    # the bar's strip sits in the grid's bottom rows, from its left end (24 px margin)
    strip = np.asarray(grid)[grid.height - bar.height :][:, 24:280]
    ends = np.asarray(colorbar("coolwarm", width=256, height=1))[0, [0, 255]]
    assert any((row[0] == ends[0]).all() and (row[-1] == ends[1]).all() for row in strip)


def test_colour_scale_picture_shows_the_strip():
    pic = ColourScale(-2.0, 2.0, "coolwarm", True).picture(width=100, title="activation")
    arr = np.asarray(pic)
    assert pic.width >= 100 + 2 * 24
    strip = colorbar("coolwarm", width=100, height=1)
    assert any((row[24:124] == np.asarray(strip)[0]).all() for row in arr)
    assert ColourScale(0.0, 1234.5, "inferno").ticks() == ["0", "1.23e+03"]


def test_plural():
    assert [_plural(w) for w in ("channel", "class", "box")] == ["channels", "classes", "boxes"]
