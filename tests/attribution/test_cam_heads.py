"""CAM on a head without a linear layer: class maps made by a 1x1 convolution, then global
average pooling (network-in-network, SqueezeNet). Class c's map is channel c of the
pooled tensor, whose mean is c's logit; checked by hand on a net that keeps the input's
size, so no upsampling blurs the comparison."""

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
