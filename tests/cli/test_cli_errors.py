"""The command line speaks once and plainly: user text verbatim, one line per error, no torch
for ``--help``, and a failure that hits every image reported once with its count."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from cnnlens.cli import app
from cnnlens.cli.common import parse_target
from cnnlens.pipeline import ExplainRun

runner = CliRunner()


@pytest.mark.parametrize(
    "args, text",
    [
        (["layers", "runs/[/tmp]/model.pt"], "runs/[/tmp]/model.pt"),  # was a MarkupError
        (["layers", "runs/[best]/model.pt"], "runs/[best]/model.pt"),  # was runs//model.pt
        (["explain", "--methods", "grad[/x]"], "grad[/x]"),  # was a MarkupError
    ],
)
def test_user_text_in_errors_prints_verbatim(args, text):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert text in lines[0]


def test_parse_target_one_parser_two_syntaxes():
    assert parse_target(None) is None
    assert parse_target(" ", default="top3", top=False) == "top3"
    assert parse_target("967, 968") == [[967, 968]]
    assert parse_target("TOP5") == "top5"
    assert parse_target("285,281", default="top1", top=False) == [[285, 281]]
    for text, top in (("top5", False), ("cat", True), (",", True)):
        with pytest.raises(typer.Exit) as info:
            parse_target(text, top=top)
        assert info.value.exit_code == 2


def test_explain_takes_topk_target_but_not_top0():
    result = runner.invoke(app, ["explain", "--target", "top0", "--methods", "gradient"])
    assert result.exit_code == 2
    expected = "error: --target 'top0': write topK with K of 1 or more, e.g. top5"
    assert result.output.strip() == expected


HELP_WITHOUT_TORCH = """
import sys
import typer.main
from typer.testing import CliRunner
from cnnlens.cli import app

def walk(command, path):
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        yield from walk(sub, path + [name])

runner = CliRunner()
paths = list(walk(typer.main.get_command(app), []))
for path in paths:
    result = runner.invoke(app, path + ["--help"])
    assert result.exit_code == 0, (path, result.output)
    assert "Usage" in result.output, path
    assert "<bool>" not in result.output, path  # a flag takes no value: no type after it
heavy = [m for m in ("torch", "torchvision", "numpy", "PIL") if m in sys.modules]
print(len(paths), heavy)
"""


def test_help_imports_no_torch():
    done = subprocess.run(
        [sys.executable, "-c", HELP_WITHOUT_TORCH], capture_output=True, text=True, check=True
    )
    count, heavy = done.stdout.split(" ", 1)
    assert int(count) >= 20  # the app, its commands, siam and its subcommands
    assert heavy.strip() == "[]"


def test_error_groups_one_per_method_and_message():
    errors = [
        {"image": "a.png", "method": None, "error": "not an image"},
        {"image": "b.png", "method": "cam", "error": "wrong layer"},
        {"image": "c.png", "method": "cam", "error": "wrong layer"},
        {"image": "c.png", "method": "rise", "error": "out of memory"},
        {"image": "d.png", "method": "cam", "error": "wrong layer"},
    ]
    run = ExplainRun(names=["b.png", "c.png", "d.png"], predictions=None, explanations=[],
                     errors=errors)  # fmt: skip
    assert run.error_groups() == [
        {"method": None, "error": "not an image", "images": ["a.png"]},
        {"method": "cam", "error": "wrong layer", "images": ["b.png", "c.png", "d.png"]},
        {"method": "rise", "error": "out of memory", "images": ["c.png"]},
    ]
    assert run.errors == errors  # the per-image records stay


def test_cam_at_a_wrong_layer_is_reported_once(tmp_path):
    folder = tmp_path / "shots[" / "x]"  # ".../shots[/x]": brackets in paths print verbatim
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        pixels = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"im{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    out = tmp_path / "out[best]"
    result = runner.invoke(
        app,
        ["explain", str(folder), "--methods", "cam,gradcam", "--layer", "blocks.5",
         "--target", "285,281", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    failed = [line for line in result.output.splitlines() if "CAM needs" in line]
    assert len(failed) == 1
    assert failed[0].startswith("cam failed on 3 of 3 images: CAM needs")
    assert f"{folder / 'broken.png'}: " in result.output
    assert f"report: {out / 'report.html'}" in result.output
    results = json.loads((out / "results.json").read_text())
    assert list(results["methods"]) == ["gradcam"]
    cam_errors = [e for e in results["errors"] if e["method"] == "cam"]
    assert sorted(e["image"].rsplit("/", 1)[-1] for e in cam_errors) == ["im0.png", "im1.png",
                                                                          "im2.png"]  # fmt: skip


def test_version_short_help_and_bare_command_succeed():
    import cnnlens

    runner = CliRunner()
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.output.strip() == f"cnnlens {cnnlens.__version__}"
    for args in ([], ["-h"], ["--help"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, args
        assert "Usage" in result.output and "explain" in result.output
    sub = runner.invoke(app, ["explain", "-h"])
    assert sub.exit_code == 0 and "--top-k" in sub.output


@pytest.mark.parametrize("args", [["--top-k", "0"], ["--top-k", "-3"], ["--methods", ""],
                                  ["--methods", " , "]])  # fmt: skip
def test_explain_refuses_empty_choices_before_any_work(args, tmp_path):
    result = CliRunner().invoke(app, ["explain", *args, "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert not (tmp_path / "r").exists()  # refused before the model loads or anything runs
    text = " ".join(result.output.split())
    assert ("no method given" in text) if "--methods" in args else ("--top-k" in text)


def test_method_names_are_never_cut_in_the_listing():
    from cnnlens.methods import method_names

    result = CliRunner().invoke(app, ["methods"], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    for name in method_names():
        assert name in result.output
