"""GradientSHAP: exact values on a linear model, agreement with Captum 0.9 in expectation,
variance shrinking with samples, and seeded determinism independent of batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cnnlens.attribution.gradient_shap import draws, gradient_shap
from cnnlens.models.base import LoadedModel
from helpers import tiny_cnn

GradientShap = pytest.importorskip("captum.attr").GradientShap


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten().double(), b.flatten().double()]))[0, 1])


def _linear():
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 2, 2))
    with torch.no_grad():
        net[1].weight.copy_(torch.arange(24.0).view(2, 12) / 10 - 1)
        net[1].bias.fill_(0.5)
    return LoadedModel.wrap(net.eval())


def test_linear_model_by_hand():
    # s = <w, x> + b has the constant gradient w, so each sample gives (x + e_j - b_j) * w
    # whatever a_j: the map is w * (x - mean_j b_j) summed over colour, plus the noise term.
    model = _linear()
    x = torch.arange(12.0).view(1, 3, 2, 2) / 4
    dist = torch.stack([torch.zeros(3, 2, 2), torch.ones(3, 2, 2), -torch.ones(3, 2, 2)])
    out = gradient_shap(model, x, 1, baselines=dist, samples=7, seed=3)
    pick, _, _ = draws(1, 3, 7, 3)
    mean_ref = dist[pick].mean(0)
    w = model.net[1].weight[1].view(3, 2, 2)
    torch.testing.assert_close(out.maps[0, 0], (w * (x[0] - mean_ref)).sum(0))
    # with one reference it is exact: (x - 0) * w, and it adds up to s(x) - s(0)
    one = gradient_shap(model, x, 1, baselines="zero", samples=3, stdev=0.0)
    torch.testing.assert_close(one.maps[0, 0], (w * x[0]).sum(0))
    torch.testing.assert_close(one.maps.sum(), (w * x[0]).sum())


def test_noise_enters_the_difference_as_in_captum():
    # Captum forms (x + e - b) * grad: on a linear model the noise shows up in the map.
    model = _linear()
    x = torch.zeros(1, 3, 2, 2)
    clean = gradient_shap(model, x, 0, baselines="zero", samples=4, stdev=0.0).maps
    noisy = gradient_shap(model, x, 0, baselines="zero", samples=4, stdev=1.0).maps
    assert torch.equal(clean, torch.zeros_like(clean)) and noisy.abs().max() > 0.05


@pytest.fixture(scope="module")
def setting():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 16, 16, generator=g)
    dist = torch.randn(4, 3, 16, 16, generator=g)
    return LoadedModel.wrap(tiny_cnn().eval()), x, dist


def test_agrees_with_captum_in_expectation(setting):
    model, x, dist = setting
    ours = gradient_shap(model, x, 2, baselines=dist, samples=512, stdev=0.2).maps[:, 0]
    np.random.seed(0)
    torch.manual_seed(0)
    theirs = GradientShap(model.net).attribute(x, dist, target=2, n_samples=512, stdevs=0.2)
    assert _pearson(ours, theirs.sum(1).detach()) >= 0.95


def test_variance_across_seeds_shrinks_with_samples(setting):
    model, x, dist = setting

    def spread(samples: int) -> float:
        maps = torch.stack([
            gradient_shap(model, x, 2, baselines=dist, samples=samples, stdev=0.2, seed=s).maps
            for s in range(6)
        ])  # fmt: skip
        return float(maps.var(0).mean())

    few, many = spread(4), spread(64)
    assert many < few / 4, (few, many)  # Monte Carlo: 16x the samples, about 1/16 the variance


def test_seeded_and_independent_of_batch_size(setting):
    model, x, dist = setting
    kw = dict(baselines=dist, samples=10, stdev=0.3)
    a = gradient_shap(model, x, [[1, 2]], seed=5, **kw).maps
    torch.testing.assert_close(
        a, gradient_shap(model, x, [[1, 2]], seed=5, batch_size=3, **kw).maps
    )
    assert not torch.equal(a, gradient_shap(model, x, [[1, 2]], seed=6, **kw).maps)


def test_bad_parameters_are_refused(setting):
    model, x, dist = setting
    with pytest.raises(ValueError, match="samples"):
        gradient_shap(model, x, 1, samples=0)
    with pytest.raises(ValueError, match="stdev"):
        gradient_shap(model, x, 1, stdev=-1.0)
    with pytest.raises(ValueError, match="baseline"):
        gradient_shap(model, x, 1, baselines=torch.zeros(2, 3, 8, 8))
