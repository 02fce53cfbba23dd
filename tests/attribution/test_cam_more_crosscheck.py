"""XGrad-CAM, HiResCAM, Eigen-CAM, Ablation-CAM, FullGrad and guided Grad-CAM against
pytorch-grad-cam 1.5.7, on a random-weight torchvision ResNet-18 (64 px, two images) and
the bundled EfficientNet-Lite0 (scikit-image's ``chelsea`` at 96 px, 3x3 at ``bn2``, to keep
this file fast), same layer, input and target.

pytorch-grad-cam returns maps min-max scaled after the ReLU and again after resizing;
both scalings are affine per map, so the Pearson correlation with our unscaled maps is
unaffected (we also report the largest difference after our own min-max scaling).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnlens as cl
import cnnlens.attribution.cam_ablation as ca
from cnnlens.attribution.cam_eigen import principal_projection
from cnnlens.core.batching import FastNet

grad_cam = pytest.importorskip("pytorch_grad_cam")
model_targets = pytest.importorskip("pytorch_grad_cam.utils.model_targets")
svd = pytest.importorskip("pytorch_grad_cam.utils.svd_on_activations")
image_utils = pytest.importorskip("pytorch_grad_cam.utils.image")
torchvision = pytest.importorskip("torchvision")

PEARSON = 0.999
CLASSES = {"xgradcam": "XGradCAM", "hirescam": "HiResCAM", "ablationcam": "AblationCAM"}


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten().double(), b.flatten().double()]))[0, 1])


def minmax(maps: torch.Tensor) -> torch.Tensor:
    flat = maps.flatten(1)
    lo, hi = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    return ((flat - lo) / (hi - lo)).view_as(maps)


def agree(ours: torch.Tensor, theirs: torch.Tensor, floor: float = PEARSON) -> list[float]:
    """Pearson per image of ``ours (N, H, W)`` and ``theirs (N, H, W)``, all >= ``floor``."""
    r = [pearson(a, b) for a, b in zip(ours, theirs)]
    assert min(r) >= floor, r
    return r


def run_theirs(cls, net, layers, x, classes, **kw) -> torch.Tensor:
    inputs = x.clone().requires_grad_(True)  # frozen parameters: their backward still runs
    targets = [model_targets.ClassifierOutputTarget(c) for c in classes]
    with cl.preserved(net), cls(model=net, target_layers=layers, **kw) as cam:
        return torch.from_numpy(cam(input_tensor=inputs, targets=targets))


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    return net, x, [381, 7]


@pytest.fixture(scope="module")
def bundled():
    model = cl.load_model()
    x = model.preprocess(list(cl.sample_images(["chelsea"]).values()))
    return model, F.interpolate(x, size=(96, 96), mode="bilinear", antialias=True)


def their_guided_gradcam(net, layer, x, classes) -> torch.Tensor:
    """Their usage example, per image: min-max scaled Grad-CAM times guided backprop."""
    cams = run_theirs(grad_cam.GradCAM, net, [layer], x, classes)
    out = []
    for i, c in enumerate(classes):
        with cl.preserved(net):
            gb = grad_cam.GuidedBackpropReLUModel(model=net, device="cpu")(x[i : i + 1], c)
        out.append(torch.from_numpy(gb).permute(2, 0, 1))  # (3, H, W)
    return cams, torch.stack(out)


# --------------------------------------------------------------------------- ResNet-18


@pytest.mark.parametrize("method", ["xgradcam", "hirescam"])
@pytest.mark.parametrize("layer", ["layer3", "layer4"])
def test_resnet_cams_equal_pytorch_grad_cam(resnet, method, layer):
    net, x, classes = resnet
    e = cl.attribute(net, x, method, target=classes, layer=layer)
    module = dict(net.named_modules())[layer]
    theirs = run_theirs(getattr(grad_cam, CLASSES[method]), net, [module], x, classes)
    # Measured: Pearson 1.0000000, max |difference| after min-max 8.5e-7 or less.
    agree(e.maps[:, 0], theirs)
    assert float((e.normalized()[:, 0] - theirs).abs().max()) < 1e-4


def test_resnet_ablationcam_equals_pytorch_grad_cam(resnet):
    # Their 256 full passes per image are the slow part: one image, 32 px (2x2 at layer3).
    net, _, classes = resnet
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    e = cl.attribute(net, x, "ablationcam", target=classes[0], layer="layer3")
    assert e.extras["ablation"] == "broadcast"
    theirs = run_theirs(grad_cam.AblationCAM, net, [net.layer3], x, classes[:1], batch_size=128)
    # layer3 ends in a ReLU: their ablation writes 0 as ours does. Measured Pearson 1.0000000.
    agree(e.maps[:, 0], theirs)
    assert float((e.normalized()[:, 0] - theirs).abs().max()) < 1e-4


def test_resnet_eigencam_equals_pytorch_grad_cam_up_to_sign(resnet):
    net, x, classes = resnet
    e = cl.attribute(net, x, "eigencam", target=classes, layer="layer3")
    theirs = run_theirs(grad_cam.EigenCAM, net, [net.layer3], x, classes)
    agree(e.maps[:, 0], _signed_like_ours(net, "layer3", x, theirs))


def _signed_like_ours(net, layer, x, theirs):
    """Their map, recomputed with their own functions from the opposite singular vector
    where LAPACK's sign differs from our convention."""
    with cl.preserved(net), cl.capture(net, [layer]) as rec, torch.no_grad():
        net(x)
    acts = rec.activations[layer]
    ours = principal_projection(acts)
    proj = torch.from_numpy(svd.get_2d_projection(acts.numpy()))
    out = []
    for i in range(len(x)):
        if pearson(ours[i], proj[i]) > 0:
            out.append(theirs[i])
        else:
            flipped = np.maximum(-proj[i : i + 1].numpy(), 0)
            out.append(torch.from_numpy(image_utils.scale_cam_image(flipped, x.shape[-2:])[0]))
    return torch.stack(out)


def test_resnet_fullgrad_equals_pytorch_grad_cam(resnet):
    net, x, classes = resnet
    e = cl.attribute(net, x, "fullgrad", target=classes)
    assert e.extras["biases"] == 20  # every BatchNorm2d of ResNet-18; its convs have no bias
    theirs = run_theirs(grad_cam.FullGrad, net, [], x, classes)
    # Measured: Pearson 1.0000000, max difference after min-max 1.2e-7.
    agree(e.maps[:, 0], theirs)
    assert float((e.normalized()[:, 0] - theirs).abs().max()) < 1e-5


def check_guided(net, x, classes, layer: str) -> None:
    """Our guided Grad-CAM is our Grad-CAM times our guided backprop (test_cam_more.py);
    each factor equals theirs, and with their min-max scaling applied to our Grad-CAM
    factor the product equals theirs."""
    module = net.get_submodule(layer)
    cams, gb = their_guided_gradcam(net, module, x, classes)
    ours_cam = cl.attribute(net, x, "gradcam", target=classes, layer=layer).maps[:, 0]
    ours_gb = cl.attribute(net, x, "guided_backprop", target=classes, reduce="sum").maps[:, 0]
    agree(ours_cam, cams)
    agree(ours_gb, gb.sum(1))
    # Their Grad-CAM is min-max scaled after upsampling: where the upsampled map's minimum
    # is above 0 that subtracts an offset, so their product is not proportional to ours
    # (ResNet-18: Pearson 0.96 on image 0, 1.0000 on image 1). With the same scaling
    # applied to our Grad-CAM factor the products agree.
    agree(minmax(ours_cam) * ours_gb, (cams.unsqueeze(1) * gb).sum(1))


def test_resnet_guided_gradcam_equals_their_product(resnet):
    net, x, classes = resnet
    check_guided(net, x, classes, "layer3")


# --------------------------------------------------------------------------- bundled


@pytest.mark.parametrize("method", ["xgradcam", "hirescam"])
def test_bundled_gradient_cams_equal_pytorch_grad_cam(bundled, method):
    model, x = bundled
    e = cl.attribute(model, x, method, target=285)
    assert e.extras["layer"] == "bn2"
    theirs = run_theirs(getattr(grad_cam, CLASSES[method]), model.net, [model.net.bn2], x, [285])
    agree(e.maps[:, 0], theirs)


def test_bundled_eigencam_equals_pytorch_grad_cam_up_to_sign(bundled):
    model, x = bundled
    e = cl.attribute(model, x, "eigencam", target=285)
    theirs = run_theirs(grad_cam.EigenCAM, model.net, [model.net.bn2], x, [285])
    agree(e.maps[:, 0], _signed_like_ours(model.net, "bn2", x, theirs))


def test_bundled_ablation_weights_equal_pytorch_grad_cam(bundled):
    # Their 1280 full passes would take minutes here: compare the weights of the first 64
    # channels (their get_cam_weights ablates as many channels as the activations it is
    # given have). The full 224 px map is compared in benchmarks/bench_cam_more.py.
    model, x = bundled
    net = model.net
    with cl.preserved(net), cl.capture(net, ["bn2"]) as rec, torch.no_grad():
        logits = net(x)
    raw = rec.activations["bn2"].clone()
    assert float(raw.min()) == 0.0  # ReLU6 output: their ablation writes 0, as ours does
    target = [model_targets.ClassifierOutputTarget(285)]
    with cl.preserved(net), grad_cam.AblationCAM(model=net, target_layers=[net.bn2]) as ab:
        theirs = ab.get_cam_weights(x, net.bn2, target, raw[:, :64].numpy(), None)
    targets = torch.tensor([[285]])
    with cl.preserved(net), torch.inference_mode():
        scores, mode = ca.ablated_scores(FastNet.plain(net), x, "bn2", raw, 1, 1, targets, None)
    assert mode == "broadcast"
    ours = ca.drop_weights(logits.gather(1, targets), scores.clone())[0, :64, 0]
    # Relative drops of the order of 1e-3; measured difference 1e-7 (float32 scores of ~15).
    torch.testing.assert_close(ours, torch.from_numpy(theirs)[0], atol=2e-6, rtol=1e-4)
    assert float(ours.abs().max()) > 1e-3


def _plain_batchnorms(net: nn.Module) -> nn.Module:
    """A copy where each timm BatchNormAct2d is an nn.BatchNorm2d followed by its activation
    (what pytorch-grad-cam's FullGrad recognises; the same function)."""
    net = copy.deepcopy(net)
    for name, m in list(net.named_modules()):
        if type(m).__name__ == "BatchNormAct2d":
            bn = nn.BatchNorm2d(m.num_features, eps=m.eps, momentum=m.momentum)
            bn.load_state_dict({k: v for k, v in m.state_dict().items() if "." not in k})
            parent, _, child = name.rpartition(".")
            owner = net.get_submodule(parent) if parent else net
            setattr(owner, child, nn.Sequential(bn, m.drop, m.act).eval())
    return net


def test_bundled_fullgrad_equals_pytorch_grad_cam_on_plain_batchnorms(bundled):
    model, x = bundled
    e = cl.attribute(model, x, "fullgrad", target=285)
    assert e.extras["biases"] == 49  # every BatchNormAct2d; timm's convs have no bias
    plain = _plain_batchnorms(model.net)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), model.net(x), atol=1e-4, rtol=1e-4)
    theirs = run_theirs(grad_cam.FullGrad, plain, [], x, [285])
    # On the model as loaded they find no batch norm (the type is not nn.BatchNorm2d) and
    # their map is the input term alone (benchmarks/bench_cam_more.py: Pearson 0.21 at 224 px).
    agree(e.maps[:, 0], theirs)


def test_bundled_guided_gradcam_on_relu_copy(bundled):
    # Their guided backprop replaces nn.ReLU only; EfficientNet-Lite0 uses ReLU6, which ours
    # clips as well. Both run on a copy with ReLU in place of ReLU6.
    model, x = bundled
    net = copy.deepcopy(model.net)
    for name, m in list(net.named_modules()):
        if isinstance(m, nn.ReLU6):
            parent, _, child = name.rpartition(".")
            setattr(net.get_submodule(parent) if parent else net, child, nn.ReLU())
    check_guided(net, x, [285], "bn2")
