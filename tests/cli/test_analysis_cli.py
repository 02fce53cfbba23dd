"""The index, patches, neighbours and embed commands, end to end on a small folder."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import cnnlens.cli.analysis  # noqa: F401  (registers the commands)
from cnnlens.analysis import open_index
from cnnlens.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    import cnnlens as cl

    root = tmp_path_factory.mktemp("cli")
    data = root / "data"
    data.mkdir()
    for name, img in cl.sample_images(["chelsea", "coffee", "astronaut"]).items():
        img.save(data / f"{name}.png")
        img.transpose(Image.FLIP_LEFT_RIGHT).save(data / f"{name} <flip>.png")
    (data / "empty.png").write_bytes(b"")
    (root / "labels.csv").write_text("path,label\nchelsea.png,cat\ncoffee.png,cup\n")
    args = ["index", str(data), "--out", str(root / "idx"), "--layers", "blocks.4,conv_head"]
    result = runner.invoke(
        app, [*args, "--batch-size", "3", "--workers", "0", "--label-csv", str(root / "labels.csv")]
    )
    assert result.exit_code == 0, result.output
    return root, result.output


def test_index_command_reports_skipped_file_and_speed(indexed):
    root, output = indexed
    assert "indexed 6 of 7 images" in output and "images/s" in output
    assert "empty.png: file is empty" in output
    idx = open_index(root / "idx")
    assert idx.layers == ["blocks.4", "conv_head"] and idx.complete
    assert sorted(v for v in idx.labels if v) == ["cat", "cup"]
    # running again on a finished index does no work and keeps the data
    before = np.array(idx.features("conv_head"))
    again = runner.invoke(app, ["index", str(root / "data"), "--out", str(root / "idx"),
                                "--layers", "blocks.4,conv_head"])  # fmt: skip
    assert again.exit_code == 0, again.output
    np.testing.assert_array_equal(before, open_index(root / "idx").features("conv_head"))


def test_patches_command(indexed, tmp_path):
    root, _ = indexed
    result = runner.invoke(
        app, ["patches", str(root / "idx"), "-l", "blocks.4", "--units", "0-2", "-k", "3",
              "-o", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    page = (tmp_path / "patches-blocks.4.html").read_text()
    assert page.count("<h2>unit ") == 3 and "&lt;flip&gt;" in page and "<flip>" not in page
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        f"patches-blocks.4-unit{u}.png" for u in range(3)
    ]
    bad = runner.invoke(app, ["patches", str(root / "idx"), "-l", "blocks.9"])
    assert bad.exit_code != 0 and "indexed layers: blocks.4, conv_head" in bad.output


def test_neighbours_command(indexed, tmp_path):
    root, _ = indexed
    idx = open_index(root / "idx")
    entry = next(i for i, p in enumerate(idx.paths) if p.endswith("/coffee.png"))
    out = tmp_path / "nb.html"
    result = runner.invoke(
        app, ["neighbours", str(root / "idx"), str(entry), "-l", "conv_head", "-k", "2",
              "-o", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    first_feature = [ln for ln in result.output.splitlines() if ln.startswith("feature")][0]
    assert first_feature.endswith("coffee <flip>.png")
    assert "feature space (conv_head, cosine)" in out.read_text()


def test_embed_command(indexed, tmp_path):
    root, _ = indexed
    out = tmp_path / "map.html"
    result = runner.invoke(
        app, ["embed", str(root / "idx"), "-l", "conv_head", "--method", "pca", "--grid", "4",
              "-o", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "pca: 6 points" in result.output
    text = out.read_text()
    assert text.count("<circle") == 6 and "Thumbnail grid" in text
    assert "cat (1)" in text and "cup (1)" in text
    bad = runner.invoke(app, ["embed", str(root / "idx"), "--method", "mds"])
    assert bad.exit_code != 0 and "pca, tsne, umap" in bad.output


LOOKED_FOR = "looked for .bmp, .gif, .jpeg, .jpg, .png, .tif, .tiff, .webp"


def test_index_empty_folder_and_missing_file_say_so_in_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["index", str(empty), "--out", str(tmp_path / "a")])
    assert result.exit_code == 2
    assert result.output.splitlines() == [f"error: no images found in {empty} ({LOOKED_FOR})"]
    missing = tmp_path / "nope.png"
    result = runner.invoke(app, ["index", str(missing), "--out", str(tmp_path / "b")])
    assert result.exit_code == 2
    assert result.output.splitlines() == [f"error: {missing}: no such file or directory"]
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_index_max_pixels(tmp_path):
    from cnnlens.cli.common import Opt
    from cnnlens.io import DEFAULT_MAX_PIXELS

    assert Opt.max_pixels.default == DEFAULT_MAX_PIXELS
    data = tmp_path / "data"
    data.mkdir()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(data / "red.png")
    Image.new("RGB", (20, 20), (10, 200, 10)).save(data / "green.png")
    args = ["index", str(data), "--out", str(tmp_path / "idx"), "--max-pixels", "1000"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "indexed 1 of 2 images" in result.output
    assert (
        f"skipped {data / 'red.png'}: image is 40x30 = 1,200 pixels, more than the limit of "
        "1,000 (possible decompression bomb); if you trust the file, raise the limit "
        "(--max-pixels, max_pixels= in Python)"
    ) in result.output.splitlines()
    bad = runner.invoke(app, [*args[:-1], "0"])
    assert bad.exit_code == 2 and "Invalid value for '--max-pixels'" in bad.output


def test_index_append(indexed, tmp_path):
    import shutil

    import cnnlens as cl

    root, _ = indexed
    shutil.copytree(root / "idx", tmp_path / "idx")
    more = tmp_path / "more"
    more.mkdir()
    cl.sample_images(["camera"])["camera"].save(more / "camera.png")
    (more / "chelsea.png").symlink_to(root / "data" / "chelsea.png")  # already indexed
    args = ["index", str(more), "--out", str(tmp_path / "idx")]
    result = runner.invoke(app, [*args, "--append"])
    assert result.exit_code == 0, result.output
    assert "added 1 new image (7 were in the index)" in result.output
    assert "indexed 7 of 8 images" in result.output and "skipped" not in result.output
    idx = open_index(tmp_path / "idx")
    assert idx.paths[-1] == str(more / "camera.png") and idx.status[-1] == 1
    assert idx.layers == ["blocks.4", "conv_head"] and idx.labels[-1] == ""
    np.testing.assert_array_equal(  # the old rows are kept as they were
        idx.features("conv_head")[:7], open_index(root / "idx").features("conv_head")
    )
    bad = runner.invoke(app, [*args, "--append", "--layers", "blocks.4"])
    assert bad.exit_code == 2
    assert bad.output.splitlines() == [
        f"error: {tmp_path / 'idx'} holds an index of efficientnet_lite0 at layers blocks.4, "
        "conv_head, not of efficientnet_lite0 at blocks.4; resume or --append with the same "
        "model and layers, or choose a new --out folder"
    ]
    plain = runner.invoke(app, args)  # other images without --append
    assert plain.exit_code == 2 and "add new images with --append" in plain.output


def test_patches_default_layer_warns_when_its_field_is_the_whole_image(indexed, tmp_path):
    root, _ = indexed
    result = runner.invoke(
        app, ["patches", str(root / "idx"), "--units", "0", "-k", "1", "-o", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "warning: the receptive field of blocks.4 (339x339 px) covers the whole 224x224 input, "
        "so its patches are whole images; for real patches index a shallower layer (cnnlens "
        "index --layers NAME; cnnlens layers MODEL lists them)",
        f"saved {tmp_path / 'patches-blocks.4.html'}",
    ]
