"""Extremal perturbations (cnnlens.perturbation.extremal): the ranking regulariser and the
smooth max-convolution against hand values, a model whose evidence is a known square,
determinism, targets and areas, parameter checks and the bundled model."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import cnnlens as cl
from cnnlens.core import progress
from cnnlens.perturbation import extremal as ex
from helpers import ProgressLog, tiny_cnn

SIZE = 64
SQUARES = ((10, 8, 34, 32), (32, 34, 56, 58))  # (x0, y0, x1, y1), end exclusive
AREA = 24 * 24 / SIZE**2  # both squares are 24 x 24: 14.1% of the image


class SquareModel(nn.Module):
    """Class ``c``'s logit: mean of ``<t(u), z(u)>`` over square ``c`` minus the mean outside.

    ``t`` is the image being explained, so keeping a pixel of the square adds its
    ``‖x(u)‖²``, while a blurred, constant or noise pixel correlates far less with it;
    keeping pixels outside the square counts against the class. Every operation is per
    image, so the output does not depend on the batch.
    """

    def __init__(self, template: torch.Tensor, squares=SQUARES):
        super().__init__()
        inside = torch.zeros(len(squares), SIZE, SIZE)
        for c, (x0, y0, x1, y1) in enumerate(squares):
            inside[c, y0:y1, x0:x1] = 1
        self.register_buffer("inside", inside)
        self.register_buffer("template", template)

    def forward(self, z):
        d = (z * self.template).sum(1).unsqueeze(1)  # (B, 1, H, W)
        i = self.inside.unsqueeze(0)
        mean_in = (d * i).sum((2, 3)) / i.sum((2, 3))
        mean_out = (d * (1 - i)).sum((2, 3)) / (1 - i).sum((2, 3))
        return mean_in - mean_out


def _image(seed=10):  # not 0: the noise perturbation draws from seed 0
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 3, SIZE, SIZE, generator=g)


def _square_iou(mask: torch.Tensor, square) -> float:
    """IoU of the square with the mask's ``|square|`` highest pixels."""
    x0, y0, x1, y1 = square
    truth = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    truth[y0:y1, x0:x1] = True
    k = int(truth.sum())
    chosen = torch.zeros(SIZE * SIZE, dtype=torch.bool)
    chosen[mask.flatten().topk(k).indices] = True
    chosen = chosen.view(SIZE, SIZE)
    return float((chosen & truth).sum() / (chosen | truth).sum())


# ----------------------------------------------------------------------------- area constraint


def test_ranking_target_is_zeros_then_ones():
    assert ex.ranking_target(4, 0.5).tolist() == [0, 0, 1, 1]
    assert ex.ranking_target(10, 0.14).tolist() == [0] * 9 + [1]  # round(1.4) = 1 one
    assert ex.ranking_target(3, 0.01).tolist() == [0, 0, 0]


def test_area_regulariser_by_hand():
    m = torch.tensor([[[0.2, 0.9], [0.5, 0.1]]])  # sorted: 0.1, 0.2, 0.5, 0.9
    # a = 0.5, r = (0, 0, 1, 1): 0.1² + 0.2² + 0.5² + 0.1² = 0.31, over 4 pixels
    torch.testing.assert_close(ex.area_regulariser(m, 0.5), torch.tensor([0.0775]))
    # a = 0.75, r = (0, 1, 1, 1): 0.1² + 0.8² + 0.5² + 0.1² = 0.91
    torch.testing.assert_close(ex.area_regulariser(m, 0.75), torch.tensor([0.2275]))
    # one value per mask in a batch, each with its own area
    both = ex.area_regulariser(torch.cat([m, m]), torch.tensor([0.5, 0.75]))
    torch.testing.assert_close(both, torch.tensor([0.0775, 0.2275]))


def test_area_regulariser_is_zero_exactly_at_binary_masks_of_the_area():
    m = torch.zeros(1, 1, 10, 10)
    m[..., 2:4, 3:8] = 1  # 10 pixels: a = 0.1
    assert float(ex.area_regulariser(m, 0.1)) == 0.0
    assert float(ex.area_regulariser(m, 0.2)) == pytest.approx(10 / 100)  # 10 ones missing
    # it does not care where the ones are, nor about the tie-breaking order
    moved = torch.roll(m, shifts=(5, 1), dims=(2, 3))
    perm = torch.randperm(100, generator=torch.Generator().manual_seed(3))
    assert float(ex.area_regulariser(moved, 0.1, perm)) == 0.0
    soft = torch.rand(2, 1, 10, 10, generator=torch.Generator().manual_seed(4))
    ref = ((soft.flatten(1).sort(1).values - ex.ranking_target(100, 0.3)) ** 2).mean(1)
    torch.testing.assert_close(ex.area_regulariser(soft, 0.3), ref)
    torch.testing.assert_close(ex.area_regulariser(soft, 0.3, perm), ref)


# ----------------------------------------------------------------------------- smooth masks


def test_smooth_max_by_hand():
    v = torch.tensor([0.0, 1.0, 2.0])
    assert float(ex.smooth_max(v, 0, 0.0)) == 2.0
    e1, e2 = math.exp(1), math.exp(2)
    assert float(ex.smooth_max(v, 0, 1.0)) == pytest.approx((e1 + 2 * e2) / (1 + e1 + e2))
    assert float(ex.smooth_max(v, 0, 1e4)) == pytest.approx(1.0, abs=1e-3)  # the mean
    assert float(ex.smooth_max(v, 0, 0.01)) == pytest.approx(2.0, abs=1e-6)  # the max


def test_lattice_and_kernel():
    pos = ex.lattice(224, 7.0)
    assert len(pos) == 32 and pos[0] == 3 and pos[-1] == 220  # centres of 7-pixel cells
    assert ex.lattice(48, 48 / 32).tolist()[:3] == [0.25, 1.75, 3.25]  # 1.5-pixel cells
    k = ex.kernel_matrix(224, 7.0, 21.0)
    assert k.shape == (224, 32)
    assert float(k[3, 0]) == 1.0
    assert float(k[10, 0]) == pytest.approx(math.exp(-49 / (2 * 21**2)))
    assert ex.default_step((224, 300)) == 7.0


def test_max_convolution_by_hand():
    # a 1 x 5 image, lattice step 2 (points at 0, 2, 4), σ = 1: k(d) = exp(-d² / 2)
    masker = ex.SmoothMask((1, 5), 2.0, 1.0)
    assert masker.shape == (1, 3)
    m = masker(torch.tensor([[[1.0, 0.0, 0.5]]]))[0, 0, 0]
    e = math.exp
    want = [1.0, e(-0.5), e(-2), 0.5 * e(-0.5), 0.5]  # max_v k(u - v) m̄(v)
    torch.testing.assert_close(m, torch.tensor(want))


def test_separable_max_convolution_equals_the_2d_max():
    g = torch.Generator().manual_seed(0)
    params = torch.rand(2, 5, 6, generator=g)
    masker = ex.SmoothMask((17, 20), 3.5, 4.0)
    assert masker.shape == (5, 6)
    got = masker(params)[:, 0]
    ky, kx = masker.ky, masker.kx
    brute = ky[None, :, None, :, None] * kx[None, None, :, None, :] * params[:, None, None]
    torch.testing.assert_close(got, brute.flatten(3).amax(3))
    assert float(got.max()) <= 1.0 and float(got.min()) >= 0.0


def test_mask_gradient_is_the_kernel_weighted_sum():
    g = torch.Generator().manual_seed(1)
    params = torch.rand(1, 4, 4, generator=g, requires_grad=True)
    masker = ex.SmoothMask((12, 12), 3.0, 3.0)
    up = torch.randn(1, 1, 12, 12, generator=g)
    (grad,) = torch.autograd.grad((masker(params) * up).sum(), params)
    torch.testing.assert_close(grad[0], masker.ky.T @ up[0, 0] @ masker.kx)


# ----------------------------------------------------------------------------- known square


@pytest.mark.parametrize(
    "variant, perturbation",
    [("preserve", "blur"), ("delete", "blur"), ("preserve", "constant"), ("delete", "noise")],
)
def test_the_mask_finds_the_square(variant, perturbation):
    x = _image()
    e = cl.attribute(
        SquareModel(x[0]), x, "extremal", target=0, areas=AREA, variant=variant,
        perturbation=perturbation,
    )  # fmt: skip
    assert e.maps.shape == (1, 1, SIZE, SIZE)
    assert _square_iou(e.maps[0, 0], SQUARES[0]) >= 0.5
    # the achieved area: pixels over one half within 2 points of a, the mean within 5
    assert abs(float(e.extras["area_half"]) - AREA) < 0.02
    assert abs(float(e.extras["area"]) - AREA) < 0.05
    # the optimised score is far better than the fully perturbed image's
    s, s_blur = float(e.extras["score"]), float(e.extras["score_perturbed"])
    assert (s > s_blur + 1.0) if variant == "preserve" else (s < s_blur - 1.0)
    assert int(e.extras["iterations"]) < 800  # converged before the limit


def test_several_targets_and_areas_equal_separate_calls():
    x = _image(seed=2)
    model = SquareModel(x[0])
    both = cl.attribute(model, x, "extremal", target=[[0, 1]], areas=(0.08, AREA))
    assert both.maps.shape == (1, 2, SIZE, SIZE)
    assert both.extras["masks"].shape == (1, 2, 2, SIZE, SIZE)
    assert both.extras["score"].shape == both.extras["area"].shape == (1, 2, 2)
    torch.testing.assert_close(both.maps, both.extras["masks"].sum(2))
    for t in (0, 1):
        assert _square_iou(both.extras["masks"][0, t, 1], SQUARES[t]) >= 0.5
        for i, a in enumerate((0.08, AREA)):
            one = cl.attribute(model, x, "extremal", target=t, areas=a)
            torch.testing.assert_close(one.maps[0, 0], both.extras["masks"][0, t, i])
    # the smaller area keeps fewer pixels
    half = both.extras["area_half"][0]
    assert bool((half[:, 0] < half[:, 1]).all())


def test_deterministic_and_seeded():
    x = _image(seed=3)
    model = SquareModel(x[0])
    kw = dict(target=0, areas=0.1, perturbation="noise", iterations=60)
    a = cl.attribute(model, x, "extremal", **kw)
    b = cl.attribute(model, x, "extremal", **kw)
    assert torch.equal(a.maps, b.maps)
    c = cl.attribute(model, x, "extremal", seed=1, **kw)
    assert not torch.equal(a.maps, c.maps)  # other noise, other tie order


def test_progress_is_reported_per_iteration():
    net, x = tiny_cnn(), torch.randn(1, 3, 24, 24)
    log = ProgressLog()
    with progress.reporting(log):
        e = cl.attribute(net, x, "extremal", target=1, iterations=7)
    assert log.starts == [("extremal", 7)] and log.finished == ["extremal"]
    assert sum(log.steps) == 7 == int(e.extras["iterations"])
    # a run that converges early still completes its bar
    log = ProgressLog()
    with progress.reporting(log):
        e = cl.attribute(net, x, "extremal", target=1, iterations=2000)
    assert int(e.extras["iterations"]) < 2000
    assert sum(log.steps) == 2000


@pytest.mark.parametrize(
    "params",
    [
        {"areas": 0.0},
        {"areas": 1.0},
        {"areas": []},
        {"areas": "0.1"},
        {"areas": (0.1, True)},
        {"variant": "keep"},
        {"perturbation": "zero"},
        {"iterations": 0},
        {"iterations": 2.5},
        {"learning_rate": 0},
        {"momentum": 1.0},
        {"area_weight": (1.0,)},
        {"area_weight": (0.0, 10.0)},
        {"smoothness": -1.0},
        {"mask_step": 0},
        {"mask_sigma": float("nan")},
        {"mask_step": 100.0},
        {"score": "softmax"},
        {"seed": "0"},
    ],
)
def test_bad_parameters_are_refused(params):
    with pytest.raises(ValueError):
        cl.attribute(tiny_cnn(), torch.randn(1, 3, 32, 32), "extremal", target=1, **params)


# ----------------------------------------------------------------------------- bundled model


@pytest.mark.slow
def test_bundled_model_keeps_espresso_evidence():
    model = cl.load_model()
    x = model.preprocess(cl.sample_images(["coffee"])["coffee"])
    x = x.unsqueeze(0) if x.dim() == 3 else x
    e = cl.attribute(model, x, "extremal", target=967, iterations=150)
    assert abs(float(e.extras["area_half"]) - 0.1) < 0.02
    keys = ("score", "score_before", "score_perturbed")
    logit, before, blurred = (float(e.extras[k]) for k in keys)
    assert logit > blurred + 0.4 * (before - blurred)  # see docs/methods.md for the numbers
