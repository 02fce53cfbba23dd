"""``cnnlens siam data / train / evaluate / explain`` end to end on tiny scenes."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cnnlens.cli import app

runner = CliRunner()


def test_siam_help_lists_commands():
    result = runner.invoke(app, ["siam", "--help"])
    assert result.exit_code == 0
    for cmd in ("data", "train", "evaluate", "explain"):
        assert cmd in result.stdout


def test_train_help_shows_flags_and_choices():
    result = runner.invoke(app, ["siam", "train", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for flag in ("--fine-tune", "--resume", "--interactions"):
        assert f"{flag} / --no-{flag[2:]}" in result.stdout
    assert "<bool>" not in result.stdout  # flags take no value
    assert "regression|classification" in result.stdout and "gap|templates" in result.stdout
    (line,) = [row for row in result.stdout.splitlines() if "--checkpoint <path>" in row]
    assert "-c, --checkpoint" in line  # -c is siam's --checkpoint; dream's --class has none


def test_missing_checkpoint_says_what_to_do(tmp_path):
    result = runner.invoke(app, ["siam", "evaluate", "-c", str(tmp_path / "none.pt")])
    assert result.exit_code == 2
    assert "siam train" in result.output


@pytest.mark.slow
def test_data_train_evaluate_explain(tmp_path):
    folder = tmp_path / "scenes"
    args = ["--n-train", "48", "--n-val", "0", "--n-test", "16", "--size", "64"]
    result = runner.invoke(app, ["siam", "data", str(folder), *args])
    assert result.exit_code == 0, result.output
    assert (folder / "scenic.csv").read_text().startswith("path,split,sky,water")
    ckpt = tmp_path / "m.pt"
    result = runner.invoke(
        app,
        ["siam", "train", "--data", str(folder), "--size", "64", "--epochs", "3", "-c", str(ckpt)],
    )
    assert result.exit_code == 0, result.output
    assert ckpt.exists() and ckpt.with_suffix(".png").exists()
    assert "trained 3 epochs" in result.stdout

    scores = tmp_path / "s.json"
    result = runner.invoke(
        app, ["siam", "evaluate", "-c", str(ckpt), "--data", str(folder), "--json", str(scores)]
    )
    assert result.exit_code == 0, result.output
    assert "task R2" in result.stdout and "pointing game" in result.stdout
    numbers = json.loads(scores.read_text())
    assert numbers["pointing_pairs"] > 0 and set(numbers["weights"]) == set(
        numbers["auc_per_attribute"]
    )

    # Resume to 5 epochs: the history continues instead of restarting.
    result = runner.invoke(
        app,
        [
            "siam",
            "train",
            "--data",
            str(folder),
            "--size",
            "64",
            "--epochs",
            "5",
            "--resume",
            "-c",
            str(ckpt),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "trained 5 epochs" in result.stdout
    mismatched = ["--pooling", "templates", "--resume", "-c", str(ckpt)]
    result = runner.invoke(
        app, ["siam", "train", "--data", str(folder), "--size", "64", *mismatched]
    )
    assert result.exit_code == 2 and "other settings" in result.output

    page = tmp_path / "e.html"
    image = folder / "images" / "test_00000.png"
    result = runner.invoke(app, ["siam", "explain", str(image), "-c", str(ckpt), "-o", str(page)])
    assert result.exit_code == 0, result.output
    (check,) = [line[9:] for line in result.stdout.splitlines() if line.startswith("  check: ")]
    assert check.startswith("bias ") and "|difference|" in check
    text = page.read_text(encoding="utf-8")
    assert f'<p class="check">{check}</p>' in text  # the page prints the same numbers
    assert text.startswith("<!DOCTYPE html>") and "data:image/png;base64," in text
    assert "http://" not in text and "https://" not in text
