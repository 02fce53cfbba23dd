"""``cnnlens filters``, ``activations`` and ``dream`` end to end on the bundled model
(few steps, small images), and their error messages."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

import cnnlens.cli.featurevis  # noqa: F401  (registers the commands)
from cnnlens.cli import app
from cnnlens.cli.common import parse_indices

runner = CliRunner()


def _self_contained(path) -> str:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and "data:image/png;base64," in text
    assert "http://" not in text and "https://" not in text
    return text


def test_parse_indices():
    assert parse_indices("0-3,7, 9-10") == [0, 1, 2, 3, 7, 9, 10]
    assert parse_indices("5,5,4-6") == [5, 4, 6]
    for bad in ("", "a", "3-1", "1-", "-2"):
        with pytest.raises(ValueError):
            parse_indices(bad)


def test_filters_first_layer_and_a_deeper_one(tmp_path):
    result = runner.invoke(
        app,
        ["filters", "--layer", "conv_stem", "--layer", "blocks.1.0.conv_pw", "-o", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    assert "32x3x3x3" in result.stdout and "directly interpretable" in result.stdout
    for name in ("conv_stem", "blocks.1.0.conv_pw"):
        for suffix in ("", "-per-filter"):
            view = Image.open(tmp_path / f"filters-{name}{suffix}.png")
            compact = Image.open(tmp_path / f"filters-{name}{suffix}-compact.png")
            factor = view.width // compact.width
            assert max(view.size) >= 512 and view.size == (
                compact.width * factor,
                compact.height * factor,
            )
        text = _self_contained(tmp_path / f"filters-{name}.html")
        assert "normalised per filter" in text
    assert "Only the first layer" in (tmp_path / "filters-blocks.1.0.conv_pw.html").read_text()
    # 32 RGB kernels of 3x3, 8x each (24 px) in a 6x6 grid with 2 px gaps: 2 + 6 * 26 = 158 px,
    # enlarged 4x (3x would be 474 < 512) to 632 px, nearest-neighbour
    assert Image.open(tmp_path / "filters-conv_stem-compact.png").size == (158, 158)
    view = Image.open(tmp_path / "filters-conv_stem.png")
    assert view.size == (632, 632)
    compact = Image.open(tmp_path / "filters-conv_stem-compact.png").convert("RGB")
    assert view.convert("RGB").getpixel((4 * 10 + 3, 4 * 10 + 1)) == compact.getpixel((10, 10))
    assert "632x632 px, enlarged 4x" in (tmp_path / "filters-conv_stem.html").read_text()


def test_model_is_an_option_and_still_a_positional(tmp_path):
    for args in (
        ["-m", "efficientnet_lite0"],
        ["--model", "efficientnet_lite0"],
        ["efficientnet_lite0"],
    ):
        result = runner.invoke(app, ["filters", *args, "-o", str(tmp_path)])
        assert result.exit_code == 0, result.output
    for cmd in (["filters"], ["dream", "--layer", "blocks.1", "--steps", "1"]):
        result = runner.invoke(
            app, [*cmd, "resnet18", "-m", "efficientnet_lite0", "-o", str(tmp_path)]
        )
        assert result.exit_code == 2
        assert "two models given: 'resnet18' and --model 'efficientnet_lite0'" in result.output
    # the same model twice is no conflict
    result = runner.invoke(
        app, ["filters", "efficientnet_lite0", "-m", "efficientnet_lite0", "-o", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output


def test_dream_class_has_no_short_c(tmp_path):
    result = runner.invoke(app, ["dream", "-c", "285", "--steps", "1", "-o", str(tmp_path)])
    assert result.exit_code == 2 and "No such option: -c" in result.output
    assert not tmp_path.joinpath("dream-logits.png").exists()


def test_help_shows_choices_not_bool():
    dream = runner.invoke(app, ["dream", "--help"])
    assert dream.exit_code == 0
    for choice in ("fourier|pixel|dense", "channel|neuron|deepdream", "standard|none"):
        assert choice in dream.stdout
    assert "--decorrelate / --no-decorrelate" in dream.stdout
    assert "<bool>" not in dream.stdout  # flags take no value
    assert "-c," not in dream.stdout and "--class INDICES" in dream.stdout
    assert "-m, --model NAME|FILE" in dream.stdout
    filters = runner.invoke(app, ["filters", "--help"])
    assert "<bool>" not in filters.stdout and "-m, --model NAME|FILE" in filters.stdout


def test_filters_errors(tmp_path):
    result = runner.invoke(app, ["filters", "--layer", "bn1", "-o", str(tmp_path)])
    assert result.exit_code == 2 and "not a Conv2d" in result.output
    result = runner.invoke(app, ["filters", "--layer", "conv_stm", "-o", str(tmp_path)])
    assert result.exit_code == 2 and "conv_stem" in result.output


def test_activations_writes_grid_strip_and_page(tmp_path):
    import skimage.data

    photo = tmp_path / "cat.png"
    Image.fromarray(skimage.data.chelsea()).save(photo)
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["activations", str(photo), "--layer", "blocks.2", "--max-channels", "12", "-o", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "blocks.2 (40x28x28): strongest channels #" in result.stdout
    assert (out / "overview-cat.png").exists() and (out / "activations-cat-blocks.2.png").exists()
    text = _self_contained(out / "activations-cat-blocks.2.html")
    assert "Egyptian cat" in text and text.count("<figure>") == 12
    # blocks.2 ends in a linear projection: signed values, a diverging map, a bar of [-m, m]
    assert "signed values on a diverging map" in text
    from cnnlens.featurevis.activations import activation_maps
    from cnnlens.models import load_model

    model = load_model("efficientnet_lite0")
    m = activation_maps(model, model.preprocess(Image.open(photo).convert("RGB")), "blocks.2")
    top = float(m.maps.abs().max())
    assert f"one range for all channels, {-top:.3g} to {top:.3g}" in text
    grid = Image.open(out / "activations-cat-blocks.2.png")
    assert grid.size == m.grid(12).size  # the PNG is the grid with its colour bar
    bad = runner.invoke(app, ["activations", str(photo), "--layer", "block.2", "-o", str(out)])
    assert bad.exit_code == 2 and "blocks.2" in bad.output
    missing = runner.invoke(app, ["activations", str(tmp_path / "nope.jpg"), "-o", str(out)])
    assert missing.exit_code == 2


def test_dream_channels_and_classes(tmp_path):
    args = ["--steps", "3", "--size", "64", "-o", str(tmp_path)]
    result = runner.invoke(app, ["dream", "--layer", "blocks.1", "--channels", "0-2,5", *args])
    assert result.exit_code == 0, result.output
    assert "channel('blocks.1', 5) = " in result.stdout
    summary = json.loads((tmp_path / "dream-blocks.1.json").read_text())
    assert summary["steps"] == 3 and len(summary["objectives"]) == 4
    assert summary["objectives"][3]["objective"] == "channel('blocks.1', 5)"
    assert Image.open(tmp_path / "dream-blocks.1.png").size[0] > 4 * 64
    assert _self_contained(tmp_path / "dream-blocks.1.html").count("<figure>") == 4

    result = runner.invoke(app, ["dream", "--class", "285,1", *args])
    assert result.exit_code == 0, result.output
    text = _self_contained(tmp_path / "dream-logits.html")
    assert "<title>Class dreams: 285 Egyptian cat, 1 goldfish (efficientnet_lite0)</title>" in text
    assert "285 Egyptian cat: class_logit(285) = " in text
    assert "  285 Egyptian cat: class_logit(285) = " in result.stdout
    for name in ("dream-class-285-egyptian-cat.png", "dream-class-1-goldfish.png"):
        assert Image.open(tmp_path / name).size == (64, 64)
    summary = json.loads((tmp_path / "dream-logits.json").read_text())
    assert [o["label"] for o in summary["objectives"]] == ["285 Egyptian cat", "1 goldfish"]


def test_dream_presets(tmp_path):
    result = runner.invoke(
        app,
        [
            "dream",
            "--preset",
            "all",
            "--channels",
            "0",
            "--steps",
            "1",
            "--size",
            "32",
            "-o",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    for layer in ("blocks.1", "blocks.3", "blocks.5"):
        assert (tmp_path / f"dream-{layer}.html").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--layer", "blocks.3", "--channels", "78-81"], "channel 80 is out of range"),
        (["--layer", "blocks.3", "--channels", "3-1"], "runs backwards"),
        (["--layer", "blocks.3", "--class", "1"], "exactly one of"),
        ([], "exactly one of"),
        (["--preset", "medium"], "preset must be one of"),
        (["--layer", "blocks.33"], "blocks.3"),
        (["--class", "1000"], "class 1000 is out of range: the output has 1000 (classes 0-999)"),
        (["--layer", "blocks.3", "--parameterization", "cppn"], "--parameterization must be"),
    ],
)
def test_dream_errors(tmp_path, args, message):
    result = runner.invoke(
        app, ["dream", *args, "--steps", "1", "--size", "32", "-o", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_dream_from_a_photo(tmp_path):
    import skimage.data

    photo = tmp_path / "coffee.png"
    Image.fromarray(skimage.data.coffee()).save(photo)
    args = ["--layer", "blocks.2", "--objective", "deepdream", "--parameterization", "pixel"]
    result = runner.invoke(
        app,
        [
            "dream",
            *args,
            "--image",
            str(photo),
            "--steps",
            "2",
            "--size",
            "48",
            "-o",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "dream-blocks.2.json").read_text())
    assert (
        summary["init"] is True and summary["objectives"][0]["objective"] == "deepdream('blocks.2')"
    )
    # two small steps keep the photo recognisable: the dream is close to the resized photo
    grid = Image.open(tmp_path / "dream-blocks.2.png").convert("RGB")
    assert grid.size[0] >= 48
    bad = runner.invoke(
        app, ["dream", *args, "--image", str(tmp_path / "no.png"), "-o", str(tmp_path)]
    )
    assert bad.exit_code == 2 and "no.png" in bad.output
