"""The sum check of a SIAM explanation: one computation, printed alike by the CLI and the page."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

import cnnlens.cli.siam as siam_cli
from cnnlens.cli import app
from cnnlens.models.base import LoadedModel
from cnnlens.siam import SiamConfig, SiamExplanation, SiamModel, SumCheck, render_explanation


def _explanation() -> SiamExplanation:
    """Two images, two outputs (classes a, b), two attributes; image 1 explains class b."""
    contributions = torch.tensor([[[3.0, -1.5], [0.25, 0.25]], [[1.0, 1.0], [-2.0, 0.75]]])
    bias = torch.tensor([0.5, -0.5])
    output = bias + contributions.sum(-1)
    output[1, 1] += 0.125  # a gap of 0.125 in image 1, output b (exact in binary)
    return SiamExplanation(
        attributes=["p", "q"],
        outputs=["a", "b"],
        output=output,
        bias=bias,
        contributions=contributions,
        pooled=torch.zeros(2, 2, 1),
        presence=torch.zeros(2, 2),
        weights=torch.zeros(2, 2),
        maps=torch.zeros(2, 2, 4, 4),
        explained=torch.tensor([0, 1]),
    )


def test_check_by_hand():
    expl = _explanation()
    first = expl.check(0)
    assert first == SumCheck("a", 0.5, 1.5, 2.0) and first.difference == 0.0
    assert first.text() == (
        "bias +0.500000 + sum of contributions +1.500000 = +2.000000; "
        "model output +2.000000; |difference| 0.00e+00"
    )
    second = expl.check(1)  # class b: -0.5 + (-2 + 0.75) = -1.75, output -1.625
    assert second == SumCheck("b", -0.5, -1.25, -1.625)
    assert second.difference == pytest.approx(0.125)
    assert second.text().endswith("model output -1.625000; |difference| 1.25e-01")
    assert expl.error() == pytest.approx(0.125)  # the largest gap over everything


def test_page_prints_the_same_check():
    expl = _explanation()
    text = render_explanation(Image.new("RGB", (4, 4)), expl, index=1)
    assert expl.check(1).text() in text


def _tiny_model() -> SiamModel:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 1))
    config = SiamConfig(attributes=["a", "b", "c"], layer="2", size=16)
    model = SiamModel(config, LoadedModel.wrap(net))
    with torch.no_grad():
        model.head.weight.copy_(torch.tensor([[[3.0], [-1.0], [0.2]]]))
        model.head.bias.fill_(0.25)
    return model.eval()


def test_cli_and_page_show_one_check(tmp_path, monkeypatch):
    model = _tiny_model()
    monkeypatch.setattr(siam_cli, "_load_checkpoint", lambda path: {"model": model})
    image = tmp_path / "scene.png"
    Image.new("RGB", (20, 20), (40, 160, 90)).save(image)
    page = tmp_path / "e.html"
    result = CliRunner().invoke(
        app, ["siam", "explain", str(image), "-c", str(tmp_path / "m.pt"), "-o", str(page)]
    )
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.startswith("  check: ")]
    assert len(lines) == 1
    printed = lines[0].removeprefix("  check: ")
    assert printed.startswith("bias +0.250000 + sum of contributions ")
    assert f'<p class="check">{printed}</p>' in page.read_text(encoding="utf-8")
