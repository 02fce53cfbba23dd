"""RISE (cnnlens.attribution.rise): hand-checkable cases on tiny models, determinism,
targets, model-state invariants and convergence on the bundled model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnlens as cl
import cnnlens.attribution.rise as rise_mod  # registers "rise"
from helpers import ProgressLog, Trap, assert_unchanged, snapshot, tiny_cnn


class LeftHalfModel(nn.Module):
    """Two classes; logit 0 = gain * (mean of the left half of the image - 0.5), logit 1 = 0.

    With an all-ones image and the zero baseline, the left half's mean is the
    mean of the mask over the left half, so P(class 0) rises with how much of
    the left half is visible and does not depend on the right half at all.
    Every operation is per image, so the output does not depend on the batch.
    """

    def __init__(self, gain: float = 12.0):
        super().__init__()
        self.gain = gain

    def forward(self, x):
        w = x.shape[-1]
        left = x[..., : w // 2].mean(dim=(1, 2, 3))
        z = self.gain * (left - 0.5)
        return torch.stack([z, torch.zeros_like(z)], dim=1)


class ConstantModel(nn.Module):
    """Ignores its input: the same logits for every image."""

    def __init__(self, logits=(1.0, 2.0, 3.0)):
        super().__init__()
        self.register_buffer("logits", torch.tensor(logits))

    def forward(self, x):
        return self.logits.expand(x.shape[0], -1)


def _x(n=2, size=40, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g)


def _masks_of(seed, count, size, cells, keep):
    """The masks RISE uses for these settings, rebuilt from the module's helpers."""
    cell = rise_mod.cell_size(*size, cells)
    g = torch.Generator().manual_seed(seed)
    grids, dy, dx = rise_mod.draw_grids(count, cells, keep, cell, g)
    return rise_mod.upsample_masks(grids, dy, dx, size, cell)


# ----------------------------------------------------------------------------- the masks


def test_masks_are_soft_shifted_grids_with_mean_keep():
    m = _masks_of(0, 500, (30, 30), 5, 0.3)
    assert m.shape == (500, 30, 30)
    assert float(m.min()) >= 0.0 and float(m.max()) <= 1.0
    # soft: bilinear upsampling makes values strictly between 0 and 1 near cell borders
    assert ((m > 0.01) & (m < 0.99)).float().mean() > 0.2
    # each grid cell is kept with probability 0.3; bilinear weights sum to 1, so E[M(u)] = 0.3
    assert abs(float(m.mean()) - 0.3) < 0.02
    # random shifts: masks are not aligned to one fixed grid (pixel-wise means are smooth)
    per_pixel = m.mean(0)
    assert float(per_pixel.max() - per_pixel.min()) < 0.15
    ones = _masks_of(0, 20, (30, 30), 5, 1.0)  # keep=1: all ones (up to 1 ulp of bilinear)
    torch.testing.assert_close(ones, torch.ones_like(ones), rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- hand-checkable


def test_map_is_higher_where_the_visible_region_matters():
    net = LeftHalfModel()
    x = torch.ones(1, 3, 32, 32)
    e = cl.attribute(net, x, "rise", target=0, masks=2000, cells=4, baseline="zero")
    m = e.maps[0, 0]
    left, right = float(m[:, :16].mean()), float(m[:, 16:].mean())
    far_right = float(m[:, 24:].mean())
    # Far from the left half a pixel's visibility says nothing about the score, so there
    # S(u) = E[f] * E[M(u)] / p = E[f] = 0.5 (the left half's visible fraction is
    # symmetric about 1/2, and so is the logit). In the left half M(u) rises with that
    # fraction, so S(u) = E[f] + Cov(f, M(u)) / p > E[f]: linearising f around 1/2 (slope
    # gain / 4 = 3) with about 8 independent cells in the left half gives a gap of order
    # 3 * (0.25 / 8) / 0.5 ~ 0.2, less after the sigmoid saturates; measured ~0.1 with
    # 20000 masks, seed-to-seed spread ~0.01 at 2000 masks.
    assert abs(far_right - 0.5) < 0.04, far_right
    assert left - right > 0.06, (left, right)
    assert left - far_right > 0.08, (left, far_right)
    # the map falls from left to right across the middle
    cols = m.mean(0)
    assert float(cols[:12].mean()) > float(cols[14:18].mean()) > float(cols[20:].mean())


def test_keep_one_gives_the_unmasked_score_everywhere():
    net = tiny_cnn()
    net.eval()
    x = _x()
    targets = [[1, 3], [0, 4]]
    e = cl.attribute(net, x, "rise", target=targets, masks=30, keep=1.0)
    with torch.no_grad():
        p = F.softmax(net(x), dim=1)
    want = p.gather(1, torch.tensor(targets))  # (N, T)
    # every mask is all ones: S = 1/(N*1) * sum_i f(x) * 1 = f(x) at every pixel
    want = want[..., None, None].expand_as(e.maps)
    torch.testing.assert_close(e.maps, want, rtol=1e-5, atol=1e-6)


def test_normalisation_on_a_constant_model():
    # f == a for every input. Paper form: S(u) = a / (N p) * sum_i M_i(u); since
    # E[M_i(u)] = p this is about a, exactly a * mean_i M_i(u) / p. Per-pixel form:
    # S(u) = a * sum_i M_i(u) / sum_i M_i(u) = a exactly.
    net = ConstantModel()
    a = F.softmax(net.logits, dim=0)  # class probabilities, the same for every image
    x = _x(n=1, size=36)
    n_masks, keep = 1000, 0.25
    common = {"masks": n_masks, "keep": keep, "cells": 6}
    e = cl.attribute(net, x, "rise", target=[[0, 2]], normalize="paper", **common)
    ratio = e.maps[0] / a[[0, 2]].view(2, 1, 1)
    assert abs(float(ratio.mean()) - 1) < 0.03  # mean over 1296 pixels: sd about 0.007
    assert float((ratio - 1).abs().max()) < 0.25  # any one pixel: sd about 0.055
    exact = _masks_of(0, n_masks, (36, 36), 6, keep).mean(0) / keep
    torch.testing.assert_close(ratio, exact.expand_as(ratio), rtol=1e-5, atol=1e-6)
    # with logits as the score the map is the logit times the same factor
    e = cl.attribute(net, x, "rise", target=1, score="logit", normalize="paper", **common)
    torch.testing.assert_close(e.maps[0, 0], 2.0 * exact, rtol=1e-5, atol=1e-6)
    e = cl.attribute(net, x, "rise", target=[[0, 2]], **common)  # normalize="pixel"
    want = a[[0, 2]].view(2, 1, 1).expand_as(e.maps[0])
    torch.testing.assert_close(e.maps[0], want, rtol=1e-5, atol=1e-7)


def test_pixel_normalisation_is_paper_form_divided_by_the_mean_mask():
    net, x = LeftHalfModel(), torch.rand(2, 3, 24, 24)
    common = {"masks": 200, "cells": 4, "keep": 0.4, "seed": 3, "target": [[0, 1], [1, 0]]}
    paper = cl.attribute(net, x, "rise", normalize="paper", **common).maps
    pixel = cl.attribute(net, x, "rise", **common).maps
    mean_mask = _masks_of(3, 200, (24, 24), 4, 0.4).mean(0)
    torch.testing.assert_close(pixel, paper * 0.4 / mean_mask, rtol=1e-5, atol=1e-6)


def test_centred_map_subtracts_the_mean_score_over_the_masks():
    # S_centred(u) = S(u) - (1/N) sum_i f(x ⊙ M_i). On the left-half model the scores
    # of the masked images are known from the masks: f_i = softmax(gain * (mean of
    # M_i over the left half - 0.5)) for an all-ones image and the zero baseline.
    net, x = LeftHalfModel(), torch.ones(1, 3, 24, 24)
    common = {"masks": 300, "cells": 4, "keep": 0.5, "seed": 2, "target": 0}
    plain = cl.attribute(net, x, "rise", **common)
    centred = cl.attribute(net, x, "rise", centre=True, **common)
    m = _masks_of(2, 300, (24, 24), 4, 0.5)
    f = torch.sigmoid(net.gain * (m[:, :, :12].mean((1, 2)) - 0.5))  # P(class 0) per mask
    torch.testing.assert_close(centred.maps, plain.maps - f.mean(), rtol=1e-5, atol=1e-6)
    assert not plain.signed and centred.signed
    # the left half raises the score; columns more than a cell (6 px) right of the
    # border share no mask cell with it and sit at the mean (measured 0.11 and 0.004)
    assert float(centred.maps[..., :12].mean()) > 0.08
    assert float(centred.maps[..., 18:].abs().mean()) < 0.01
    # a model that ignores its input has no evidence anywhere: exactly zero
    e = cl.attribute(ConstantModel(), _x(n=1, size=36), "rise", masks=50, centre=True)
    assert float(e.maps.abs().max()) < 1e-6


# ----------------------------------------------------------------------------- determinism


def test_same_seed_same_map_for_any_batch_size():
    # LeftHalfModel's output for one image does not depend on the batch: bit-identical maps
    net, x = LeftHalfModel(), torch.rand(1, 3, 24, 24)
    maps = [
        cl.attribute(net, x, "rise", target=0, masks=150, cells=3, batch_size=b).maps
        for b in (1, 4, 7, 150, None)
    ]
    for m in maps[1:]:
        assert torch.equal(m, maps[0])
    # a convolutional model may differ in round-off between batch shapes (oneDNN), no more
    net, x = tiny_cnn(), _x()
    ref = cl.attribute(net, x, "rise", target="top2", masks=120, batch_size=1).maps
    for b in (5, 64, None):
        got = cl.attribute(net, x, "rise", target="top2", masks=120, batch_size=b).maps
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


def test_seed_changes_the_map_and_blocks_do_not(monkeypatch):
    net, x = tiny_cnn(), _x(n=1)
    a = cl.attribute(net, x, "rise", target=2, masks=100, seed=0).maps
    b = cl.attribute(net, x, "rise", target=2, masks=100, seed=1).maps
    assert not torch.allclose(a, b)
    # Masks come in blocks to bound memory; the block size changes nothing but round-off.
    monkeypatch.setattr(rise_mod, "_BLOCK_VALUES", 40 * 40 * 7)  # 7 masks per block
    assert rise_mod.mask_block_size(40, 40, 100) == 7
    built = []
    upsample = rise_mod.upsample_masks

    def recording(grid, *args, **kwargs):
        built.append(grid.shape[0])
        return upsample(grid, *args, **kwargs)

    monkeypatch.setattr(rise_mod, "upsample_masks", recording)
    c = cl.attribute(net, x, "rise", target=2, masks=100, seed=0).maps
    torch.testing.assert_close(c, a, rtol=1e-5, atol=1e-6)
    assert built == [7] * 14 + [2]  # never more than one block of full-size masks at once
    # At the defaults one block of 224 px masks stays within 32 MiB (4000 masks: 800 MB).
    monkeypatch.undo()
    assert rise_mod.mask_block_size(224, 224, 4000) * 224 * 224 * 4 <= 32 * 2**20


def test_several_targets_equal_separate_calls_and_batch_equals_single_images():
    net, x = tiny_cnn(), _x()
    both = cl.attribute(net, x, "rise", target=[[1, 3], [0, 4]], masks=80)
    assert both.maps.shape == (2, 2, 40, 40)
    first = cl.attribute(net, x, "rise", target=[1, 0], masks=80)
    second = cl.attribute(net, x, "rise", target=[3, 4], masks=80)
    assert torch.equal(both.maps[:, 0], first.maps[:, 0])
    assert torch.equal(both.maps[:, 1], second.maps[:, 0])
    alone = cl.attribute(net, x[1:], "rise", target=[[0, 4]], masks=80)
    assert torch.equal(alone.maps[0], both.maps[1])


# ----------------------------------------------------------------------------- API, invariants


def test_registration_parameters_and_progress():
    info = cl.get_method("rise")
    assert not info.signed and info.family == "perturbation"
    assert info.defaults == {
        "masks": 4000,
        "cells": 7,
        "keep": 0.5,
        "score": "prob",
        "batch_size": None,
        "seed": 0,
        "baseline": "zero",
        "normalize": "pixel",
        "centre": False,
    }
    log = ProgressLog()
    with cl.progress.reporting(log):
        e = cl.attribute(tiny_cnn(), _x(), "rise", target=1, masks=50, batch_size=8)
    assert log.starts == [("rise", 2 * 7)] and sum(log.steps) == 14 and log.finished == ["rise"]
    assert e.params["masks"] == 50 and e.extras["masks"] == 50
    assert e.extras["cell_size"] == [6, 6]  # ceil(40 / 7)
    for baseline in ("mean", "blur", -0.5):
        m = cl.attribute(tiny_cnn(), _x(), "rise", target=1, masks=20, baseline=baseline).maps
        assert torch.isfinite(m).all() and float(m.min()) >= 0


@pytest.mark.parametrize(
    "params",
    [
        {"keep": 0},
        {"keep": 1.5},
        {"masks": 0},
        {"cells": 0},
        {"cells": 41},
        {"score": "odds"},
        {"batch_size": 0},
        {"baseline": "noise"},
        {"normalize": "mean"},
    ],
)
def test_bad_parameters_raise(params):
    with pytest.raises(ValueError):
        cl.attribute(tiny_cnn(), _x(), "rise", target=1, **{"masks": 10, **params})


def _odd_state_cnn():
    net = tiny_cnn()
    net.train()
    net[1].eval()
    net[0].weight.requires_grad_(False)
    return net


def test_model_state_is_unchanged_and_no_hooks_are_left():
    net = _odd_state_cnn()
    before = snapshot(net)
    e = cl.attribute(net, _x(), "rise", target=[[1, 3], [0, 4]], masks=60)
    assert_unchanged(before, net)
    assert torch.isfinite(e.maps).all() and e.maps.device == torch.device("cpu")
    assert isinstance(net[3], Trap)


@pytest.mark.parametrize("bad", [7, [1], "top9", -1, "best"])
def test_bad_target_raises_target_error(bad):
    net = _odd_state_cnn()
    before = snapshot(net)
    with pytest.raises(cl.TargetError):
        cl.attribute(net, _x(), "rise", target=bad, masks=10)
    assert_unchanged(before, net)


def test_module_raising_in_forward_leaves_model_unchanged():
    net = _odd_state_cnn()
    net[3].mode = "forward"
    before = snapshot(net)
    with pytest.raises(RuntimeError, match="injected"):
        cl.attribute(net, _x(), "rise", target=1, masks=10)
    assert_unchanged(before, net)
    net[3].mode = "backward"  # RISE never backpropagates: it must succeed
    cl.attribute(net, _x(), "rise", target=1, masks=10)
    assert_unchanged(before, net)


# ----------------------------------------------------------------------------- convergence


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    return float((a @ b) / (a.norm() * b.norm()))


# Measured with these seeds: r = 0.48 (paper normalisation), 0.95 (per-pixel); other seed
# pairs gave 0.36-0.50 and 0.93-0.94. Independent maps would correlate near 0.
R_PAPER_MIN = 0.2
R_PIXEL_MIN = 0.85


def test_converges_on_the_bundled_model():
    # The check (Pearson r >= 0.95 between N = 4000 and 2N = 8000 masks, different
    # seeds, 224 px) costs about 12000 forward passes, minutes on a small CPU, so it lives
    # in benchmarks/bench_rise.py (measured there: r = 0.97 per-pixel, 0.62 paper). Here:
    # the same model and image at 112 px (a quarter of the cost per pass) with N = 1000 vs
    # 2000 (3000 passes, about 10 s). The paper form is derived from the same passes.
    model = cl.load_model()
    x = model.preprocess(list(cl.sample_images(["chelsea"]).values()))
    x = F.interpolate(x, size=(112, 112), mode="bilinear", antialias=True, align_corners=False)
    runs = {(1000, 0): None, (2000, 1): None}
    for n_masks, seed in runs:
        e = cl.attribute(model, x, "rise", target=285, masks=n_masks, seed=seed)
        mean_mask = _masks_of(seed, n_masks, (112, 112), 7, 0.5).mean(0)
        runs[n_masks, seed] = (e.maps[0, 0], e.maps[0, 0] * mean_mask / 0.5)
    (a_pixel, a_paper), (b_pixel, b_paper) = runs.values()
    r_pixel, r_paper = _pearson(a_pixel, b_pixel), _pearson(a_paper, b_paper)
    assert r_pixel >= R_PIXEL_MIN, (r_pixel, r_paper)
    assert r_paper >= R_PAPER_MIN, (r_pixel, r_paper)
