"""Reference values for every attribution method, worked out by hand on tiny models.

Each model here has hand-set weights, so every number a method should return can be
written down on paper. The comments next to each expected tensor show the arithmetic.
Conventions used below:

* ``ramp4`` is the 4x4 image ``v(i, j) = 4 i + j``, i.e. ``arange(16).view(4, 4)``::

      0  1  2  3
      4  5  6  7
      8  9 10 11
     12 13 14 15

* ``ramp5`` is the 5x5 image ``v(i, j) = 5 i + j``.
* With ``score="logit"`` and a linear model ``s_c(x) = <W_c, x> + b_c`` the occlusion drop
  of one window p is ``<W_c, (x - baseline) restricted to p>``, so maps are sums of pixel
  values that can be added up by hand.
"""

from __future__ import annotations

import gc

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnlens as cl
from cnnlens.core import layers as cl_layers
from cnnlens.core.targets import resolve_targets


def close(actual: torch.Tensor, expected, atol: float = 1e-5, rtol: float = 1e-6) -> None:
    expected = torch.as_tensor(expected, dtype=actual.dtype)
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol)


@pytest.fixture(autouse=True)
def _fresh_default_layer_cache():
    # cnnlens.layers caches each model's default layer; start every test from an empty
    # cache so the results below cannot depend on test order.
    cache = getattr(cl_layers, "_DEFAULT_CACHE", None)
    if cache is not None:
        cache.clear()
    yield


# --------------------------------------------------------------------------- toy models


class LinearProbe(nn.Module):
    """``logits[n, c] = sum_{k,i,j} weight[c, k, i, j] * x[n, k, i, j] + bias[c]``.

    Its gradient with respect to the input is ``weight[c]`` whatever the input.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        weight = torch.as_tensor(weight, dtype=torch.float32)
        self.weight = nn.Parameter(weight)
        b = torch.zeros(weight.shape[0]) if bias is None else torch.as_tensor(bias).float()
        self.bias = nn.Parameter(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("ckij,nkij->nc", self.weight, x) + self.bias


def image(*channels, n_channels: int = 3) -> torch.Tensor:
    """A ``(1, 3, H, W)`` image from the given channel planes (missing channels are zero)."""
    planes = [torch.as_tensor(c, dtype=torch.float32) for c in channels]
    h, w = planes[0].shape
    x = torch.zeros(1, n_channels, h, w)
    for k, p in enumerate(planes):
        x[0, k] = p
    return x


RAMP4 = torch.arange(16.0).view(4, 4)
RAMP5 = torch.arange(25.0).view(5, 5)


def probe_4x4() -> LinearProbe:
    """Class 0: sum of every pixel of every channel.  Class 1: 2 x (channel 0, columns 0-1)."""
    w = torch.zeros(2, 3, 4, 4)
    w[0] = 1.0
    w[1, 0, :, :2] = 2.0
    return LinearProbe(w)


# --------------------------------------------------------------------------- occlusion


def test_occlusion_non_overlapping_windows_zero_baseline_two_images_two_targets():
    # Window 2, stride 2 on 4x4: four disjoint 2x2 blocks, every pixel covered once, so each
    # pixel gets the drop of its own block = the block's pixel sum (baseline zero).
    # ramp4 block sums: top-left 0+1+4+5=10, top-right 2+3+6+7=18,
    #                   bottom-left 8+9+12+13=42, bottom-right 10+11+14+15=50.
    # Image 2 is 15 - ramp4: block sums 60-10=50, 60-18=42, 60-42=18, 60-50=10.
    # Class 1 only sees columns 0-1 of channel 0, twice: right blocks drop 0.
    x = torch.cat([image(RAMP4), image(15 - RAMP4)])
    e = cl.attribute(
        probe_4x4(), x, "occlusion", target=[[0, 1], [1, 0]], window=2, stride=2, score="logit"
    )
    assert e.targets.tolist() == [[0, 1], [1, 0]]
    assert e.signed is True
    assert e.extras["positions"] == 4
    close(e.maps[0, 0], [[10, 10, 18, 18], [10, 10, 18, 18], [42, 42, 50, 50], [42, 42, 50, 50]])
    close(e.maps[0, 1], [[20, 20, 0, 0], [20, 20, 0, 0], [84, 84, 0, 0], [84, 84, 0, 0]])
    close(e.maps[1, 0], [[100, 100, 0, 0], [100, 100, 0, 0], [36, 36, 0, 0], [36, 36, 0, 0]])
    close(e.maps[1, 1], [[50, 50, 42, 42], [50, 50, 42, 42], [18, 18, 10, 10], [18, 18, 10, 10]])


def test_occlusion_overlapping_windows_average_the_drops():
    # Window 2, stride 1 on 4x4: starts 0, 1, 2 on each axis (9 windows). The drop of the
    # window at (py, px) on ramp4 is sum_{i in py..py+1, j in px..px+1} (4i + j)
    #   = 16 py + 4 px + 10                       (check: (0,0) -> 0+1+4+5 = 10).
    # Pixel (r, c) averages the windows covering it, so its value is 16 m(r) + 4 m(c) + 10
    # with m = mean covering start = [0, 0.5, 1.5, 2] for r = 0..3.
    # E.g. (1,1) is covered by (0,0),(0,1),(1,0),(1,1): (10 + 14 + 26 + 30) / 4 = 20.
    e = cl.attribute(
        probe_4x4(), image(RAMP4), "occlusion", target=0, window=2, stride=1, score="logit"
    )
    assert e.extras["positions"] == 9
    close(e.maps[0, 0], [[10, 12, 16, 18], [18, 20, 24, 26], [34, 36, 40, 42], [42, 44, 48, 50]])


def test_occlusion_adds_an_edge_aligned_window_in_one_row():
    # 1x5 image [1, 2, 3, 4, 5], window (1, 2), stride (1, 2): starts 0, 2 and, because
    # (5 - 2) % 2 = 1, one more window flush with the border at 3.
    # Drops: start 0 -> 1+2 = 3, start 2 -> 3+4 = 7, start 3 -> 4+5 = 9.
    # Pixel 3 is covered by starts 2 and 3: (7 + 9) / 2 = 8.
    w = torch.zeros(1, 3, 1, 5)
    w[0, 0] = 1.0
    x = image(torch.tensor([[1.0, 2, 3, 4, 5]]))
    e = cl.attribute(
        LinearProbe(w), x, "occlusion", target=0, window=(1, 2), stride=(1, 2), score="logit"
    )
    assert e.extras["positions"] == 3
    close(e.maps[0, 0], [[3, 3, 7, 8, 9]])


def test_occlusion_edge_aligned_window_in_two_dimensions():
    # ramp5, window 2, stride 2: starts [0, 2] + edge-aligned 3 on each axis (9 windows).
    # Drop of the window at (py, px): sum of 5i + j over the 2x2 block = 20 py + 4 px + 12.
    # Mean covering start per row/column: m = [0, 0, 2, 2.5, 3], so the map is
    # 20 m(r) + 4 m(c) + 12. Check (3,3): windows (2,2),(2,3),(3,2),(3,3) drop
    # 60, 64, 80, 84 -> mean 72 = 20*2.5 + 4*2.5 + 12.
    w = torch.zeros(1, 3, 5, 5)
    w[0, 0] = 1.0
    e = cl.attribute(
        LinearProbe(w), image(RAMP5), "occlusion", target=0, window=2, stride=2, score="logit"
    )
    assert e.extras["positions"] == 9
    close(
        e.maps[0, 0],
        [
            [12, 12, 20, 22, 24],
            [12, 12, 20, 22, 24],
            [52, 52, 60, 62, 64],
            [62, 62, 70, 72, 74],
            [72, 72, 80, 82, 84],
        ],
    )


def test_occlusion_without_extra_window_when_stride_reaches_the_border():
    # ramp5, window 3, stride 2: (5 - 3) % 2 == 0, starts [0, 2] only (4 windows).
    # Drop at (py, px) = sum of 5i + j over a 3x3 block = 45 py + 9 px + 54.
    # Mean covering start: m = [0, 0, 1, 2, 2] (pixel 2 is covered by starts 0 and 2).
    w = torch.zeros(1, 3, 5, 5)
    w[0, 0] = 1.0
    e = cl.attribute(
        LinearProbe(w), image(RAMP5), "occlusion", target=0, window=3, stride=2, score="logit"
    )
    assert e.extras["positions"] == 4
    m = torch.tensor([0.0, 0, 1, 2, 2])
    close(e.maps[0, 0], 45 * m[:, None] + 9 * m[None, :] + 54)
    close(e.maps[0, 0, 2, 2], 54 + 45 + 9)  # (54 + 72 + 144 + 162) / 4 = 108


@pytest.mark.parametrize("value", [2.0, 2])
def test_occlusion_constant_baseline(value):
    # Class 0 sums all three channels; the constant replaces every channel. Channel 0 of a
    # block drops (block sum - 4 * 2), channels 1 and 2 (zeros) drop (0 - 4 * 2) each:
    # block sum - 24 -> 10-24, 18-24, 42-24, 50-24.
    e = cl.attribute(
        probe_4x4(),
        image(RAMP4),
        "occlusion",
        target=0,
        window=2,
        stride=2,
        baseline=value,
        score="logit",
    )
    close(
        e.maps[0, 0], [[-14, -14, -6, -6], [-14, -14, -6, -6], [18, 18, 26, 26], [18, 18, 26, 26]]
    )


def test_occlusion_mean_baseline_is_each_images_own_mean_colour():
    # Class 0 sums all three channels. Image 1: channel 0 = ramp4 (mean 7.5), channel 1 = 3,
    # channel 2 = -1. Per-channel means make channels 1 and 2 drop nothing, channel 0 drops
    # block sum - 4 * 7.5 = 10-30, 18-30, 42-30, 50-30.
    # (A single grey mean over all channels, (7.5+3-1)/3, would give other numbers.)
    # Image 2: channel 0 = 2 * ramp4 (mean 15): 20-60, 36-60, 84-60, 100-60.
    # (A mean over the whole batch would mix the two images.)
    x1 = image(RAMP4, torch.full((4, 4), 3.0), torch.full((4, 4), -1.0))
    x2 = image(2 * RAMP4)
    e = cl.attribute(
        probe_4x4(),
        torch.cat([x1, x2]),
        "occlusion",
        target=0,
        window=2,
        stride=2,
        baseline="mean",
        score="logit",
    )
    close(
        e.maps[0, 0],
        [[-20, -20, -12, -12], [-20, -20, -12, -12], [12, 12, 20, 20], [12, 12, 20, 20]],
    )
    close(
        e.maps[1, 0],
        [[-40, -40, -24, -24], [-40, -40, -24, -24], [24, 24, 40, 40], [24, 24, 40, 40]],
    )


def test_occlusion_zero_baseline_is_the_default():
    e = cl.attribute(
        probe_4x4(), image(RAMP4), "occlusion", target=0, window=2, stride=2, score="logit"
    )
    assert e.params["baseline"] == "zero"
    close(e.maps[0, 0, 0], [10, 10, 18, 18])


class SquareNet(nn.Module):
    """A non-linear score: logit_0 = sum(x^2), logit_1 = sum(x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x.pow(2).flatten(1).sum(1), x.flatten(1).sum(1)], dim=1)


def test_occlusion_blur_baseline_leaves_a_constant_image_unchanged():
    # Blurring a constant image gives the same image, so no window changes the score.
    x = torch.full((2, 3, 12, 12), 0.7)
    x[1] = -1.3
    e = cl.attribute(
        SquareNet(),
        x,
        "occlusion",
        target=[[0, 1], [0, 1]],
        window=4,
        stride=2,
        baseline="blur",
        score="logit",
    )
    close(e.maps, torch.zeros(2, 2, 12, 12), atol=1e-4)
    # The same setting on a non-constant image does change the score (the test can fail).
    ramp = torch.arange(144.0).view(1, 1, 12, 12).repeat(1, 3, 1, 1) / 144
    e = cl.attribute(
        SquareNet(), ramp, "occlusion", target=0, window=4, stride=2, baseline="blur", score="logit"
    )
    assert e.maps.abs().max() > 1e-2


def test_occlusion_prob_and_logprob_scores():
    # Two classes with logits [s, 0], s = sum of channel 0, so p_0 = sigmoid(s).
    # Row [1, 0.5, 0.25, 0.25]: s = 2. Window (1, 2), stride (1, 2): occluding the left pair
    # leaves s = 0.5, the right pair s = 1.5.
    w = torch.zeros(2, 3, 1, 4)
    w[0, 0] = 1.0
    x = image(torch.tensor([[1.0, 0.5, 0.25, 0.25]]))
    sig = torch.sigmoid
    s, left, right = torch.tensor(2.0), torch.tensor(0.5), torch.tensor(1.5)
    kw = dict(window=(1, 2), stride=(1, 2))
    e = cl.attribute(LinearProbe(w), x, "occlusion", target=[[0, 1]], score="prob", **kw)
    d_left, d_right = sig(s) - sig(left), sig(s) - sig(right)
    close(e.maps[0, 0, 0], torch.stack([d_left, d_left, d_right, d_right]), atol=1e-6)
    # p_1 = 1 - p_0: its drops are the negatives.
    close(e.maps[0, 1, 0], -torch.stack([d_left, d_left, d_right, d_right]), atol=1e-6)
    e = cl.attribute(LinearProbe(w), x, "occlusion", target=0, score="logprob", **kw)
    lg = F.logsigmoid
    close(e.maps[0, 0, 0], torch.stack([lg(s) - lg(left)] * 2 + [lg(s) - lg(right)] * 2), atol=1e-6)
    # The default score is the probability.
    e = cl.attribute(LinearProbe(w), x, "occlusion", target=0, **kw)
    close(e.maps[0, 0, 0, 0], d_left, atol=1e-6)


def test_occlusion_batch_size_does_not_change_the_maps():
    # Same ramp5 setting as the edge-aligned test, two images, top-2 targets.
    w = torch.zeros(2, 3, 5, 5)
    w[0, 0] = 1.0
    w[1, 0] = -1.0
    x = torch.cat([image(RAMP5), image(RAMP5 + 1)])
    maps = [
        cl.attribute(
            LinearProbe(w),
            x,
            "occlusion",
            target="top2",
            window=2,
            stride=2,
            score="logit",
            batch_size=bs,
        ).maps
        for bs in (1, 4, 1000)
    ]
    assert torch.equal(maps[0], maps[1]) and torch.equal(maps[0], maps[2])
    # Class 0 wins (positive sum); its map is the hand-computed one, class 1 the negative.
    m = torch.tensor([0.0, 0, 2, 2.5, 3])
    expected = 20 * m[:, None] + 4 * m[None, :] + 12
    close(maps[0][0, 0], expected)
    close(maps[0][0, 1], -expected)
    # Image 2 adds 1 to every pixel: each 2x2 window drops 4 more.
    close(maps[0][1, 0], expected + 4)


# --------------------------------------------------------------------------- gradient

# Hand-set weights of a 2-class linear model on 3x2x2 inputs (class, channel, row, col).
W_GRAD = torch.tensor(
    [
        [  # class 0
            [[1.0, -2.0], [3.0, 0.0]],
            [[-4.0, 1.0], [0.0, 0.5]],
            [[0.0, 2.0], [-1.0, -0.5]],
        ],
        [  # class 1
            [[0.0, 0.0], [0.0, 2.0]],
            [[1.0, 1.0], [1.0, 1.0]],
            [[-3.0, 0.0], [0.0, 0.0]],
        ],
    ]
)
# max_k |W_ck|, per pixel:
ABSMAX = [[[4.0, 2.0], [3.0, 0.5]], [[3.0, 1.0], [1.0, 2.0]]]
# sum_k W_ck:  class 0: [1-4+0, -2+1+2; 3+0-1, 0+0.5-0.5];  class 1: [0+1-3, 0+1+0; 0+1+0, 2+1+0]
SUM = [[[-3.0, 1.0], [2.0, 0.0]], [[-2.0, 1.0], [1.0, 3.0]]]
# sqrt(sum_k W_ck^2): class 0: [sqrt(1+16+0), sqrt(4+1+4); sqrt(9+0+1), sqrt(0+.25+.25)]
L2 = [
    [[17**0.5, 3.0], [10**0.5, 0.5**0.5]],
    [[10**0.5, 1.0], [1.0, 5**0.5]],
]


@pytest.mark.parametrize(
    ("reduce", "expected", "signed"),
    [("absmax", ABSMAX, False), ("sum", SUM, True), ("l2", L2, False)],
)
def test_gradient_of_a_linear_model_is_its_weight(reduce, expected, signed):
    x = torch.randn(2, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    e = cl.attribute(LinearProbe(W_GRAD), x, "gradient", target=[[0, 1], [1, 0]], reduce=reduce)
    assert e.signed is signed
    exp = torch.tensor(expected)
    close(e.maps[0], exp)
    close(e.maps[1], exp.flip(0))  # image 2 asked for class 1 first


def test_gradient_default_is_absmax_of_the_logit():
    e = cl.attribute(LinearProbe(W_GRAD), torch.zeros(1, 3, 2, 2), "gradient", target=0)
    assert e.params["reduce"] == "absmax" and e.params["score"] == "logit"
    close(e.maps[0, 0], ABSMAX[0])


def test_gradient_of_softmax_probability_is_the_jacobian_row():
    # x = 0 and biases [0, log 3] give p = [1/4, 3/4]. For two classes
    #   d p_0 / d x = p_0 p_1 (W_0 - W_1) = 3/16 (W_0 - W_1),   d p_1 / d x = -d p_0 / d x,
    #   d log p_0 / d x = p_1 (W_0 - W_1) = 3/4 (W_0 - W_1).
    # W_0 - W_1 per channel: [1,-2; 3,-2], [-5,0; -1,-0.5], [3,2; -1,-0.5]
    #   channel sum  [-1, 0; 1, -3],   max |.|  [5, 2; 3, 2].
    model = LinearProbe(W_GRAD, bias=torch.tensor([0.0, torch.log(torch.tensor(3.0)).item()]))
    x = torch.zeros(1, 3, 2, 2)
    diff_sum = torch.tensor([[-1.0, 0.0], [1.0, -3.0]])
    diff_absmax = torch.tensor([[5.0, 2.0], [3.0, 2.0]])
    e = cl.attribute(model, x, "gradient", target=[[0, 1]], score="prob", reduce="sum")
    close(e.maps[0, 0], 3 / 16 * diff_sum, atol=1e-6)
    close(e.maps[0, 1], -3 / 16 * diff_sum, atol=1e-6)
    e = cl.attribute(model, x, "gradient", target=0, score="prob", reduce="absmax")
    close(e.maps[0, 0], 3 / 16 * diff_absmax, atol=1e-6)
    e = cl.attribute(model, x, "gradient", target=0, score="logprob", reduce="sum")
    close(e.maps[0, 0], 3 / 4 * diff_sum, atol=1e-6)


def test_gradient_through_one_convolution():
    # logit = sum over the output of a 3x3 conv (padding 1) with kernel 1 on channel 0,
    # -2 on channel 1, 0 on channel 2. d logit / d x_k(u) = kernel_k * (number of output
    # positions whose 3x3 window contains u): 4 at corners, 6 on edges, 9 inside a 4x4 image.
    conv = nn.Conv2d(3, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0] = 1.0
        conv.weight[0, 1] = -2.0
    net = nn.Sequential(conv, nn.Flatten(), SumHead())
    counts = torch.tensor([[4.0, 6, 6, 4], [6, 9, 9, 6], [6, 9, 9, 6], [4, 6, 6, 4]])
    x = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    close(cl.attribute(net, x, "gradient", target=0).maps[0, 0], 2 * counts)
    close(cl.attribute(net, x, "gradient", target=0, reduce="sum").maps[0, 0], -counts)
    close(cl.attribute(net, x, "gradient", target=0, reduce="l2").maps[0, 0], 5**0.5 * counts)


class SumHead(nn.Module):
    """``(N, F)`` -> ``(N, 1)`` logits: the sum of the features."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z.sum(1, keepdim=True)


def test_gradient_depends_on_the_input_for_a_nonlinear_score():
    # logit_0 = sum(x^2) -> gradient 2x. With channel 0 = ramp4 - 7.5 and other channels 0,
    # absmax = |2x_0| and sum = 2x_0 (signed).
    x0 = RAMP4 - 7.5
    x = torch.cat([image(x0), image(-x0)])
    e = cl.attribute(SquareNet(), x, "gradient", target=0, reduce="sum")
    close(e.maps[0, 0], 2 * x0)
    close(e.maps[1, 0], -2 * x0)
    e = cl.attribute(SquareNet(), x, "gradient", target=0)
    close(e.maps[0, 0], (2 * x0).abs())
    close(e.maps[1, 0], (2 * x0).abs())


# --------------------------------------------------------------------------- CAM


class GapNet(nn.Module):
    """features (A_0 = cell mean of channel 0, A_1 = of channel 1) -> ReLU -> GAP -> fc."""

    def __init__(self, fc_weight, fc_bias, cell: int = 1):
        super().__init__()
        self.features = nn.Conv2d(3, 2, kernel_size=cell, stride=cell, bias=False)
        with torch.no_grad():
            self.features.weight.zero_()
            self.features.weight[0, 0] = 1.0 / cell**2
            self.features.weight[1, 1] = 1.0 / cell**2
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        fc_weight = torch.as_tensor(fc_weight, dtype=torch.float32)
        self.fc = nn.Linear(fc_weight.shape[1], fc_weight.shape[0])
        with torch.no_grad():
            self.fc.weight.copy_(fc_weight)
            self.fc.bias.copy_(torch.as_tensor(fc_bias, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.act(self.features(x)))))


CAM_W = [[1.0, 2.0], [-1.0, 0.5], [0.0, -3.0]]
CAM_B = [0.5, -1.0, 2.0]
A1_4x4 = torch.tensor([[1.0, 0, 0, 1], [0, 2, 2, 0], [0, 2, 2, 0], [1, 0, 0, 1]])
# CAM_c = w_c0 A_0 + w_c1 A_1 with A_0 = ramp4, A_1 = A1_4x4:
CAM0 = [[2.0, 1, 2, 5], [4, 9, 10, 7], [8, 13, 14, 11], [14, 13, 14, 17]]  # A_0 + 2 A_1
CAM1 = [  # -A_0 + 0.5 A_1
    [0.5, -1, -2, -2.5],
    [-4, -4, -5, -7],
    [-8, -8, -9, -11],
    [-11.5, -13, -14, -14.5],
]
CAM2 = [[-3.0, 0, 0, -3], [0, -6, -6, 0], [0, -6, -6, 0], [-3, 0, 0, -3]]  # -3 A_1
# Spatial means: A_0 7.5, A_1 12/16 = 0.75, so the logits are
#   9.5 = 7.5 + 1.5 + 0.5,  -8.125 = -7.5 + 0.375 - 1,  -0.25 = -2.25 + 2  -> top3 = [0, 2, 1].
LOGITS = [9.5, -8.125, -0.25]


def test_cam_by_hand_with_feature_map_at_input_resolution():
    net = GapNet(CAM_W, CAM_B)
    x = image(RAMP4, A1_4x4, torch.full((4, 4), 5.0))  # channel 2 is ignored by the features
    e = cl.attribute(net, x, "cam", target=[[0, 1, 2]])
    assert e.extras["layer"] == "act"
    assert e.signed is False
    close(e.maps[0, 0], CAM0)
    close(e.maps[0, 1], CAM1)  # CAM keeps negative values (no ReLU)
    close(e.maps[0, 2], CAM2)
    # spatial mean + bias = logit, class by class
    with torch.no_grad():
        logits = net(x)[0]
    close(logits, LOGITS)
    close(e.maps[0].mean(dim=(1, 2)) + torch.tensor(CAM_B), LOGITS)


def test_cam_top_k_targets_from_one_call():
    net = GapNet(CAM_W, CAM_B)
    x = image(RAMP4, A1_4x4)
    e = cl.attribute(net, x, "cam", target="top3")
    assert e.targets.tolist() == [[0, 2, 1]]
    close(e.maps[0], torch.tensor([CAM0, CAM2, CAM1]))
    e = cl.attribute(net, x, "cam")  # default target: top-1
    assert e.targets.tolist() == [[0]]
    close(e.maps[0, 0], CAM0)


def test_cam_upsamples_bilinearly_and_keeps_the_mean():
    # 2x2 feature cells on a 4x4 input: A_0 = [1 2; 3 4], A_1 = [2 0; 1 5]
    # (each value repeated over a 2x2 block of the input, the features average the block).
    # CAM_0 = A_0 + 2 A_1 = [5 2; 5 14].
    # Bilinear 2 -> 4 with half-pixel centres samples at -0.25 (clamped to 0), 0.25, 0.75,
    # 1.25 (clamped to 1): [a, b] -> [a, 0.75a + 0.25b, 0.25a + 0.75b, b].
    #   rows:    [5 2] -> [5, 4.25, 2.75, 2];   [5 14] -> [5, 7.25, 11.75, 14]
    #   columns: 0.75 r0 + 0.25 r1 = [5, 5, 5, 5];  0.25 r0 + 0.75 r1 = [5, 6.5, 9.5, 11]
    a0 = torch.tensor([[1.0, 2], [3, 4]])
    a1 = torch.tensor([[2.0, 0], [1, 5]])
    up = torch.ones(2, 2)
    x = image(torch.kron(a0, up), torch.kron(a1, up))
    net = GapNet(CAM_W, CAM_B, cell=2)
    e = cl.attribute(net, x, "cam", target=0)
    expected = [[5, 4.25, 2.75, 2], [5, 5, 5, 5], [5, 6.5, 9.5, 11], [5, 7.25, 11.75, 14]]
    close(e.maps[0, 0], expected)
    # The mean is 104 / 16 = 6.5 = (5 + 2 + 5 + 14) / 4, and 6.5 + 0.5 is the logit.
    with torch.no_grad():
        logit = net(x)[0, 0]
    close(logit, 7.0)
    close(e.maps[0, 0].mean() + CAM_B[0], logit)


def test_cam_two_images_each_gets_its_own_map():
    gen = torch.Generator().manual_seed(3)
    net = GapNet(CAM_W, CAM_B)
    x = torch.rand(2, 3, 6, 6, generator=gen)
    e = cl.attribute(net, x, "cam", target="top2")
    w = torch.tensor(CAM_W)
    for n in range(2):
        for t in range(2):
            c = int(e.targets[n, t])
            close(e.maps[n, t], w[c, 0] * x[n, 0] + w[c, 1] * x[n, 1])
    with torch.no_grad():
        logits = net(x)
    close(e.maps.mean(dim=(2, 3)) + torch.tensor(CAM_B)[e.targets], logits.gather(1, e.targets))


class FlatHeadNet(nn.Module):
    """features -> ReLU -> Flatten over channels *and* space -> fc: no global pooling."""

    def __init__(self, fc_weight, cell: int = 1, side: int = 2):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, kernel_size=cell, stride=cell, bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, 0] = 1.0 / cell**2
            self.conv.weight[1, 1] = 1.0 / cell**2
        self.act = nn.ReLU()
        self.flatten = nn.Flatten()
        fc_weight = torch.as_tensor(fc_weight, dtype=torch.float32)
        self.fc = nn.Linear(2 * side * side, fc_weight.shape[0])
        with torch.no_grad():
            self.fc.weight.copy_(fc_weight)
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.act(self.conv(x))))


# Grad-CAM head on 2 channels x 2x2 positions, flattened as (channel, row, col):
V = [
    # class 0: channel 0 weights [1 3; 0 0] (mean 1), channel 1 [-2 0; 0 -2] (mean -1)
    [1.0, 3, 0, 0, -2, 0, 0, -2],
    # class 1: channel 0 [-1 -1; -1 -1] (mean -1), channel 1 [2 2; 0 0] (mean 1)
    [-1.0, -1, -1, -1, 2, 2, 0, 0],
]
G_A0 = torch.tensor([[1.0, 2], [3, 4]])
G_A1 = torch.tensor([[2.0, -2], [1, 5]])  # ReLU(A_1) = [2 0; 1 5]


def test_cam_refuses_a_flatten_linear_head():
    x = image(G_A0, G_A1)
    with pytest.raises(cl.MethodError, match="gradcam"):
        cl.attribute(FlatHeadNet(V), x, "cam")


def test_cam_refuses_global_max_pooling():
    # Shapes fit (N, 2) -> Linear(2, 3), but the linear layer gets the max, not the mean.
    net = GapNet(CAM_W, CAM_B)
    net.pool = nn.AdaptiveMaxPool2d(1)
    with pytest.raises(cl.MethodError, match="gradcam"):
        cl.attribute(net, image(RAMP4, A1_4x4), "cam")


def test_cam_refuses_a_model_without_linear_layer_or_class_maps():
    # max pooling, not an average: no class map's mean is the output (a GAP head of class
    # maps is CAM's own case, tests/attribution/test_cam_heads.py)
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten())
    with pytest.raises(cl.MethodError, match="gradcam"):
        cl.attribute(net, torch.rand(1, 3, 4, 4), "cam")


def test_cam_follows_a_relu_module_from_the_layer_to_the_pooling():
    # With w[0, 0] = -1 the features are A_0 = -ramp4 <= 0 and A_1 = A1_4x4 >= 0; the
    # pooling consumes ReLU(A) = (0, A1_4x4), so CAM_0 = 1 * 0 + 2 * A1_4x4 (not
    # -ramp4 + 2 A1_4x4, which CAM read at "features" itself would give).
    net = GapNet(CAM_W, CAM_B)
    with torch.no_grad():
        net.features.weight[0, 0] = -1.0
    x = image(RAMP4, A1_4x4)
    e = cl.attribute(net, x, "cam", layer="features", target=0)
    close(e.maps[0, 0], 2 * A1_4x4)
    assert e.extras["layer"] == "features" and e.extras["pooled"] == "features -> relu"
    at_act = cl.attribute(net, x, "cam", layer="act", target=0)
    close(at_act.maps, e.maps)
    assert at_act.extras["pooled"] == "act"
    with torch.no_grad():
        close(e.maps[0, 0].mean() + CAM_B[0], net(x)[0, 0])


# --------------------------------------------------------------------------- Grad-CAM
#
# FlatHeadNet(V) on the 2x2 input (A_0, A_1) = (G_A0, G_A1); R = ReLU(A), R_1 = [2 0; 1 5].
# Logits: s_0 = <V_0, R> = (1 + 6) + (-4 - 10) = -7;  s_1 = -(1+2+3+4) + (4 + 0) = -6.
# At layer "act" (default: last spatial map) d s_c / d R = V_c, so alpha_c = channel means:
#   class 0: alpha = [1, -1]   map = ReLU(R_0 - R_1) = ReLU([-1 2; 2 -1]) = [0 2; 2 0]
#   class 1: alpha = [-1, 1]   map = ReLU(R_1 - R_0) = ReLU([1 -2; -2 1]) = [1 0; 0 1]
# At layer "conv" the gradient is masked by the ReLU (A_1[0,1] = -2 < 0):
#   class 0: d/dA_1 = [-2 0; 0 -2] -> alpha = [1, -1], map = ReLU(A_0 - A_1)
#            = ReLU([-1 4; 2 -1]) = [0 4; 2 0]
#   class 1: d/dA_1 = [2 0; 0 0] -> alpha = [-1, 0.5], -A_0 + 0.5 A_1 = [0 -3; -2.5 -1.5]
#            -> every value is negative evidence and the map is all zero.


def test_gradcam_by_hand_at_the_default_layer():
    x = image(G_A0, G_A1)
    net = FlatHeadNet(V)
    with torch.no_grad():
        close(net(x)[0], [-7.0, -6.0])
    e = cl.attribute(net, x, "gradcam", target=[[0, 1]])
    assert e.extras["layer"] == "act"
    close(e.maps[0, 0], [[0, 2], [2, 0]])
    close(e.maps[0, 1], [[1, 0], [0, 1]])
    e = cl.attribute(net, x, "gradcam")  # top-1 is class 1 (-6 > -7)
    assert e.targets.tolist() == [[1]]
    close(e.maps[0, 0], [[1, 0], [0, 1]])


def test_gradcam_explicit_layer_and_negative_evidence_clipped():
    x = image(G_A0, G_A1)
    net = FlatHeadNet(V)
    e = cl.attribute(net, x, "gradcam", target=[[0, 1]], layer="conv")
    assert e.extras["layer"] == "conv"
    close(e.maps[0, 0], [[0, 4], [2, 0]])
    close(e.maps[0, 1], torch.zeros(2, 2))
    # The layer can also be given as the module itself.
    e2 = cl.attribute(net, x, "gradcam", target=[[0, 1]], layer=net.conv)
    assert e2.extras["layer"] == "conv"
    close(e2.maps, e.maps)


def test_gradcam_of_the_probability():
    # d p_0 / d s = p_0 p_1 (1, -1), so alpha = p_0 p_1 (alpha_0 - alpha_1) = p_0 p_1 [2, -2]
    # and the map at "act" is 2 p_0 p_1 [0 2; 2 0], p_0 = sigmoid(s_0 - s_1) = sigmoid(-1).
    x = image(G_A0, G_A1)
    e = cl.attribute(FlatHeadNet(V), x, "gradcam", target=0, score="prob")
    p0 = torch.sigmoid(torch.tensor(-1.0))
    close(e.maps[0, 0], 2 * p0 * (1 - p0) * torch.tensor([[0.0, 2], [2, 0]]), atol=1e-6)


def test_gradcam_upsamples_the_feature_map_bilinearly():
    # Same features on 2x2 cells of a 4x4 input, layer "conv": class-0 map [0 4; 2 0],
    # upsampled with [a, b] -> [a, 0.75a + 0.25b, 0.25a + 0.75b, b]:
    #   rows [0 4] -> [0, 1, 3, 4]; [2 0] -> [2, 1.5, 0.5, 0]
    #   columns: 0.75 r0 + 0.25 r1 = [0.5, 1.125, 2.375, 3]; 0.25 r0 + 0.75 r1 = [1.5, 1.375,
    #   1.125, 1]
    up = torch.ones(2, 2)
    x = image(torch.kron(G_A0, up), torch.kron(G_A1, up))
    e = cl.attribute(FlatHeadNet(V, cell=2), x, "gradcam", target=0, layer="conv")
    close(
        e.maps[0, 0],
        [[0, 1, 3, 4], [0.5, 1.125, 2.375, 3], [1.5, 1.375, 1.125, 1], [2, 1.5, 0.5, 0]],
    )


def test_gradcam_on_a_gap_head_is_relu_of_cam_over_the_area():
    # With GAP + linear, d s_c / d A_k(u) = w_ck / (h w), so alpha_ck = w_ck / 16 here and
    # Grad-CAM = ReLU(CAM) / 16 (Selvaraju et al. note Grad-CAM generalises CAM).
    net = GapNet(CAM_W, CAM_B)
    x = image(RAMP4, A1_4x4)
    e = cl.attribute(net, x, "gradcam", target=[[0, 1, 2]])
    close(e.maps[0, 0], torch.tensor(CAM0) / 16)
    close(e.maps[0, 1], torch.tensor(CAM1).clamp_min(0) / 16)  # only the 0.5 corner survives
    close(e.maps[0, 2], torch.zeros(4, 4))


def test_unknown_layer_names_a_close_one():
    with pytest.raises(cl.LayerError) as info:
        cl.attribute(FlatHeadNet(V), image(G_A0, G_A1), "gradcam", layer="cnv")
    message = str(info.value)
    assert "'cnv'" in message
    assert "conv" in message.replace("'cnv'", "")


# --------------------------------------------------------------------------- targets

LOGITS_3 = torch.tensor([[0.1, 2.0, 1.0], [3.0, -1.0, 0.0]])


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (2, [[2], [2]]),
        ([2, 0], [[2], [0]]),
        ((1, 2), [[1], [2]]),
        ([[0, 2], [1, 0]], [[0, 2], [1, 0]]),
        (None, [[1], [0]]),
        ("top3", [[1, 2, 0], [0, 2, 1]]),
        ("top2", [[1, 2], [0, 2]]),
        (" TOP-2 ", [[1, 2], [0, 2]]),
        (torch.tensor(1), [[1], [1]]),
        (torch.tensor([2, 1]), [[2], [1]]),
        (torch.tensor([[0, 1], [2, 2]]), [[0, 1], [2, 2]]),
    ],
)
def test_target_specifications(spec, expected):
    out = resolve_targets(spec, 2, LOGITS_3)
    assert out.dtype == torch.long
    assert out.tolist() == expected


@pytest.mark.parametrize(
    "spec",
    [
        [0],  # one entry for two images
        [0, 1, 2],
        [[0, 1], [2]],  # ragged
        [[], []],  # no target
        [-1, 0],
        3,  # out of range: 3 classes
        [[0, 3], [1, 2]],
        -2,
        True,
        1.5,
        "best",
        "top0",
        "top4",  # more than the 3 classes
        ["a", "b"],
        [[0, 1.0], [1, 2]],
        [1.5, 0],  # per-image entries that are neither ints nor lists
        [None, 0],
        [torch.tensor(1), torch.tensor(0)],
        [[True], [False]],
        torch.tensor([0, 1, 2]),  # wrong N
        torch.tensor([[[0]], [[1]]]),  # 3-D
        torch.tensor([0, 5]),
        {"cat": 1},
    ],
)
def test_malformed_targets_raise_target_error(spec):
    with pytest.raises(cl.TargetError):
        resolve_targets(spec, 2, LOGITS_3)


def test_targets_through_attribute_pick_the_right_maps():
    # 3 classes; x = 0 so the logits are the biases [0, 2, 1]: top3 = [1, 2, 0].
    w = torch.cat([W_GRAD, torch.full((1, 3, 2, 2), 0.25)])
    model = LinearProbe(w, bias=torch.tensor([0.0, 2.0, 1.0]))
    x = torch.zeros(2, 3, 2, 2)
    absmax = torch.tensor(ABSMAX + [[[0.25, 0.25], [0.25, 0.25]]])
    for spec, expected in [
        (2, [[2], [2]]),
        ([2, 0], [[2], [0]]),
        ([[0, 2], [1, 0]], [[0, 2], [1, 0]]),
        ("top3", [[1, 2, 0], [1, 2, 0]]),
        (torch.tensor([[1], [0]]), [[1], [0]]),
    ]:
        e = cl.attribute(model, x, "gradient", target=spec)
        assert e.targets.tolist() == expected, spec
        close(e.maps, absmax[torch.tensor(expected)])
    with pytest.raises(cl.TargetError):
        cl.attribute(model, x, "gradient", target=[[0, 7], [1, 2]])
    with pytest.raises(cl.TargetError):
        cl.attribute(model, x, "occlusion", target="top4", window=2, stride=2)


# ------------------------------------------------------------------- fixed bugs, pinned
#
# Each test below states behaviour that an earlier version got wrong.


@pytest.mark.parametrize("mode", ["auto", "exact", "incremental", "approximate"])
@pytest.mark.parametrize(
    "window, stride", [(2, (3, 3)), ((2, 4), (3, 2)), ((4, 2), (2, 3))], ids=["both", "y", "x"]
)
def test_occlusion_stride_larger_than_window_is_refused_before_any_pass(mode, window, stride):
    # Window 2, stride 3 on 8 px: starts 0, 3, 6 leave pixels 2 and 5 of each axis covered by
    # no window, where the mean drop would be 0 / 0. Occlusion refuses such a stride (along
    # either axis, in every mode) with a ValueError naming both, before running the model.
    w = torch.zeros(1, 3, 8, 8)
    w[0, 0] = 1.0
    model = LinearProbe(w)
    passes = []
    model.register_forward_pre_hook(lambda module, args: passes.append(1))
    win = (window, window) if isinstance(window, int) else window
    message = (
        f"stride {stride} is larger than window {win}: pixels between windows would get no "
        "value; use a stride no larger than the window"
    )
    with pytest.raises(ValueError) as refused:
        cl.attribute(
            model,
            torch.rand(1, 3, 8, 8),
            "occlusion",
            target=0,
            window=window,
            stride=stride,
            score="logit",
            mode=mode,
        )
    assert str(refused.value) == message
    assert passes == []


def test_occlusion_negative_batch_size_is_refused():
    with pytest.raises(ValueError):
        cl.attribute(
            probe_4x4(), image(RAMP4), "occlusion", target=0, window=2, stride=2, batch_size=-1
        )


@pytest.mark.parametrize("method", ["gradient", "gradcam"])
def test_gradient_methods_work_under_no_grad(method):
    x = image(G_A0, G_A1)
    net = FlatHeadNet(V)
    expected = cl.attribute(net, x, method, target=0).maps
    with torch.no_grad():
        got = cl.attribute(net, x, method, target=0).maps
    close(got, expected)


class _NetA(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(2, 3)

    def forward(self, x):
        return self.fc(self.act(self.conv(x)).mean((2, 3)))


class _NetB(_NetA):
    """Same names plus ``conv2`` after ``act``: its default layer is ``conv2``."""

    def __init__(self):
        super().__init__()
        self.conv2 = nn.Conv2d(2, 2, 1)

    def forward(self, x):
        return self.fc(self.conv2(self.act(self.conv(x))).mean((2, 3)))


def test_default_layer_cache_is_per_model_and_size_and_dies_with_the_model():
    a = _NetA()
    assert cl_layers.default_layer(a, (4, 4)) == "act"
    assert cl_layers.default_layer(_NetB(), (4, 4)) == "conv2"
    assert set(cl_layers._DEFAULT_CACHE[a]) == {(4, 4)}
    cl_layers.default_layer(a, (8, 8))
    assert set(cl_layers._DEFAULT_CACHE[a]) == {(4, 4), (8, 8)}
    del a
    gc.collect()
    assert len(cl_layers._DEFAULT_CACHE) == 0  # no entry can outlive its model


def test_cam_at_a_layer_that_does_not_feed_the_head_names_the_right_one():
    from helpers import tiny_cnn

    x = torch.rand(1, 3, 16, 16)
    want = r"'0' is not it; leave layer unset for the default \('5'\), or use method='gradcam'"
    with pytest.raises(cl.MethodError, match=want):
        cl.attribute(tiny_cnn(), x, "cam", layer="0")
    ok = cl.attribute(tiny_cnn(), x, "cam", layer="5")  # the layer feeding the pooling
    assert ok.extras["layer"] == "5"
