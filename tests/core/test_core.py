"""Targets, layer look-up, default layers, hooks and the registry."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import cnnlens as cl
from cnnlens.core.hooks import capture, preserved
from cnnlens.core.layers import default_layer
from cnnlens.core.names import resolve_layer
from cnnlens.core.targets import resolve_targets
from helpers import HOOK_ATTRS, tiny_cnn

LOGITS = torch.tensor([[0.1, 3.0, 2.0, -1.0], [5.0, 0.0, 1.0, 4.0]])


@pytest.mark.parametrize(
    "spec, expected",
    [
        (None, [[1], [0]]),
        (2, [[2], [2]]),
        ([3, 1], [[3], [1]]),
        ([[1, 2], [0, 3]], [[1, 2], [0, 3]]),
        ("top2", [[1, 2], [0, 3]]),
        ("TOP-3", [[1, 2, 0], [0, 3, 2]]),
        (torch.tensor([2, 0]), [[2], [0]]),
        (torch.tensor(1), [[1], [1]]),
    ],
)
def test_target_specs(spec, expected):
    assert resolve_targets(spec, 2, LOGITS).tolist() == expected


@pytest.mark.parametrize(
    "spec, message",
    [
        ([1, 2, 3], "one entry per image"),
        ([[1], [1, 2]], "same"),
        (4, "out of range"),
        ("top5", "top5"),
        ("best", "top5"),
        (True, "bool"),
        ([1.5, 2], "integers"),
        (-2, ">= 0"),
        ({1: 2}, "unsupported"),
    ],
)
def test_bad_target_specs(spec, message):
    with pytest.raises(cl.TargetError, match=message):
        resolve_targets(spec, 2, LOGITS)


def test_resolve_layer_by_name_module_and_suggestions():
    net = torchvision.models.resnet18()
    assert resolve_layer(net, "layer4.1.conv2")[1] is net.layer4[1].conv2
    assert resolve_layer(net, net.layer3)[0] == "layer3"
    with pytest.raises(cl.LayerError) as err:
        resolve_layer(net, "layer4.1.conv3")
    assert "layer4.1.conv2" in str(err.value) and "cnnlens layers" in str(err.value)
    with pytest.raises(cl.LayerError, match="not part"):
        resolve_layer(net, nn.Conv2d(1, 1, 1))


def test_default_layer_is_last_conv_block():
    assert default_layer(torchvision.models.resnet18()) == "layer4"
    assert default_layer(torchvision.models.mobilenet_v3_small()) == "features"
    assert default_layer(tiny_cnn(), (32, 32)) == "5"
    with pytest.raises(cl.LayerError, match="spatial"):
        default_layer(nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2)), (4, 4))


def test_bundled_default_layer():
    model = cl.load_model()
    assert default_layer(model.net) == "bn2"
    infos = {i.name: i for i in cl.layers(model)}
    assert infos["bn2"].output_shape == (1280, 7, 7)
    assert infos["conv_stem"].output_shape == (32, 112, 112)
    assert infos["classifier"].output_shape == (1000,)


def test_capture_records_and_cleans_up_after_exception():
    net = tiny_cnn()
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(ZeroDivisionError):
        with capture(net, ["0", "4"], record_inputs=True) as rec:
            net(x)
            assert rec.activations["4"].shape == (1, 6, 8, 8)
            assert rec.inputs["4"].shape == (1, 4, 16, 16)
            assert rec.calls == {"0": 1, "4": 1}
            raise ZeroDivisionError
    assert all(len(getattr(m, a)) == 0 for m in net.modules() for a in HOOK_ATTRS)


def test_capture_gradients_cuts_graph_and_isolates_in_place_changes():
    net = tiny_cnn().eval()
    x = torch.randn(2, 3, 16, 16)
    with capture(net, ["1"], gradients=True) as rec:
        y = net(x)  # net[2] is ReLU(inplace=True) right after the captured BN
    acts = rec.activations["1"]
    assert acts.is_leaf and acts.requires_grad
    assert (acts < 0).any(), "the in-place ReLU must not have changed the captured tensor"
    (g,) = torch.autograd.grad(y[:, 0].sum(), acts)
    assert g.shape == acts.shape and g.abs().sum() > 0


def test_preserved_restores_after_exception():
    net = tiny_cnn().train()
    flags = [p.requires_grad for p in net.parameters()]
    with pytest.raises(KeyError):
        with preserved(net):
            assert not net.training and not any(p.requires_grad for p in net.parameters())
            raise KeyError("boom")
    assert net.training and [p.requires_grad for p in net.parameters()] == flags


def test_method_listing_has_summaries_and_defaults():
    methods = {m.name: m for m in cl.list_methods()}
    assert methods["occlusion"].defaults["window"] == 32
    assert methods["occlusion"].signed and not methods["gradcam"].signed
    assert all(m.summary for m in methods.values())
    with pytest.raises(cl.MethodError, match="occlusion"):
        cl.get_method("oclusion")


def test_explanation_normalized_and_cat():
    maps = torch.tensor([[[[1.0, 3.0], [2.0, 5.0]]]])
    e = cl.Explanation(maps=maps, targets=torch.tensor([[0]]), method="m")
    assert e.normalized().flatten().tolist() == [0.0, 0.5, 0.25, 1.0]
    s = cl.Explanation(maps=-maps, targets=torch.tensor([[0]]), method="m", signed=True)
    assert s.normalized().flatten().tolist() == pytest.approx([-0.2, -0.6, -0.4, -1.0])
    both = cl.Explanation.cat([e, e])
    assert both.maps.shape == (2, 1, 2, 2)
    with pytest.raises(ValueError):
        cl.Explanation(maps=maps, targets=torch.tensor([[0, 1]]), method="m")


def test_attribute_checks_input_and_device():
    net = tiny_cnn()
    e = cl.attribute(net, torch.randn(3, 16, 16), "gradient", target=0)
    assert e.maps.shape == (1, 1, 16, 16)
    with pytest.raises(TypeError, match="preprocess"):
        cl.attribute(net, [[0.0]], "gradient")
    with pytest.raises(ValueError, match="meta"):
        cl.attribute(net, torch.randn(1, 3, 16, 16, device="meta"), "gradient")


def test_normalized_quantile_clips_extremes():
    values = torch.arange(1.0, 201.0).view(1, 1, 10, 20)  # 1..200
    e = cl.Explanation(maps=values, targets=torch.tensor([[0]]), method="m")
    shown = e.normalized(quantile=0.5).flatten()
    # the median of 1..200 is 100.5: values from it up are full colour
    assert shown[0] == 0 and shown[-1] == 1 and shown[99] < 1 and shown[100] == 1
    assert shown[49].item() == pytest.approx(49 / 99.5)
    s = cl.Explanation(maps=-values, targets=torch.tensor([[0]]), method="m", signed=True)
    assert s.normalized(quantile=0.5).flatten()[-1] == -1
    with pytest.raises(ValueError, match="quantile"):
        e.normalized(quantile=0.0)


def test_capture_without_gradients_is_isolated_from_in_place_ops():
    net = tiny_cnn().eval()
    with capture(net, ["1"]) as rec, torch.no_grad():
        net(torch.randn(2, 3, 16, 16))
    assert (rec.activations["1"] < 0).any(), "ReLU(inplace=True) after BN must not reach it"
