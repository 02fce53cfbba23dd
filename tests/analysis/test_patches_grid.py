"""The default layer of top patches, the whole-image warning, and the thumbnail grid (each
image once), with hand-worked values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnnlens import analysis as A
from cnnlens.models.base import LoadedModel, Preprocess


@pytest.fixture(scope="module")
def dilated_index(tmp_path_factory):
    """Layers with receptive fields 3, 5 and 37 px on a 32-px input.

    "0": conv 3, padding 1 -> (jump 1, -1, 1), 3 px; "1": another -> (1, -2, 2), 5 px;
    "2": conv 3 with dilation 16, padding 16 -> (1, -2 - 16, 2 + 16 * 2 - 16) = 37 px.
    """
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.Conv2d(4, 4, 3, padding=16, dilation=16),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )
    spec = Preprocess(crop=32, resize=None, mean=(0.5,) * 3, std=(0.5,) * 3)
    root = tmp_path_factory.mktemp("dilated")
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / f"{i}.png")
    model = LoadedModel(net, spec, ["a", "b", "c"], "dilated")
    return A.build_index(model, root, root / "idx", ["2", "0", "1"], dtype="float32")


def test_field_sizes_hand_worked(dilated_index):
    assert [dilated_index.field_size(n) for n in ("0", "1", "2")] == [(3, 3), (5, 5), (37, 37)]


def test_patch_layer_is_the_deepest_with_a_field_smaller_than_the_input(dilated_index):
    idx = dilated_index
    assert idx.check_layer(None) == "2"  # the first indexed layer, the old default
    assert A.patch_layer(idx) == "1"
    assert A.whole_image_warning(idx, "1") is None and A.whole_image_warning(idx, "0") is None
    assert A.whole_image_warning(idx, "2") == (
        "the receptive field of 2 (37x37 px) covers the whole 32x32 input, so its patches are "
        "whole images; for real patches use --layer 1"
    )


def test_only_whole_image_layers_picks_the_smallest_and_says_to_index_another(dilated_index):
    idx = dilated_index
    idx.meta["receptive_fields"] = {**idx.meta["receptive_fields"], "0": None}  # unknown field
    idx.meta["layers"] = {"2": idx.meta["layers"]["2"], "0": idx.meta["layers"]["0"]}
    try:
        assert A.patch_layer(idx) == "2"  # a known 37-px field beats an unknown one
        assert A.whole_image_warning(idx, "0") == (
            "the receptive field of 0 (unknown) covers the whole 32x32 input, so its patches "
            "are whole images; for real patches index a shallower layer (cnnlens index "
            "--layers NAME; cnnlens layers MODEL lists them)"
        )
    finally:
        idx.meta.update(A.open_index(idx.root).meta)


def test_patch_pages_default_layer_and_whole_image_note(dilated_index, tmp_path):
    page = A.write_patch_pages(dilated_index, None, [0], tmp_path, k=2)
    assert page.name == "patches-1.html" and "covers the whole input" not in page.read_text()
    page = A.write_patch_pages(dilated_index, "2", [0], tmp_path, k=2)
    assert "receptive field 37 px, stride 1 (analytic); it covers the whole input" in (
        page.read_text()
    )


def test_readme_layers_of_the_bundled_model():
    """README: blocks.3 gives real patches (147 px of 224), blocks.5 whole images (787 px)."""
    import cnnlens as cl

    net = cl.load_model(weights="none").net
    assert A.receptive_field(net, "blocks.3").y.size == 147
    assert A.receptive_field(net, "blocks.5").y.size == 787


# --------------------------------------------------------------------------- thumbnail grid
def test_grid_shows_a_point_on_a_cell_corner_once():
    # (0.5, 0.5) is 0.0884 from the centres of cells 27, 28, 35, 36 (row * 8 + col, row 0 at
    # the bottom), all within one cell width (0.125): it used to fill all four
    grid = A.grid_assignment(np.array([[0.0, 0.0], [0.5, 0.5], [1.0, 1.0]]), 8)
    expected = np.full((8, 8), -1)
    expected[7, 0] = 0  # bottom-left
    expected[7 - 3, 3] = 1  # lowest cell number among the tied four: row 3, col 3
    expected[0, 7] = 2  # top-right
    np.testing.assert_array_equal(grid, expected)


def test_grid_moves_a_crowded_out_point_to_the_nearest_free_cell():
    # (0, 0) and (0.1, 0) share cell 0 (centre 0.125, 0.125): (0.1, 0) is nearer (0.127 vs
    # 0.177) and keeps it; (0, 0) has no other cell within 0.25, so it takes the nearest free
    # one: cells 1 and 4 are both 0.395 away, the lower number wins (row 0, col 1)
    grid = A.grid_assignment(np.array([[0.0, 0.0], [1.0, 1.0], [0.1, 0.0]]), 4)
    assert grid.tolist() == [
        [-1, -1, -1, 1],
        [-1, -1, -1, -1],
        [-1, -1, -1, -1],
        [2, 0, -1, -1],
    ]


def test_grid_with_more_points_than_cells_leaves_the_rest_out():
    pts = np.random.default_rng(0).uniform(size=(500, 2))
    grid = A.grid_assignment(pts, 6)
    shown = grid[grid >= 0]
    assert len(shown) == len(set(shown.tolist())) == 36  # every cell filled, no repeats


def test_thumbnail_grid_pastes_each_image_once():
    coords = np.array([[0.0, 0.0], [0.5, 0.5], [1.0, 1.0]])
    thumbs = np.stack([np.full((4, 4, 3), v, np.uint8) for v in (50, 100, 150)])
    pic, assign = A.thumbnail_grid(coords, thumbs, size=8, cell=4, entries=np.array([2, 1, 0]))
    px = np.asarray(pic)[:, :, 0]
    counts = {v: int((px == v).sum()) // 16 for v in (50, 100, 150)}
    assert counts == {50: 1, 100: 1, 150: 1} and (assign >= 0).sum() == 3
    assert px[7 * 4, 0] == 150  # point 0 (bottom-left) shows thumbnail row 2
