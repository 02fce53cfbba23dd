"""Grad-CAM++, LayerCAM and Score-CAM: hand-computed values, invariants, cross-checks.

The hand-computed tests use ``Toy``: its layer ``feat`` copies input channels 0 and 1
(a fixed 1x1 convolution), and its head is linear in those feature maps,

    s_c = sum_{k,u} W[c, k, u] A_k(u) + b_c,

so the gradient d s_c / d A_k(u) is W[c, k, u] whatever the input, and the logits of a
masked input can be added up by hand. Images are 2x2, the size of the feature maps, so
no upsampling happens. The feature maps used throughout are::

    A0 = [[1, 2],      A1 = [[4,  0],      S0 = sum A0 = 10,  S1 = sum A1 = 2
          [3, 4]]            [0, -2]]

and the head's gradients (= weights) are

    class 0: g0 = 1 everywhere,         g1 = 0.5 everywhere          (bias 5)
    class 1: g0 = [[1, 0], [0, 2]],     g1 = -1 everywhere
    class 2: g0 = 0 everywhere,         g1 = [[1, 1], [1, 3]]

The cross-checks run the bundled EfficientNet-Lite0 on scikit-image's ``chelsea`` and
``coffee`` against pytorch-grad-cam 1.5.7.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnlens as cl
import cnnlens.attribution.cam_variants as cv  # registers gradcampp, layercam, scorecam
from helpers import assert_unchanged, snapshot, tiny_cnn

METHODS = ["gradcampp", "layercam", "scorecam"]
A0 = torch.tensor([[1.0, 2], [3, 4]])
A1 = torch.tensor([[4.0, 0], [0, -2]])


def close(actual: torch.Tensor, expected, atol: float = 1e-5, rtol: float = 1e-6) -> None:
    expected = torch.as_tensor(expected, dtype=actual.dtype)
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol)


class Toy(nn.Module):
    """``feat`` copies input channels 0 and 1; the head is linear in the feature maps."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.feat = nn.Conv2d(3, 2, 1, bias=False)
        with torch.no_grad():
            self.feat.weight.zero_()
            self.feat.weight[0, 0] = 1.0
            self.feat.weight[1, 1] = 1.0
        w = torch.zeros(3, 2, 2, 2)
        w[0, 0], w[0, 1] = 1.0, 0.5
        w[1, 0] = torch.tensor([[1.0, 0], [0, 2]])
        w[1, 1] = -1.0
        w[2, 1] = torch.tensor([[1.0, 1], [1, 3]])
        self.head_weight = nn.Parameter(w * scale)
        self.head_bias = nn.Parameter(torch.tensor([5.0, 0.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.feat(x)
        return torch.einsum("ckij,nkij->nc", self.head_weight, a) + self.head_bias


def toy_image() -> torch.Tensor:
    x = torch.zeros(1, 3, 2, 2)
    x[0, 0], x[0, 1] = A0, A1
    return x


def _x(n=2, size=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g)


def test_methods_are_registered_as_unsigned_cams():
    for name in METHODS:
        info = cl.get_method(name)
        assert info.family == "cam" and not info.signed
    layout = {"layout": None, "grid": None, "prefix": None, "reshape": None}
    assert cl.get_method("scorecam").defaults == {"layer": None, "batch_size": None, **layout}
    assert cl.get_method("gradcampp").defaults == {"layer": None, **layout}


# --------------------------------------------------------------------------- Grad-CAM++


def test_gradcampp_by_hand():
    # alpha(u) = g^2 / (2 g^2 + S g^3)  (+1e-6, negligible at these gradients),
    # w_k = sum_u alpha(u) ReLU(g(u)), map = ReLU(w0 A0 + w1 A1).
    # class 0: alpha0 = 1 / (2 + 10) = 1/12, w0 = 4 * 1/12 = 1/3;
    #          alpha1 = 0.25 / (0.5 + 2 * 0.125) = 1/3, w1 = 4 * 0.5 * 1/3 = 2/3;
    #          map = A0/3 + 2 A1/3 = [[1/3 + 8/3, 2/3], [1, 4/3 - 4/3]] = [[3, 2/3], [1, 0]].
    #          (Grad-CAM: mean gradients 1 and 0.5 -> A0 + A1/2 = [[3, 2], [3, 3]].)
    # class 1: g0 = 1 at (0,0): alpha = 1/12; g0 = 2 at (1,1): alpha = 4 / (8 + 80) = 1/22;
    #          g0 = 0 elsewhere: alpha = 0. w0 = 1/12 + 2/22 = 23/132. g1 = -1: w1 = 0.
    # class 2: w0 = 0 (no gradient); g1 = 1 at three places: alpha = 1 / (2 + 2) = 1/4,
    #          g1 = 3 at (1,1): alpha = 9 / (18 + 54) = 1/8; w1 = 3/4 + 3/8 = 9/8;
    #          map = ReLU(9/8 A1) = [[4.5, 0], [0, 0]] (-2.25 clipped).
    e = cl.attribute(Toy(), toy_image(), "gradcampp", target=[[0, 1, 2]], layer="feat")
    assert e.extras["layer"] == "feat" and e.maps.shape == (1, 3, 2, 2)
    close(e.maps[0, 0], [[3, 2 / 3], [1, 0]])
    close(e.maps[0, 1], 23 / 132 * A0)
    close(e.maps[0, 2], [[4.5, 0], [0, 0]])


def test_gradcampp_epsilon_matters_at_small_gradients():
    # Scaling the head by 1e-3 scales g by 1e-3: without an epsilon alpha = 1 / (2 + S g)
    # would barely change (class 0, channel 0: 1 / (2 + 0.01) = 1 / 2.01), but the 1e-6
    # added to the denominator (as pytorch-grad-cam does) is as large as 2 g^2 = 2e-6:
    # alpha0 = 1e-6 / (2e-6 + 1e-8 + 1e-6) = 1 / 3.01,  w0 = 4e-3 / 3.01;
    # alpha1 = 2.5e-7 / (5e-7 + 2.5e-10 + 1e-6) = 1 / 6.001,  w1 = 4 * 5e-4 / 6.001.
    e = cl.attribute(Toy(scale=1e-3), toy_image(), "gradcampp", target=0, layer="feat")
    w0, w1 = 4e-3 / 3.01, 2e-3 / 6.001
    close(e.maps[0, 0], (w0 * A0 + w1 * A1).clamp_min(0), atol=1e-9, rtol=1e-5)
    no_eps0, no_eps1 = 4e-3 / 2.01, 2e-3 / 2.005
    assert not torch.allclose(e.maps[0, 0], (no_eps0 * A0 + no_eps1 * A1).clamp_min(0))


def test_gradcampp_rule_zero_denominator_gives_zero_alpha():
    # One location with 2 g^2 + S g^3 + eps == 0 exactly: g = -1 needs S = 2 + eps; the
    # authors' code sets alpha to 0 there instead of dividing by zero. ReLU(g) = 0 anyway,
    # so the weight stays finite and equals the other location's contribution.
    acts = torch.tensor([[[[2.0 + cv.GRADCAMPP_EPS, 0.0]]]], dtype=torch.float64)
    grads = torch.tensor([[[[-1.0, 0.5]]]], dtype=torch.float64)
    w = cv.gradcampp_weights(acts, grads)
    s = 2.0 + cv.GRADCAMPP_EPS
    expected = 0.5 * 0.25 / (2 * 0.25 + s * 0.125 + cv.GRADCAMPP_EPS)
    assert torch.isfinite(w).all()
    close(w.flatten(), [expected], atol=1e-12, rtol=1e-12)


# --------------------------------------------------------------------------- LayerCAM


def test_layercam_by_hand():
    # map(u) = ReLU(sum_k ReLU(g_k(u)) A_k(u)).
    # class 0: A0 + 0.5 A1 = [[1 + 2, 2], [3, 4 - 1]] = [[3, 2], [3, 3]].
    # class 1: g1 = -1 drops channel 1; ReLU(g0) A0 = [[1*1, 0], [0, 2*4]] = [[1, 0], [0, 8]].
    # class 2: g1 A1 = [[4, 0], [0, 3 * -2]] -> ReLU -> [[4, 0], [0, 0]].
    e = cl.attribute(Toy(), toy_image(), "layercam", target=[[0, 1, 2]], layer="feat")
    close(e.maps[0, 0], [[3, 2], [3, 3]])
    close(e.maps[0, 1], [[1, 0], [0, 8]])
    close(e.maps[0, 2], [[4, 0], [0, 0]])


def test_layercam_is_elementwise_not_channelwise():
    # The rule returns one weight per location: the engine multiplies it with A and sums.
    grads = torch.tensor([[[[1.0, -2.0], [0.0, 3.0]]]])
    assert torch.equal(cv.layercam_weights(grads * 0 + 1, grads), grads.clamp_min(0))


# --------------------------------------------------------------------------- Score-CAM


def test_score_cam_masks_are_min_max_scaled_channels():
    acts = torch.stack([A0, A1, torch.full((2, 2), 3.0)])
    masks = cv.channel_masks(acts, (2, 2))
    assert masks.shape == (3, 1, 2, 2)
    close(masks[0, 0], [[0, 1 / 3], [2 / 3, 1]])  # (A0 - 1) / 3
    close(masks[1, 0], [[1, 1 / 3], [1 / 3, 0]])  # (A1 + 2) / 6
    close(masks[2, 0], torch.zeros(2, 2))  # a constant channel masks everything


def test_scorecam_by_hand():
    # Masks (previous test): M0 = [[0, 1/3], [2/3, 1]], M1 = [[1, 1/3], [1/3, 0]].
    # The masked image's features are A_j * M_k, so s_c(x * M_k) = sum_j <W_cj, A_j * M_k> + b.
    # A0*M0 = [[0, 2/3], [2, 4]] (sum 20/3),  A1*M0 = [[0, 0], [0, -2]] (sum -2),
    # A0*M1 = [[1, 2/3], [1, 0]] (sum 8/3),   A1*M1 = [[4, 0], [0, 0]]  (sum 4).
    # class 0: s(M0) = 20/3 + 0.5 * -2 + 5 = 17/3 + 5,  s(M1) = 8/3 + 0.5 * 4 + 5 = 14/3 + 5;
    #          they differ by exactly 1 (the bias cancels): w = (e, 1) / (e + 1).
    # class 1: s(M0) = 1*0 + 2*4 - (-2) = 10,  s(M1) = 1*1 + 2*0 - 4 = -3: w = (1, e^-13)/(..).
    e = cl.attribute(Toy(), toy_image(), "scorecam", target=[[0, 1]], layer="feat")
    assert e.extras == {"layer": "feat", "layout": "NCHW"}
    c = math.e
    close(e.maps[0, 0], (c * A0 + A1) / (c + 1))  # all entries positive, ReLU keeps them
    d = math.exp(-13)
    close(e.maps[0, 1], ((A0 + d * A1) / (1 + d)).clamp_min(0))


def test_scorecam_does_the_same_forward_passes_for_one_and_three_targets():
    net = Toy()
    batches = []
    # deepcopy (the channels-last copy) copies the hook, and the closure's list is shared.
    handle = net.feat.register_forward_pre_hook(lambda m, a: batches.append(a[0].shape[0]))
    try:
        x = toy_image().repeat(2, 1, 1, 1)
        cl.attribute(net, x, "scorecam", target=0, layer="feat", batch_size=1)
        one = list(batches)
        batches.clear()
        cl.attribute(net, x, "scorecam", target=[[0, 1, 2], [2, 1, 0]], layer="feat", batch_size=1)
    finally:
        handle.remove()
    # one forward of both images, then 2 channels x 2 images masked passes of one image each
    assert one == batches == [2, 1, 1, 1, 1]


def test_scorecam_sees_the_layer_output_before_an_inplace_relu():
    # tiny_cnn: layer "1" is BatchNorm followed by ReLU(inplace=True); Score-CAM must weight
    # the BatchNorm output (with its negative values), not what the ReLU left in memory.
    net, x = tiny_cnn(), _x(n=1, size=16)
    e = cl.attribute(net, x, "scorecam", target=2, layer="1")
    net.eval()
    with torch.no_grad():
        acts = net[1](net[0](x))
    assert acts.min() < 0
    with torch.inference_mode():
        logits = cv.masked_logits(net, x, acts, torch.tensor([[2]]), batch_size=4)
    weights = torch.softmax(logits.clone(), dim=1)[:, :, 0]
    expected = (weights[:, :, None, None] * acts).sum(1).clamp_min(0)
    close(e.maps[0, 0], expected[0], atol=1e-5, rtol=1e-4)
    relu_acts = acts.clamp_min(0)
    assert not torch.allclose((weights[:, :, None, None] * relu_acts).sum(1), expected, atol=1e-3)


@pytest.mark.parametrize("batch_size", [1, 4, 6])
def test_scorecam_does_not_depend_on_batch_size(batch_size):
    net, x = tiny_cnn(), _x()
    ref = cl.attribute(net, x, "scorecam", target=[[1, 3], [0, 4]], batch_size=6)
    e = cl.attribute(net, x, "scorecam", target=[[1, 3], [0, 4]], batch_size=batch_size)
    torch.testing.assert_close(e.maps, ref.maps, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_scorecam_refuses_bad_batch_size(bad):
    with pytest.raises((ValueError, TypeError)):
        cl.attribute(tiny_cnn(), _x(), "scorecam", target=1, batch_size=bad)


# --------------------------------------------------------------------------- all three


@pytest.mark.parametrize("method", METHODS)
def test_several_targets_equal_separate_calls(method):
    net, x = tiny_cnn(), _x()
    both = cl.attribute(net, x, method, target=[[1, 3], [0, 4]])
    assert both.maps.shape == (2, 2, 32, 32) and both.extras["layer"] == "5"
    assert both.maps.amax() > 0
    for t, classes in enumerate(([1, 0], [3, 4])):
        one = cl.attribute(net, x, method, target=classes)
        torch.testing.assert_close(both.maps[:, t], one.maps[:, 0], atol=1e-6, rtol=1e-5)


def _model_in_odd_state():
    net = tiny_cnn()
    net.train()
    net[1].eval()
    net[0].weight.requires_grad_(False)
    return net


@pytest.mark.parametrize("method", METHODS)
def test_normal_call_leaves_model_unchanged(method):
    net = _model_in_odd_state()
    before = snapshot(net)
    e = cl.attribute(net, _x(), method, target="top2")
    assert_unchanged(before, net)
    assert e.maps.shape == (2, 2, 32, 32) and (e.maps >= 0).all()
    assert not e.maps.requires_grad and not e.maps.is_inference()
    again = cl.attribute(net, _x(), method, target="top2")
    assert torch.equal(e.maps, again.maps)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bad", [7, [1], "top9", -1, "best"])
def test_bad_target_raises_and_restores(method, bad):
    net = _model_in_odd_state()
    before = snapshot(net)
    with pytest.raises(cl.TargetError):
        cl.attribute(net, _x(), method, target=bad)
    assert_unchanged(before, net)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("where", ["forward", "backward"])
def test_module_that_raises_leaves_model_unchanged(method, where):
    net = _model_in_odd_state()
    net[3].mode = where
    before = snapshot(net)
    if where == "backward":
        # At the default layer ("5", after the trap) the CAM engine's backward pass stops at
        # the captured leaf and never reaches the trap; Score-CAM never backpropagates.
        cl.attribute(net, _x(), method, target=1)
        assert_unchanged(before, net)
    if not (method == "scorecam" and where == "backward"):
        # Explaining layer "0" (before the trap) makes the backward pass go through it.
        with pytest.raises(RuntimeError, match="injected"):
            cl.attribute(net, _x(), method, target=1, layer="0")
    assert_unchanged(before, net)
    net[3].mode = "off"
    cl.attribute(net, _x(), method, target=1)
    assert_unchanged(before, net)


# --------------------------------------------------------------------------- bundled model

TOP1 = [285, 967]  # Egyptian cat, espresso
SECOND = [282, 968]  # tiger cat, cup


@pytest.fixture(scope="module")
def bundled():
    model = cl.load_model()
    images = cl.sample_images(["chelsea", "coffee"])
    x = model.preprocess([images["chelsea"], images["coffee"]])
    return model, x


def _theirs(cls, model, x, classes):
    targets_mod = pytest.importorskip("pytorch_grad_cam.utils.model_targets")
    net = model.net
    # Frozen parameters and an input that requires grad: their backward still reaches bn2
    # and leaves no .grad on the shared model (as in test_crosscheck.py).
    inputs = x.clone().requires_grad_(True)
    targets = [targets_mod.ClassifierOutputTarget(c) for c in classes]
    with cl.preserved(net), cls(model=net, target_layers=[net.bn2]) as cam:
        return torch.from_numpy(cam(input_tensor=inputs, targets=targets))


def _bn2(model, x, classes):
    """Activations and gradients at bn2 (7x7)."""
    with cl.preserved(model.net), cl.capture(model.net, ["bn2"], gradients=True) as rec:
        logits = model.net(x)
        acts = rec.activations["bn2"]
        (grads,) = torch.autograd.grad(logits[torch.arange(len(classes)), classes].sum(), acts)
    return acts.detach(), grads


@pytest.mark.slow
@pytest.mark.parametrize("classes", [TOP1, SECOND], ids=["top1", "runner-up"])
def test_gradcampp_and_layercam_equal_pytorch_grad_cam(bundled, classes):
    grad_cam = pytest.importorskip("pytorch_grad_cam")
    model, x = bundled
    for method, cls in (("gradcampp", grad_cam.GradCAMPlusPlus), ("layercam", grad_cam.LayerCAM)):
        e = cl.attribute(model, x, method, target=classes)
        assert e.extras["layer"] == "bn2"
        theirs = _theirs(cls, model, x, classes)
        # Same formulas on the same 7x7 activations and gradients (theirs in NumPy float32);
        # then, as for Grad-CAM in test_crosscheck.py: their min-max -> cv2 resize -> min-max
        # vs our upsample -> min-max; both resizes use half-pixel centres and differ by float32
        # rounding. Measured (max over both images): Grad-CAM++ 4.2e-7 (top1 and runner-up),
        # LayerCAM 6.0e-7 / 6.6e-7; 1e-5 leaves room for other summation orders. An error
        # in the formula moves these maps by 1e-2 or more (next test).
        torch.testing.assert_close(e.normalized()[:, 0], theirs, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_gradcampp_differs_from_gradcam_and_its_epsilon_is_visible(bundled):
    model, x = bundled
    acts, grads = _bn2(model, x, TOP1)
    # bn2 includes its ReLU6, so the gradient at its output is (classifier weight / 49),
    # constant over space and about 1e-3 (measured median |g| 8.7e-4): the 1e-6 in the
    # denominator competes with 2 g^2 = 1.5e-6. Pin how much it changes the normalised map.
    g = grads.abs()
    assert 1e-4 < float(g.median()) < 1e-2
    e = cl.attribute(model, x, "gradcampp", target=TOP1)

    def norm(cam7):
        up = F.interpolate(cam7.clamp_min(0), size=(224, 224), mode="bilinear")
        flat = up.flatten(1)
        return (flat - flat.amin(1, keepdim=True)) / (
            flat.amax(1, keepdim=True) - flat.amin(1, keepdim=True)
        )

    g2 = grads**2
    alpha = torch.where(grads != 0, g2 / (2 * g2 + acts.sum((2, 3), keepdim=True) * g2 * grads), 0)
    no_eps = (alpha * grads.clamp_min(0)).sum((2, 3), keepdim=True)
    ours = e.normalized()[:, 0].flatten(1)
    with_eps = (cv.gradcampp_weights(acts, grads) * acts).sum(1, keepdim=True)
    assert float((ours - norm(with_eps)).abs().max()) < 1e-5  # the recomputation is right
    diff_eps = (ours - norm((no_eps * acts).sum(1, keepdim=True))).abs().max()
    gradcam = (grads.mean((2, 3), keepdim=True) * acts).sum(1, keepdim=True)
    diff_gradcam = (ours - norm(gradcam)).abs().max()
    # Measured max differences of the normalised maps (chelsea, coffee): 0.052 and 0.016
    # against Grad-CAM++ without the epsilon, 0.082 and 0.092 against Grad-CAM.
    assert 0.02 < float(diff_eps) < 0.15
    assert float(diff_gradcam) > 0.04


@pytest.mark.slow
def test_scorecam_weights_equal_pytorch_grad_cam_with_their_mask_interpolation(
    bundled, monkeypatch
):
    grad_cam = pytest.importorskip("pytorch_grad_cam")
    targets_mod = pytest.importorskip("pytorch_grad_cam.utils.model_targets")
    model, x = bundled
    net, x1 = model.net, x[:1]
    acts, _ = _bn2(model, x1, TOP1[:1])
    sub = acts[:, ::20].contiguous()  # 64 of the 1280 channels keep this test fast
    target = [targets_mod.ClassifierOutputTarget(TOP1[0])]
    with cl.preserved(net), grad_cam.ScoreCAM(model=net, target_layers=[net.bn2]) as sc:
        theirs = torch.from_numpy(sc.get_cam_weights(x1, None, target, sub.numpy(), None))

    def corner_upsample(maps, size):  # nn.UpsamplingBilinear2d == align_corners=True
        return F.interpolate(maps, size=size, mode="bilinear", align_corners=True)

    def our_logits():
        with cl.preserved(net), torch.inference_mode():
            logits = cv.masked_logits(net, x1, sub, torch.tensor([[TOP1[0]]]), batch_size=16)
        return logits[..., 0].clone()

    half_pixel = our_logits()
    monkeypatch.setattr(cv, "upsample", corner_upsample)
    corners = our_logits()
    ours = torch.softmax(corners, dim=1)
    assert theirs.shape == ours.shape == (1, 64)
    # With their interpolation the weights agree to float32 rounding (their mask divides by
    # max - min + 1e-8, ours by max - min: a relative change of 1e-8). Logits reach 9.5 and
    # weights 0.27; measured difference 1.5e-11.
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-4)
    # Our half-pixel masks sit up to half a feature cell (16 px) away from theirs, which
    # changes masked logits: measured up to 3.0 (0 for all-zero channels), and weights by
    # up to 0.124 (largest weight 0.27). The full-map consequence is the next test.
    assert 1.0 < float((half_pixel - corners).abs().max()) < 6.0
    moved = float((torch.softmax(half_pixel, dim=1) - theirs).abs().max())
    assert 0.03 < moved < 0.25


@pytest.mark.slow
def test_scorecam_close_to_pytorch_grad_cam_on_all_channels(bundled):
    # The one full run: 1280 masked forward passes on each side, one image.
    grad_cam = pytest.importorskip("pytorch_grad_cam")
    model, x = bundled
    x1 = x[:1]
    e = cl.attribute(model, x1, "scorecam", target=TOP1[0])
    assert e.extras["layer"] == "bn2"
    theirs = _theirs(grad_cam.ScoreCAM, model, x1.detach(), TOP1[:1])
    ours = e.normalized()[:, 0]
    # Only the mask interpolation differs (previous test). Over 1280 channels the weight
    # changes largely average out: measured max 0.039 after normalisation, mean 0.011,
    # correlation 0.9993. The bounds leave about 2x room.
    diff = (ours - theirs).abs()
    assert float(diff.max()) < 0.08 and float(diff.mean()) < 0.025
    corr = torch.corrcoef(torch.stack([ours.flatten(), theirs.flatten()]))[0, 1]
    assert float(corr) > 0.998
