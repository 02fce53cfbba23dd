"""Arguments are checked before any work (exit 2, one line), method parameters reach the
method from ``--param``, progress prints plain lines without a terminal, the summary never
cuts a name, and Ctrl-C keeps what finished."""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from cnnlens.cli import app
from cnnlens.cli.checks import parse_params
from cnnlens.cli.progress import PlainProgress, RichReporter, clock

runner = CliRunner()


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "noise.png"
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(path)
    return path


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--target", "5000"], "--target 5000 is not a class of efficientnet_lite0: it has 1000"),
        (["--target", "-1"], "--target -1 is not a class of efficientnet_lite0"),
        (["--target", "285,1000"], "--target 1000 is not a class"),
        (["--target", "top0"], "--target 'top0': write topK with K of 1 or more"),
        (["--layer", "blocks.9"], "--layer: no layer named 'blocks.9'"),
        (["--param", "gradcam.layer=blocks.9", "--methods", "gradcam"], "no layer named"),
        (["--window", "0"], "Invalid value for '--window'"),
        (["--stride", "-2"], "Invalid value for '--stride'"),
        (["--batch-size", "0"], "Invalid value for '--batch-size'"),
        (["--param", "occlusion.windw=8"], "occlusion has no parameter 'windw' (did you mean "),
        (["--param", "rise.masks=8"], "rise is not among the methods to run"),
        (["--param", "nosuch.steps=8"], "nosuch"),
        (["--param", "steps=8"], "--param takes method.name=value"),
        (["--param", "occlusion.window=big"], "occlusion.window takes a number"),
    ],
)
def test_bad_arguments_fail_at_once(args, expected, tmp_path):
    out = tmp_path / "r"
    result = runner.invoke(app, ["explain", *args, "--out", str(out)])
    if "Invalid value" in expected:  # typer's own range check: usage error, exit 2
        assert result.exit_code == 2 and not out.exists()
        assert expected in " ".join(result.output.split())
        return
    assert expected in one_line_error(result)
    assert not out.exists()  # nothing ran


def test_params_take_json_values_and_resolve_aliases():
    assert parse_params(
        ["perturbation.iterations=5", "extremal.areas=[0.05, 0.1]", "occlusion.baseline=blur"]
    ) == {
        "meaningful_perturbation": {"iterations": 5},
        "extremal": {"areas": [0.05, 0.1]},
        "occlusion": {"baseline": "blur"},
    }
    assert parse_params(["gradcam.layer=blocks.5"], ["gradcam"]) == {
        "gradcam": {"layer": "blocks.5"}
    }
    with pytest.raises(typer.Exit):
        parse_params(["smoothgrad.samples=5"], ["gradient"])


def test_param_reaches_the_method_and_target_topk_works(photo, tmp_path):
    out = tmp_path / "r"
    result = runner.invoke(
        app,
        ["explain", str(photo), "--methods", "integrated_gradients,occlusion", "--target", "top2",
         "-p", "integrated_gradients.steps=3", "--param", "occlusion.window=48",
         "--param", "occlusion.stride=40", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    ig = results["images"][0]["methods"]["integrated_gradients"]
    assert len(ig["targets"]) == 2  # top2: two maps per image
    params = results["methods"]
    assert params["integrated_gradients"]["params"]["steps"] == 3
    assert params["occlusion"]["params"]["window"] == 48  # --param wins over --window
    assert params["occlusion"]["params"]["stride"] == 40


def test_layer_option_goes_to_every_method_that_takes_one(photo, tmp_path):
    out = tmp_path / "r"
    result = runner.invoke(
        app,
        ["explain", str(photo), "--methods", "gradcam,layercam,gradient", "--layer", "blocks.4",
         "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    params = json.loads((out / "results.json").read_text())["methods"]
    assert params["gradcam"]["params"]["layer"] == "blocks.4"
    assert params["layercam"]["params"]["layer"] == "blocks.4"
    assert "layer" not in params["gradient"]["params"]


def test_layers_takes_the_model_as_option_or_argument():
    by_option = runner.invoke(app, ["layers", "--model", "resnet18"])
    by_argument = runner.invoke(app, ["layers", "resnet18"])
    assert by_option.exit_code == 0 and by_argument.exit_code == 0
    assert by_option.output == by_argument.output and "layer4" in by_option.output
    clash = runner.invoke(app, ["layers", "resnet18", "--model", "vgg11"])
    assert "two models given: 'resnet18' and --model 'vgg11'" in one_line_error(clash)


def test_plain_progress_prints_lines_with_an_estimate():
    console = Console(record=True, width=200, force_terminal=False)
    clock_now = [0.0]
    bar = PlainProgress(console, every=10, now=lambda: clock_now[0])
    reporter = RichReporter(bar)
    advance = reporter.start("images x methods", 8)
    for _ in range(2):
        clock_now[0] += 4.0
        advance(1)  # 4 s and 8 s: too soon for a line
    clock_now[0] += 4.0
    advance(1)  # 12 s, 3 of 8 done: 4 s per step, 5 to go
    clock_now[0] += 8.0
    advance(5)  # 20 s: only 8 s after the last line, so none
    reporter.finish("images x methods")
    lines = console.export_text().strip().splitlines()
    assert lines == [
        "images x methods: started (8 steps)",
        "images x methods: 3/8 (38%), 0:12 elapsed, about 0:20 left",
        "images x methods: done in 0:20",
    ]
    assert clock(3725) == "1:02:05"


def test_explain_without_a_terminal_prints_progress_lines(photo, tmp_path):
    result = runner.invoke(
        app, ["explain", str(photo), "--methods", "gradient", "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 0, result.output
    assert "images x methods: started (1 steps)" in result.output
    assert "images x methods: done in" in result.output


def test_summary_never_cuts_method_or_file_names(tmp_path):
    folder = tmp_path / ("a_rather_long_folder_name_" * 3)
    folder.mkdir()
    rng = np.random.default_rng(2)
    path = folder / "image_with_a_long_name_0123456789.png"
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
    result = runner.invoke(
        app,
        ["explain", str(path), "--methods", "contrastive_excitation_backprop,gradient",
         "--out", str(tmp_path / "r")],
        env={"COLUMNS": "60"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = [line.split("│") for line in result.output.splitlines() if line.startswith("│")]
    image_column = "".join(cells[1].strip() for cells in rows)
    assert image_column == str(path)  # folded over lines, never cut with "…"
    assert rows[0][4].strip() == "2/2 ok"
    assert "…" not in result.output


def test_ctrl_c_keeps_the_finished_methods(photo, tmp_path, monkeypatch):
    import cnnlens.pipeline as pipeline

    real = pipeline.attribute

    def stop_at_occlusion(model, x, method, **kwargs):
        if method == "occlusion":
            raise KeyboardInterrupt
        return real(model, x, method, **kwargs)

    monkeypatch.setattr(pipeline, "attribute", stop_at_occlusion)
    out = tmp_path / "r"
    result = runner.invoke(
        app, ["explain", str(photo), "--methods", "gradient,occlusion,cam", "--out", str(out)]
    )
    assert result.exit_code == 130
    text = " ".join(result.output.split())
    assert "interrupted: the report holds the 1 finished methods; not run: occlusion, cam" in text
    assert "--methods occlusion,cam" in text
    assert list(json.loads((out / "results.json").read_text())["methods"]) == ["gradient"]


@pytest.mark.parametrize("command", ["interrogate", "boxes"])
def test_perturbation_commands_check_the_target_class(command, photo, tmp_path):
    extra = ["--box", "0,0,10,10"] if command == "interrogate" else []
    result = runner.invoke(
        app, [command, str(photo), *extra, "--target", "1000", "--out", str(tmp_path / "o")]
    )
    assert "--target 1000 is not a class of efficientnet_lite0" in one_line_error(result)


def test_models_says_which_library_a_shared_name_means():
    result = runner.invoke(app, ["models", "resnet50*"])
    assert result.exit_code == 0
    assert "timm/resnet50" in result.output and "resnet50.a1_in1k" in result.output
    assert "the plain name loads torchvision's; write timm/resnet50 for timm's" in " ".join(
        result.output.split()
    )


def test_a_labels_file_of_the_wrong_length_warns_once(photo, tmp_path):
    names = tmp_path / "labels.txt"
    names.write_text("cat\ndog\nbird\n")
    result = runner.invoke(
        app,
        ["explain", str(photo), "--methods", "gradient", "--labels", str(names),
         "--out", str(tmp_path / "r")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    warned = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1
    assert "has 3 names but the model has 1000 outputs" in warned[0]


def test_empty_folder_and_missing_file_each_said_once(photo, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["explain", str(empty), "--out", str(tmp_path / "r")])
    assert one_line_error(result).startswith(f"error: no images found in {empty}")
    missing = tmp_path / "gone.png"
    args = [str(missing), str(photo), "--methods", "gradient", "--out", str(tmp_path / "s")]
    result = runner.invoke(app, ["explain", *args])
    assert result.exit_code == 0, result.output
    assert result.output.count(str(missing)) == 1  # said once, not "X: X: ..."
    assert f"{missing}: no such file or directory" in result.output


def test_explain_refuses_an_image_above_the_pixel_limit(photo, tmp_path):
    result = runner.invoke(
        app, ["explain", str(photo), "--max-pixels", "1000", "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 1  # nothing could be explained
    assert "image is 56x40 = 2,240 pixels, more than the limit of 1,000" in result.output


WITHOUT_EXTRAS = """
import sys
for name in ("sklearn", "openTSNE", "umap", "ray", "pandas", "pyarrow", "captum",
             "pytorch_grad_cam", "playwright", "pytest"):
    sys.modules[name] = None  # as in a plain `pip install cnnlens`: importing them fails
from typer.testing import CliRunner
from cnnlens.cli import app
result = CliRunner().invoke(app, sys.argv[1:])
print(result.exit_code)
print(result.output)
"""


def test_explain_needs_none_of_the_optional_packages_and_embed_names_its_extra(photo, tmp_path):
    import subprocess
    import sys

    def run(*args):
        done = subprocess.run(
            [sys.executable, "-c", WITHOUT_EXTRAS, *args], capture_output=True, text=True
        )
        code, _, output = done.stdout.partition("\n")
        return int(code), output

    code, output = run("explain", str(photo), "--methods", "gradient,gradcam",
                       "--out", str(tmp_path / "r"))  # fmt: skip
    assert code == 0, output
    index = tmp_path / "photos.index"
    built = runner.invoke(app, ["index", str(photo.parent), "--layers", "blocks.3",
                                "--out", str(index)])  # fmt: skip
    assert built.exit_code == 0, built.output
    code, output = run("embed", str(index), "--layer", "blocks.3", "--method", "pca")
    assert code == 2 and "Traceback" not in output
    assert "needs scikit-learn, which is not installed: pip install 'cnnlens[analysis]'" in output
