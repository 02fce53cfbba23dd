"""Guided backprop and deconvnet: hand-computed values, slopes, Captum cross-checks."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import cnnlens as cl
from cnnlens.attribution.guided import local_slope


def two_layer_net() -> nn.Module:
    """x (1,1,1,2) -> Linear W1 -> ReLU -> Linear W2 (2 classes)."""
    net = nn.Sequential(
        nn.Flatten(), nn.Linear(2, 2, bias=False), nn.ReLU(), nn.Linear(2, 2, bias=False)
    )
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[1.0, 2.0], [-1.0, 1.0]]))
        net[3].weight.copy_(torch.tensor([[-2.0, 3.0], [1.0, 1.0]]))
    return net


X = torch.tensor([[[[1.0, 0.5]]]])  # pre-activations z = W1 x = [2, -0.5]: unit 2 is off


@pytest.mark.parametrize(
    "method, expected",
    [
        # class 0: upstream gradient [-2, 3]
        #   plain:  [-2, 3] * mask[1, 0]          = [-2, 0] -> W1^T -> [-2, -4]
        #   guided: max([-2, 3], 0) * mask[1, 0]  = [0, 0]  -> [0, 0]
        #   deconv: max([-2, 3], 0)               = [0, 3]  -> [-3, 3]
        # class 1: upstream gradient [1, 1]
        #   plain/guided: [1, 0] -> [1, 2];  deconv: [1, 1] -> [0, 3]
        ("gradient", [[[-2.0, -4.0]], [[1.0, 2.0]]]),
        ("guided_backprop", [[[0.0, 0.0]], [[1.0, 2.0]]]),
        ("deconvnet", [[[-3.0, 3.0]], [[0.0, 3.0]]]),
    ],
)
def test_hand_computed_rules(method, expected):
    e = cl.attribute(two_layer_net(), X, method, target=[[0, 1]], reduce="sum")
    assert e.maps.shape == (1, 2, 1, 2)
    torch.testing.assert_close(e.maps[0], torch.tensor(expected))
    assert e.signed


@pytest.mark.parametrize(
    "act",
    [nn.ReLU(), nn.ReLU6(), nn.LeakyReLU(0.1), nn.SiLU(), nn.GELU(), nn.GELU("tanh"), nn.ELU(0.7)],
)
def test_local_slope_is_the_derivative(act):
    z = torch.linspace(-7.9, 7.9, 158, dtype=torch.float64)  # avoids the kinks at 0 and 6
    zz = z.clone().requires_grad_(True)
    (autograd_slope,) = torch.autograd.grad(act(zz).sum(), zz)
    torch.testing.assert_close(local_slope(act, z), autograd_slope)


def test_model_without_any_rectifier_is_refused():
    # Tanh is saturating, not rectifying: guided backprop would be the plain gradient.
    class Squashing(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.act, self.fc = nn.Conv2d(3, 2, 3), nn.Tanh(), nn.Linear(2, 3)

        def forward(self, x):
            return self.fc(torch.sigmoid(self.act(self.conv(x))).mean((2, 3)))

    for method in ("guided_backprop", "deconvnet"):
        with pytest.raises(cl.MethodError, match="no rectifying activation.*Use 'gradient'"):
            cl.attribute(Squashing(), torch.randn(1, 3, 8, 8), method, target=0)


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


@pytest.mark.parametrize(
    "ours, theirs", [("guided_backprop", "GuidedBackprop"), ("deconvnet", "Deconvolution")]
)
def test_matches_captum_on_resnet_with_reused_inplace_relus(resnet, ours, theirs):
    import captum.attr

    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    inplace = [m.inplace for m in resnet.modules() if isinstance(m, nn.ReLU)]
    ref = getattr(captum.attr, theirs)(resnet).attribute(x, target=[3, 7])
    for reduce, expected in (("sum", ref.sum(1)), ("absmax", ref.abs().amax(1))):
        e = cl.attribute(resnet, x, ours, target=[3, 7], reduce=reduce)
        torch.testing.assert_close(
            e.maps[:, 0], expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max())
        )
    assert [m.inplace for m in resnet.modules() if isinstance(m, nn.ReLU)] == inplace


def test_guided_differs_from_plain_gradient(resnet):
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    g = cl.attribute(resnet, x, "gradient", target=3, reduce="sum").maps
    gb = cl.attribute(resnet, x, "guided_backprop", target=3, reduce="sum").maps
    dc = cl.attribute(resnet, x, "deconvnet", target=3, reduce="sum").maps
    assert not torch.allclose(g, gb) and not torch.allclose(gb, dc)


@pytest.mark.slow
def test_bundled_relu6_rule_differs_from_captum_which_skips_relu6():
    """Captum hooks nn.ReLU only; EfficientNet-Lite0 uses ReLU6, so Captum's guided
    backprop there equals the plain gradient, while cnnlens applies the guided rule."""
    import captum.attr

    model = cl.load_model()
    x = model.preprocess(cl.sample_images(["chelsea"])["chelsea"])
    ref = captum.attr.GuidedBackprop(model.net).attribute(x, target=285).sum(1)
    plain = cl.attribute(model, x, "gradient", target=285, reduce="sum").maps[:, 0]
    ours = cl.attribute(model, x, "guided_backprop", target=285, reduce="sum").maps[:, 0]
    torch.testing.assert_close(ref, plain, rtol=1e-4, atol=1e-6)
    rel = float((ours - ref).norm() / ref.norm())
    assert rel > 0.5, f"guided rule should change the map substantially, rel. diff {rel:.3f}"
