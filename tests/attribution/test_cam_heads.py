"""CAM on heads beyond GAP + linear, checked by hand.

A head without a linear layer: class maps made by a 1x1 convolution, then global
average pooling (network-in-network, SqueezeNet). Class c's map is channel c of the
pooled tensor, whose mean is c's logit (a net that keeps the input's size, so no
upsampling blurs the comparison). And tokens pooled by ``AdaptiveAvgPool1d`` after a
transpose (Hugging Face Swin): the map is the classifier row applied per token."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import cnnlens as cl


def _nin(k: int = 4) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, k, 1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    ).eval()


def test_cam_of_a_class_map_head_is_the_class_channel():
    net, x = _nin(), torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    e = cl.attribute(net, x, "cam", target=[[1, 3], [2, 0]])
    with torch.no_grad():
        maps = net[:4](x)
        logits = net(x)
    torch.testing.assert_close(e.maps[0], maps[0, [1, 3]])
    torch.testing.assert_close(e.maps[1], maps[1, [2, 0]])
    torch.testing.assert_close(e.maps[:, 0].mean((1, 2)), logits[[0, 1], [1, 2]])
    assert e.extras["layer"] == "3" and e.extras["pooled"] == "3"


def test_a_layer_below_the_class_maps_is_still_refused():
    net, x = _nin(), torch.randn(1, 3, 12, 12)
    with pytest.raises(cl.MethodError, match="pooling is the output, and .1. is not it"):
        cl.attribute(net, x, "cam", target=0, layer="1")


def test_squeezenet_cam_is_its_class_maps():
    torchvision = pytest.importorskip("torchvision")
    net = torchvision.models.squeezenet1_1(num_classes=10).eval()
    x = torch.rand(1, 3, 64, 64)
    e = cl.attribute(net, x, "cam", target=7)
    with torch.no_grad():
        logit = net(x)[0, 7]
    assert e.extras["layer"] == "classifier.2" and e.maps.std() > 0
    torch.testing.assert_close(e.maps[0, 0].mean(), logit, atol=1e-4, rtol=1e-4)


class TransposedPool(nn.Module):
    """Tokens -> LayerNorm -> transpose(1, 2) -> AdaptiveAvgPool1d -> Linear (HF Swin's head)."""

    def __init__(self, prefix: int = 0):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Conv2d(3, 6, 2, stride=2)
        self.norm = nn.LayerNorm(6)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(6, 4)
        self.prefix = prefix
        if prefix:
            self.cls_token = nn.Parameter(torch.randn(1, 1, 6))

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        if self.prefix:
            t = torch.cat([self.cls_token.expand(len(x), -1, -1), t], dim=1)
        return self.fc(self.pool(self.norm(t).transpose(1, 2)).flatten(1))


def test_cam_follows_transposed_tokens_to_a_1d_pooling():
    net, x = TransposedPool().eval(), torch.randn(2, 3, 8, 8)
    e = cl.attribute(net, x, "cam", target=[1, 2], layer="norm")
    assert e.extras["pooled"] == "norm -> transpose"
    with torch.no_grad():
        a = net.norm(net.embed(x).flatten(2).transpose(1, 2))  # (N, 16, 6) on a 4x4 grid
        want = torch.einsum("nc,nlc->nl", net.fc.weight[[1, 2]], a).view(2, 4, 4)
        logits = net(x)
    small = torch.nn.functional.interpolate(want[:, None], size=(8, 8), mode="bilinear")
    torch.testing.assert_close(e.maps[:, 0], small[:, 0])
    mean = e.maps[:, 0].mean((1, 2))
    torch.testing.assert_close(mean + net.fc.bias[[1, 2]], logits[[0, 1], [1, 2]])


def test_a_pool_over_the_class_token_too_is_refused():
    net = TransposedPool(prefix=1).eval()
    with pytest.raises(cl.MethodError, match="another\\s+head|not it"):
        cl.attribute(net, torch.randn(1, 3, 8, 8), "cam", target=0, layer="norm")
