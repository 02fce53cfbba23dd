"""XGrad-CAM, HiResCAM, Eigen-CAM, Ablation-CAM, FullGrad and guided Grad-CAM:
hand-computed values and properties (cross-checks: test_cam_more_crosscheck.py).

The hand-computed tests use ``Toy``: layer ``feat`` copies input channels 0 and 1 (a 1x1
convolution, optionally with bias ``(1, -2)``), an optional ReLU, and a head linear in
the feature maps, ``s_c = sum_{k,u} W[c, k, u] A_k(u) + b_c``, so d s_c / d A_k(u) =
W[c, k, u] whatever the input. Images are 2x2 (no upsampling). The inputs are::

    x0 = A0 = [[1, 2],      x1 = A1 = [[4,  0],      x2 = 0;   sum A0 = 10, sum A1 = 2
               [3, 4]]                 [0, -2]]

    class 0: W0 = 1 everywhere,         W1 = 0.5 everywhere          (bias 5)
    class 1: W0 = [[1, 0], [0, 2]],     W1 = -1 everywhere
    class 2: W0 = 0 everywhere,         W1 = [[1, 1], [1, 3]]
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import cnnlens as cl
import cnnlens.attribution.cam_ablation as ca
import cnnlens.attribution.cam_eigen as ce
import cnnlens.attribution.cam_gradients  # noqa: F401  (registers the gradient CAMs)
import cnnlens.attribution.fullgrad as fg
from cnnlens.core import progress
from cnnlens.models.base import LoadedModel
from helpers import assert_unchanged, snapshot, tiny_cnn

A0 = torch.tensor([[1.0, 2], [3, 4]])
A1 = torch.tensor([[4.0, 0], [0, -2]])
METHODS = ["xgradcam", "hirescam", "eigencam", "ablationcam", "fullgrad", "guided_gradcam"]


def close(actual: torch.Tensor, expected, atol: float = 1e-5, rtol: float = 1e-6) -> None:
    expected = torch.as_tensor(expected, dtype=actual.dtype)
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol)


class Toy(nn.Module):
    def __init__(self, bias: bool = False, relu: bool = False):
        super().__init__()
        self.feat = nn.Conv2d(3, 2, 1, bias=bias)
        with torch.no_grad():
            self.feat.weight.zero_()
            self.feat.weight[0, 0] = 1.0
            self.feat.weight[1, 1] = 1.0
            if bias:
                self.feat.bias.copy_(torch.tensor([1.0, -2.0]))
        self.act = nn.ReLU() if relu else nn.Identity()
        w = torch.zeros(3, 2, 2, 2)
        w[0, 0], w[0, 1] = 1.0, 0.5
        w[1, 0] = torch.tensor([[1.0, 0], [0, 2]])
        w[1, 1] = -1.0
        w[2, 1] = torch.tensor([[1.0, 1], [1, 3]])
        self.head_weight = nn.Parameter(w)
        self.head_bias = nn.Parameter(torch.tensor([5.0, 0.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.act(self.feat(x))
        return torch.einsum("ckij,nkij->nc", self.head_weight, a) + self.head_bias


def toy_image() -> torch.Tensor:
    x = torch.zeros(1, 3, 2, 2)
    x[0, 0], x[0, 1] = A0, A1
    return x


def _x(n=2, size=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g)


def test_registration():
    layout = {"layout": None, "grid": None, "prefix": None, "reshape": None}
    for name in METHODS:
        info = cl.get_method(name)
        assert not info.signed and info.targets == "any"
        assert info.family == ("gradient" if name == "fullgrad" else "cam")
    assert cl.get_method("ablationcam").defaults == {"layer": None, "batch_size": None, **layout}
    assert cl.get_method("xgradcam").defaults == {"layer": None, "score": "logit", **layout}
    assert cl.get_method("fullgrad").defaults == {"rescale": "channel"}


# --------------------------------------------------------------------------- by hand


def test_xgradcam_by_hand():
    # w_k = sum_u g_k A_k / (sum_u A_k + 1e-7); map = ReLU(sum_k w_k A_k).
    # class 0: w0 = 10 / 10 = 1, w1 = 0.5 * 2 / 2 = 0.5: A0 + A1 / 2 = [[3, 2], [3, 3]].
    # class 1: w0 = (1*1 + 2*4) / 10 = 0.9, w1 = -2 / 2 = -1:
    #          0.9 A0 - A1 = [[0.9 - 4, 1.8], [2.7, 3.6 + 2]] -> ReLU [[0, 1.8], [2.7, 5.6]].
    # class 2: w0 = 0, w1 = (4 + 0 + 0 + 3 * -2) / 2 = -1: -A1 -> ReLU [[0, 0], [0, 2]].
    e = cl.attribute(Toy(), toy_image(), "xgradcam", target=[[0, 1, 2]], layer="feat")
    assert e.extras == {"layer": "feat", "layout": "NCHW"}
    close(e.maps[0, 0], [[3, 2], [3, 3]])
    close(e.maps[0, 1], [[0, 1.8], [2.7, 5.6]])
    close(e.maps[0, 2], [[0, 0], [0, 2]])


def test_hirescam_by_hand():
    # map(u) = ReLU(sum_k g_k(u) A_k(u)), no averaging over space.
    # class 0: A0 + A1 / 2 = [[3, 2], [3, 3]].
    # class 1: [[1*1, 0], [0, 2*4]] - A1 = [[-3, 0], [0, 10]] -> [[0, 0], [0, 10]].
    # class 2: [[1*4, 0], [0, 3 * -2]] = [[4, 0], [0, -6]] -> [[4, 0], [0, 0]].
    e = cl.attribute(Toy(), toy_image(), "hirescam", target=[[0, 1, 2]], layer="feat")
    close(e.maps[0, 0], [[3, 2], [3, 3]])
    close(e.maps[0, 1], [[0, 0], [0, 10]])
    close(e.maps[0, 2], [[4, 0], [0, 0]])


def test_eigencam_by_hand():
    # Locations as rows (A0(u), A1(u)): (1, 4), (2, 0), (3, 0), (4, -2); channel means 2.5
    # and 0.5; centred: (-1.5, 3.5), (-0.5, -0.5), (0.5, -0.5), (1.5, -2.5).
    # X^T X = [[5, -9], [-9, 19]]: eigenvalues 12 +- sqrt(130); for the larger one
    # (5 - l) v0 - 9 v1 = 0, so v ~ (9, 5 - l). The total activation (5, 2, 3, 2), centred
    # (2, -1, 0, -1), must correlate positively with the projection (our sign convention).
    lam = 12 + math.sqrt(130)
    v = torch.tensor([9.0, 5 - lam], dtype=torch.float64)
    v = v / v.norm()
    rows = torch.tensor([[-1.5, 3.5], [-0.5, -0.5], [0.5, -0.5], [1.5, -2.5]], dtype=torch.float64)
    proj = rows @ v
    if float(proj @ torch.tensor([2.0, -1, 0, -1], dtype=torch.float64)) < 0:
        proj = -proj
    # Written out: proj = (3.8031, -0.2295, -0.6688, -2.9048): ReLU keeps the top left.
    close(proj.float(), [3.8031, -0.2295, -0.6688, -2.9048], atol=1e-4)
    e = cl.attribute(Toy(), toy_image(), "eigencam", target=[[0, 1, 2]], layer="feat")
    expected = proj.clamp_min(0).view(2, 2).float()
    for t in range(3):  # class-agnostic: one map for every target
        close(e.maps[0, t], expected)
    raw = ce.principal_projection(toy_image()[:, :2], center=True)
    close(raw[0], proj.view(2, 2).float())


def test_ablationcam_by_hand():
    # Zeroing channel k removes sum_u W[c, k, u] A_k(u) from s_c: w_k = that drop / s_c.
    # class 0: s = 10 + 0.5 * 2 + 5 = 16, drops 10 and 1: (10 A0 + A1) / 16
    #          = [[14, 20], [30, 38]] / 16.
    # class 1: s = (1 + 8) - 2 = 7, drops 9 and -2: (9 A0 - 2 A1) / 7 = [[1, 18], [27, 40]] / 7.
    # class 2: s = 4 - 6 = -2, drops 0 and -2: w1 = -2 / -2 = 1, map = ReLU(A1): a negative
    #          score flips the weights, as (y - y_k) / y says.
    e = cl.attribute(Toy(), toy_image(), "ablationcam", target=[[0, 1, 2]], layer="feat")
    assert e.extras["ablation"] == "broadcast"
    close(e.maps[0, 0], torch.tensor([[14.0, 20], [30, 38]]) / 16)
    close(e.maps[0, 1], torch.tensor([[1.0, 18], [27, 40]]) / 7)
    close(e.maps[0, 2], [[4, 0], [0, 0]])
    # A score of exactly 0 is not divided: the weights are the drops.
    w = ca.drop_weights(torch.tensor([[0.0, 2.0]]), torch.tensor([[[1.0, 1.0], [-3.0, 4.0]]]))
    close(w, [[[-1.0, 0.5], [3.0, -1.0]]])


def test_fullgrad_by_hand():
    # feat has bias (1, -2); the head's gradients W are the bias-gradients at feat's output
    # and, through the copying conv, the input gradients of x0 and x1 (x2's is 0).
    # Per channel, |v| is min-max scaled as (v - min) / (max - min + 1e-7) and summed.
    # class 0: |x0 g| = |A0| -> [[0, 1/3], [2/3, 1]];  |x1 g| = 0.5 |A1| = [[2, 0], [0, 1]]
    #          -> [[1, 0], [0, 0.5]]; x2 -> 0; the biases times constant gradients are
    #          constant -> 0.  Sum [[1, 1/3], [2/3, 1.5]].
    # class 1: |A0 W10| = [[1, 0], [0, 8]] -> [[1/8, 0], [0, 1]]; |A1 * -1| -> [[1, 0], [0, .5]];
    #          |1 * W10| = [[1, 0], [0, 2]] -> [[.5, 0], [0, 1]]; |-2 * -1| constant -> 0.
    #          Sum [[1.625, 0], [0, 2.5]].
    e = cl.attribute(Toy(bias=True), toy_image(), "fullgrad", target=[[0, 1]])
    assert e.extras == {"biases": 1}
    close(e.maps[0, 0], [[1, 1 / 3], [2 / 3, 1.5]], atol=1e-6)
    close(e.maps[0, 1], [[1.625, 0], [0, 2.5]], atol=1e-6)
    # rescale="layer": the input's three colours are scaled together (class 0: max 4, so
    # ([[1, 2], [3, 4]] + [[2, 0], [0, 1]]) / 4), the bias layer's two constant channels
    # (both |b g| = 1) give 0.
    e = cl.attribute(Toy(bias=True), toy_image(), "fullgrad", target=0, rescale="layer")
    close(e.maps[0, 0], [[0.75, 0.5], [0.75, 1.25]], atol=1e-6)


def test_guided_gradcam_by_hand():
    # With a ReLU after feat: R0 = A0, R1 = [[4, 0], [0, 0]]. Class 1 at layer "act":
    # Grad-CAM: mean W10 = 0.75, mean W11 = -1: 0.75 R0 - R1 = [[-3.25, 1.5], [2.25, 3]]
    #           -> ReLU [[0, 1.5], [2.25, 3]].
    # Guided backprop: at the ReLU, max(W, 0) * [z > 0]: channel 0 W10 = [[1, 0], [0, 2]]
    #           (A0 > 0 everywhere), channel 1 max(-1, 0) = 0; copied back to x0, x1;
    #           absmax over colours: [[1, 0], [0, 2]].  Product [[0, 0], [0, 6]].
    e = cl.attribute(Toy(relu=True), toy_image(), "guided_gradcam", target=1, layer="act")
    assert e.extras["layer"] == "act" and e.extras["activation_calls"] == 1
    close(e.maps[0, 0], [[0, 0], [0, 6]])


# --------------------------------------------------------------------------- properties


@pytest.mark.parametrize("method", ["xgradcam", "hirescam", "ablationcam", "guided_gradcam"])
def test_several_targets_equal_separate_calls(method):
    net, x = tiny_cnn(), _x()
    both = cl.attribute(net, x, method, target=[[1, 3], [0, 4]])
    assert both.maps.shape == (2, 2, 32, 32) and both.maps.amax() > 0
    for t, classes in enumerate(([1, 0], [3, 4])):
        one = cl.attribute(net, x, method, target=classes)
        torch.testing.assert_close(both.maps[:, t], one.maps[:, 0], atol=1e-6, rtol=1e-5)


def test_guided_gradcam_is_gradcam_times_guided_backprop():
    net, x = tiny_cnn(), _x()
    for reduce in ("absmax", "sum"):
        e = cl.attribute(net, x, "guided_gradcam", target="top2", layer="1", reduce=reduce)
        cam = cl.attribute(net, x, "gradcam", target="top2", layer="1")
        gb = cl.attribute(net, x, "guided_backprop", target="top2", reduce=reduce)
        assert torch.equal(e.targets, cam.targets) and e.signed == (reduce == "sum")
        torch.testing.assert_close(e.maps, cam.maps * gb.maps)
    with pytest.raises(ValueError, match="reduce"):
        cl.attribute(net, x, "guided_gradcam", target=1, reduce="max")


def _brute_force_ablation(net, x, layer, target):
    """Zero each channel with a hook on the caller's model, one full pass per channel."""
    module = dict(net.named_modules())[layer]
    net.eval()
    with torch.no_grad():
        base = net(x)[0, target]
        acts = []
        h = module.register_forward_hook(lambda m, a, o: acts.append(o.clone()))
        net(x)
        h.remove()
        drops = []
        for k in range(acts[0].shape[1]):

            def zero(m, a, o, k=k):
                o = o.clone()
                o[:, k] = 0
                return o

            h = module.register_forward_hook(zero)
            drops.append(base - net(x)[0, target])
            h.remove()
    w = torch.stack(drops) / base
    return (w[:, None, None] * acts[0][0]).sum(0).clamp_min(0)


class ReadsBatch(nn.Module):
    """tiny_cnn whose head reshapes by the input's batch size (fails when broadcast)."""

    def __init__(self):
        super().__init__()
        self.net = tiny_cnn()

    def forward(self, x):
        h = self.net[:6](x)
        return self.net[8](h.mean((2, 3)).reshape(x.shape[0], -1))


class MixesBatch(nn.Module):
    """tiny_cnn adding a sum over the batch of a tensor from before layer 4 to its output
    (silently different when that tensor has a batch of one)."""

    def __init__(self):
        super().__init__()
        self.net = tiny_cnn()

    def forward(self, x):
        a = self.net[:4](x)
        h = self.net[4](a) + a.sum(0).mean()
        return self.net[5:](h)


@pytest.mark.parametrize("layer", ["1", "4"])
def test_ablationcam_equals_zeroing_each_channel_by_hand(layer):
    # Layer "1" is a BatchNorm followed by an in-place ReLU: the ablated output goes through it.
    net, x = tiny_cnn(), _x(n=1, size=16)
    e = cl.attribute(net, x, "ablationcam", target=2, layer=layer, batch_size=3)
    assert e.extras["ablation"] == "broadcast"
    ref = _brute_force_ablation(net, x, layer, 2)
    size = tuple(x.shape[-2:])
    expected = torch.nn.functional.interpolate(ref[None, None], size=size, mode="bilinear")
    close(e.maps[0, 0], expected[0, 0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("cls", [ReadsBatch, MixesBatch])
def test_ablationcam_falls_back_to_full_passes(cls):
    torch.manual_seed(0)
    net, x = cls(), _x(n=1, size=16)
    e = cl.attribute(net, x, "ablationcam", target=1, layer="net.4", batch_size=4)
    assert e.extras["ablation"] == "full"
    if cls is ReadsBatch:  # the model is per-image; brute force on the model itself
        expected = _brute_force_ablation(net, x, "net.4", 1)
        up = torch.nn.functional.interpolate(expected[None, None], size=(16, 16), mode="bilinear")
        close(e.maps[0, 0], up[0, 0], atol=1e-5, rtol=1e-4)


def test_ablationcam_does_not_depend_on_batch_size_and_reports_progress():
    net, x = tiny_cnn(), _x()
    seen = []

    class Count:
        def start(self, description, total):
            seen.append((description, total))
            return lambda k=1: None

        def finish(self, description):
            pass

    with progress.reporting(Count()):
        a = cl.attribute(net, x, "ablationcam", target=[[1, 3], [0, 4]], batch_size=4)
    b = cl.attribute(net, x, "ablationcam", target=[[1, 3], [0, 4]], batch_size=6)
    torch.testing.assert_close(a.maps, b.maps, atol=1e-6, rtol=1e-5)
    assert seen == [("ablationcam", 4)]  # 2 images x 6 channels in chunks of 3 (<= 4)


def test_ablationcam_refuses_a_reshape_callable():
    net, x = tiny_cnn(), _x()
    with pytest.raises(cl.MethodError, match="layout="):
        cl.attribute(net, x, "ablationcam", target=1, layer="4", reshape=lambda t: t * 1)


def test_eigencam_is_class_agnostic_and_sign_is_fixed():
    net, x = tiny_cnn(), _x()
    e = cl.attribute(net, x, "eigencam", target=[[1, 3], [0, 4]], layer="4")
    assert torch.equal(e.maps[:, 0], e.maps[:, 1]) and e.maps.amax() > 0
    acts = torch.randn(3, 5, 4, 4, generator=torch.Generator().manual_seed(0))
    p = ce.principal_projection(acts)
    total = acts.sum(1).flatten(1)
    assert ((p.flatten(1) * (total - total.mean(1, keepdim=True))).sum(1) > 0).all()
    # Flipping the sign of the activations' deviations flips the component, not our map's
    # orientation relative to the total activation.
    q = ce.principal_projection(-acts)
    torch.testing.assert_close(q, -p, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="center"):
        cl.attribute(net, x, "eigencam", target=1, center="yes")


def test_fullgrad_completeness_on_a_piecewise_linear_net():
    # tiny_cnn is piecewise linear (conv, eval BN, ReLU, ReLU6, average pooling, linear):
    # logit = sum x g_x + sum_l sum_{k,u} b_lk g_lk(u) + the linear layer's bias.
    net, x = tiny_cnn(), _x()
    model = LoadedModel.wrap(net)
    with cl.preserved(net):
        ig, biases, bg, targets = fg.full_gradients(model, x, [[1, 3], [0, 4]])
        logits = net(x)
    assert len(biases) == 3  # conv 0, BN 1 (its effective bias), conv 4
    total = (ig * x.unsqueeze(1)).flatten(2).sum(2)
    for b, g in zip(biases, bg):
        total = total + (g * b.view(1, 1, -1, 1, 1)).flatten(2).sum(2)
    total = total + net[8].bias[targets]
    torch.testing.assert_close(total, logits.gather(1, targets), atol=1e-5, rtol=1e-5)


def test_fullgrad_refuses_a_model_without_biases():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3))
    net(_x())
    with pytest.raises(cl.MethodError, match="no biased convolution"):
        cl.attribute(net, _x(), "fullgrad", target=1)
    with pytest.raises(ValueError, match="rescale"):
        cl.attribute(tiny_cnn(), _x(), "fullgrad", target=1, rescale="pixel")


@pytest.mark.parametrize("method", METHODS)
def test_layouts_and_model_state(method):
    net = tiny_cnn()
    net.train()
    net[1].eval()
    before = snapshot(net)
    e = cl.attribute(net, _x(), method, target="top2")
    assert_unchanged(before, net)
    assert (e.maps >= 0).all() and not e.maps.requires_grad and not e.maps.is_inference()
    assert torch.equal(e.maps, cl.attribute(net, _x(), method, target="top2").maps)
