"""The command line, end to end through typer's test runner."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from typer.testing import CliRunner

from cnnlens.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    import skimage.data

    d = tmp_path_factory.mktemp("photos")
    Image.fromarray(skimage.data.coffee()).save(d / "coffee.jpg")
    Image.fromarray(skimage.data.chelsea()).save(d / "sub_cat.png")
    (d / "notes.txt").write_text("not an image")
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    return d


def test_methods_lists_the_registry():
    result = runner.invoke(app, ["methods"])
    assert result.exit_code == 0
    for name in ("occlusion", "gradient", "cam", "gradcam"):
        assert name in result.stdout


def test_models_filter():
    result = runner.invoke(app, ["models", "resnet1*"])
    assert result.exit_code == 0
    assert "efficientnet_lite0" not in result.stdout and "resnet18" in result.stdout


def test_layers_of_bundled_model_marks_default():
    result = runner.invoke(app, ["layers", "efficientnet_lite0"])
    assert result.exit_code == 0
    assert "bn2 *" in result.stdout and "1280x7x7" in result.stdout


def test_explain_folder_with_bad_files(photo_dir, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "explain",
            str(photo_dir / "coffee.jpg"),
            str(photo_dir / "sub_cat.png"),
            str(photo_dir / "broken.png"),
            "--methods",
            "gradcam,cam",
            "--top-k",
            "3",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert [im["name"].rsplit("/", 1)[-1] for im in results["images"]] == [
        "coffee.jpg",
        "sub_cat.png",
    ]
    assert results["images"][0]["predictions"][0]["index"] == 967
    assert results["images"][1]["predictions"][0]["index"] == 285
    assert len(results["errors"]) == 1 and "broken.png" in results["errors"][0]["image"]
    maps = np.load(out / "maps.npz")
    assert maps["maps/gradcam"].shape == (2, 3, 224, 224)
    assert maps["targets/cam"][0].tolist() == results["images"][0]["methods"]["cam"]["targets"]
    html = (out / "report.html").read_text()
    assert "broken.png" in html and "http://" not in html


def test_explain_whole_folder_reports_unreadable(photo_dir, tmp_path):
    result = runner.invoke(
        app, ["explain", str(photo_dir), "--methods", "gradient", "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert len(results["images"]) == 2  # the .txt is not picked up from a folder
    assert [e["image"].rsplit("/", 1)[-1] for e in results["errors"]] == ["broken.png"]


def test_explain_nothing_readable_exits_nonzero(photo_dir, tmp_path):
    result = runner.invoke(
        app,
        ["explain", str(photo_dir / "notes.txt"), "--methods", "gradcam", "--out", str(tmp_path)],
    )
    assert result.exit_code == 1
    assert "notes.txt" in result.output


def test_explain_method_failing_everywhere_is_reported(tmp_path):
    weights = tmp_path / "vgg.pth"
    torch.save(torchvision.models.vgg11(num_classes=3).state_dict(), weights)
    result = runner.invoke(
        app,
        [
            "explain",
            "--model",
            "vgg11",
            "--weights",
            str(weights),
            "--methods",
            "cam,gradcam",
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert list(results["methods"]) == ["gradcam"]
    assert {e["method"] for e in results["errors"]} == {"cam"}
    assert "gradcam" in results["errors"][0]["error"]  # the error suggests Grad-CAM


def test_explain_refuses_pickled_checkpoint(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(torchvision.models.resnet18(num_classes=2), path)
    result = runner.invoke(app, ["explain", "--model", str(path), "--methods", "gradcam"])
    assert result.exit_code == 2
    assert "trust" in result.output
    ok = runner.invoke(
        app,
        [
            "explain",
            "--model",
            str(path),
            "--trust-checkpoint",
            "--methods",
            "gradcam",
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert ok.exit_code == 0, ok.output


def test_explain_unknown_method_and_model(tmp_path):
    bad = runner.invoke(app, ["explain", "--methods", "gradcma"])
    assert bad.exit_code == 2 and "gradcam" in bad.output
    bad = runner.invoke(app, ["explain", "--model", "resnet5O", "--methods", "gradcam"])
    assert bad.exit_code == 2 and "resnet50" in bad.output


@pytest.mark.slow
def test_explain_without_arguments_uses_samples(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["explain"])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "cnnlens-report" / "results.json").read_text())
    assert [im["name"] for im in results["images"]] == ["chelsea", "coffee", "astronaut"]
    assert sorted(results["methods"]) == ["cam", "gradcam", "gradient", "occlusion"]
    assert results["images"][0]["predictions"][0]["label"] == "Egyptian cat"
    assert results["errors"] == []


def test_parameters_given_under_the_alias_reach_the_method(tmp_path):
    # "perturbation" is an alias of "meaningful_perturbation": parameters keyed by either
    # name reach the method however it was chosen
    import cnnlens as cl
    from cnnlens.pipeline import explain_files
    from helpers import tiny_cnn

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "a.png")
    loaded = cl.LoadedModel.wrap(tiny_cnn())
    for chosen, key in (("meaningful_perturbation", "perturbation"),
                        ("perturbation", "meaningful_perturbation")):  # fmt: skip
        run = explain_files(loaded, [tmp_path / "a.png"], methods=chosen, out_dir=None,
                            method_params={key: {"iterations": 3, "mask_scale": 8}})  # fmt: skip
        (expl,) = run.explanations
        assert expl.params["iterations"] == 3 and expl.method == chosen
