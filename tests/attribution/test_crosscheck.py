"""The bundled model on two sample photos, against Captum and pytorch-grad-cam.

Each test runs one of our methods and an independent implementation of the same
definition on EfficientNet-Lite0 (``cl.load_model()``) with scikit-image's ``chelsea``
(Egyptian cat, class 285) and ``coffee`` (espresso, class 967), and bounds the difference.
The tolerances are explained next to each assertion and the measured differences are
recorded in docs/methods.md ("Differences from Captum / pytorch-grad-cam").
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import cnnlens as cl

captum_attr = pytest.importorskip("captum.attr")
grad_cam = pytest.importorskip("pytorch_grad_cam")
model_targets = pytest.importorskip("pytorch_grad_cam.utils.model_targets")

pytestmark = pytest.mark.slow

TOP1 = [285, 967]  # Egyptian cat, espresso
SECOND = [282, 968]  # tiger cat, cup: runners-up, weaker evidence


@pytest.fixture(scope="module")
def bundled():
    model = cl.load_model()
    images = cl.sample_images(["chelsea", "coffee"])
    x = model.preprocess([images["chelsea"], images["coffee"]])
    with torch.no_grad():
        logits = model.net(x)
    return model, x, logits


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """Per-map min-max scaling of ``(N, H, W)`` to [0, 1] (no epsilon)."""
    flat = maps.flatten(1)
    lo, hi = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    return ((flat - lo) / (hi - lo)).view_as(maps)


def test_photos_are_classified_as_documented(bundled):
    _, x, logits = bundled
    assert tuple(x.shape) == (2, 3, 224, 224)
    assert logits.argmax(1).tolist() == TOP1
    assert logits.topk(2, dim=1).indices[:, 1].tolist() == SECOND


def test_gradient_equals_captum_saliency(bundled):
    model, x, _ = bundled
    e = cl.attribute(model, x, "gradient", target=torch.tensor([TOP1, SECOND]).T)
    saliency = captum_attr.Saliency(model.net)
    for t, classes in enumerate((TOP1, SECOND)):
        # Captum: |d logit_c / d x| per channel; Simonyan et al. then take the channel max.
        inputs = x.clone().requires_grad_(True)
        theirs = saliency.attribute(inputs, target=classes, abs=True).amax(dim=1)
        assert theirs.abs().max() > 0.1  # a real map, not an all-zero one
        # Both differentiate the same graph with autograd; measured difference is 0.0.
        torch.testing.assert_close(e.maps[:, t], theirs, atol=1e-6, rtol=1e-5)


def _captum_occlusion(net, x, window, stride, targets):
    occ = captum_attr.Occlusion(lambda z: F.softmax(net(z), dim=1))
    with torch.no_grad():
        out = occ.attribute(
            x,
            sliding_window_shapes=(3, window, window),
            strides=(3, stride, stride),
            baselines=0,
            target=targets,
            perturbations_per_eval=8,
        )
    # The window spans all 3 channels, so Captum's attribution is the same in each channel.
    torch.testing.assert_close(out[:, 1], out[:, 0], atol=0, rtol=0)
    torch.testing.assert_close(out[:, 2], out[:, 0], atol=0, rtol=0)
    return out[:, 0]


def test_occlusion_equals_captum_when_the_stride_tiles_the_image(bundled):
    # Window 64, stride 32: (224 - 64) % 32 == 0, so both place windows at 0, 32, ..., 160
    # (6 x 6 = 36); pixels away from the border are covered by 4 of them and both average
    # the drops.
    model, x, _ = bundled
    e = cl.attribute(
        model, x, "occlusion", target=TOP1, window=64, stride=32, baseline="zero", score="prob"
    )
    assert e.extras["positions"] == 36
    theirs = _captum_occlusion(model.net, x, 64, 32, TOP1)
    assert theirs.abs().max() > 0.05
    # Same forward passes up to batching (8 occluded images per pass on both sides, but in
    # another order), so the probabilities agree to float32 rounding: measured 3.6e-7 on
    # drops as large as 0.21.
    torch.testing.assert_close(e.maps[:, 0], theirs, atol=2e-6, rtol=0)


def test_occlusion_differs_from_captum_only_near_the_border_otherwise(bundled):
    # Window 112, stride 80: (224 - 112) % 80 = 32. We add a window flush with the border
    # (starts 0, 80, 112); Captum keeps stepping and crops the last one (starts 0, 80, 160,
    # the last covering only 64 px). Pixels before 112 on both axes see the same windows.
    model, x, _ = bundled
    e = cl.attribute(model, x[:1], "occlusion", target=TOP1[0], window=112, stride=80)
    assert e.extras["positions"] == 9
    theirs = _captum_occlusion(model.net, x[:1], 112, 80, TOP1[:1])
    ours = e.maps[:, 0]
    torch.testing.assert_close(ours[:, :112, :112], theirs[:, :112, :112], atol=2e-6, rtol=0)
    # Beyond that the windows differ; measured up to 0.15 (the map's maximum is 0.20).
    assert (ours - theirs)[:, 112:, 112:].abs().max() > 0.05


@pytest.mark.parametrize("classes", [TOP1, SECOND], ids=["top1", "runner-up"])
def test_gradcam_equals_pytorch_grad_cam_after_their_normalisation(bundled, classes):
    model, x, _ = bundled
    net = model.net
    e = cl.attribute(model, x, "gradcam", target=classes)
    assert e.extras["layer"] == "bn2"
    targets = [model_targets.ClassifierOutputTarget(c) for c in classes]
    # Their backward pass starts from the logits; with the parameters frozen and an input
    # that requires grad it still reaches bn2 but computes no parameter gradients (faster,
    # and no .grad left on the shared model). The gradients at bn2 are the same.
    inputs = x.clone().requires_grad_(True)
    with cl.preserved(net), grad_cam.GradCAM(model=net, target_layers=[net.bn2]) as cam:
        theirs = torch.from_numpy(cam(input_tensor=inputs, targets=targets))
    ours = e.normalized()[:, 0]
    # pytorch-grad-cam: ReLU at 7x7 -> min-max (eps 1e-7) -> cv2.resize INTER_LINEAR to
    # 224 -> min-max again (eps 1e-7). Ours: ReLU at 7x7 -> F.interpolate bilinear,
    # align_corners=False -> min-max (eps 1e-12) in Explanation.normalized(). Both resizes
    # use half-pixel centres with clamped borders; OpenCV's float path and PyTorch differ
    # by float32 rounding (measured 1.5e-7 of the map maximum), and the epsilons change a
    # [0, 1] map by at most 1e-7 / (map range) < 1e-6 here. Measured: 7.2e-7 and 6.0e-7.
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    # The tolerance is tight enough to tell interpolation conventions apart: corner-aligned
    # bilinear differs from theirs by about 0.3, and normalising only at 7x7 (their second
    # min-max left out) by about 3.5e-3.
    with cl.capture(net, ["bn2"], gradients=True) as rec:
        logits = net(x)
    acts = rec.activations["bn2"]
    (grads,) = torch.autograd.grad(logits[torch.arange(2), classes].sum(), acts)
    cam7 = (grads.mean(dim=(2, 3), keepdim=True) * acts).sum(1, keepdim=True).clamp_min(0)
    cam7 = cam7.detach()
    corners = minmax(F.interpolate(cam7, size=(224, 224), mode="bilinear", align_corners=True))
    assert (corners[:, 0] - theirs).abs().max() > 0.05
    once = F.interpolate(
        minmax(cam7[:, 0]).unsqueeze(1), size=(224, 224), mode="bilinear", align_corners=False
    )
    assert (once[:, 0] - theirs).abs().max() > 1e-3
    # And our raw map is exactly that 7x7 Grad-CAM, upsampled.
    up = F.interpolate(cam7, size=(224, 224), mode="bilinear", align_corners=False)
    torch.testing.assert_close(e.maps, up, atol=1e-6, rtol=1e-5)


def test_cam_mean_plus_bias_is_the_logit(bundled):
    model, x, logits = bundled
    net = model.net
    e = cl.attribute(model, x, "cam", target="top5")
    assert e.extras["layer"] == "bn2"
    assert e.targets[:, 0].tolist() == TOP1
    # Recompute the CAM at feature resolution (7x7) from the captured feature maps.
    with cl.capture(net, ["bn2"]) as rec, torch.no_grad():
        net(x)
    acts = rec.activations["bn2"]  # (2, 1280, 7, 7)
    assert tuple(acts.shape) == (2, 1280, 7, 7)
    weight, bias = net.classifier.weight.detach(), net.classifier.bias.detach()
    cam7 = torch.einsum("ntk,nkhw->nthw", weight[e.targets], acts)
    wanted = logits.gather(1, e.targets)
    # sum_k w_ck mean_u A_k(u) + b_c re-associated: float32 sums over 1280 channels of
    # logits up to ~11 agree to ~1e-5; measured 1.9e-6.
    torch.testing.assert_close(cam7.mean(dim=(2, 3)) + bias[e.targets], wanted, atol=1e-4, rtol=0)
    # Our 224x224 maps are that CAM upsampled; integer-factor bilinear upsampling with
    # half-pixel centres keeps the mean, so the identity also holds at input resolution.
    up = F.interpolate(cam7, size=(224, 224), mode="bilinear", align_corners=False)
    torch.testing.assert_close(e.maps, up, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(e.maps.mean(dim=(2, 3)) + bias[e.targets], wanted, atol=1e-4, rtol=0)
