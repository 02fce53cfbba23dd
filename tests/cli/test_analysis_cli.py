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
