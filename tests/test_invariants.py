"""Registry-wide invariants: every registered method, called normally, with a bad
target, and with a module that raises (forward or backward), leaves the model as
it came: no hooks, same training flags, requires_grad, parameters and buffers.
So do SIAM models (their own explanation, and every method, which either works on
them or refuses), and the layer listing, also when the forward pass raises."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import cnnlens as cl
from cnnlens.core.layers import default_layer, trace_layers
from cnnlens.models.base import LoadedModel
from cnnlens.siam import SiamConfig, SiamModel
from cnnlens.targets import (
    ClassProbability,
    EmbeddingSimilarity,
    MultiLabel,
    Regression,
    Target,
)
from helpers import assert_unchanged, snapshot, tiny_cnn, tiny_vit

METHODS = [m.name for m in cl.list_methods()]
# Methods that read attention need a transformer; on a CNN they refuse (tested in their module).
TRANSFORMER = {m.name for m in cl.list_methods() if m.family == "transformer"}


def _model_in_odd_state(method: str = ""):
    if method in TRANSFORMER:
        net = tiny_vit()
        net.train()  # as below: eval inside the call, train mode given back
        net[4].head.eval()
        net[4].cls_token.requires_grad_(False)
        return net
    net = tiny_cnn()
    net.train()  # cnnlens must explain in eval mode and give train mode back
    net[1].eval()  # a mixed state must survive too
    net[0].weight.requires_grad_(False)
    return net


def _x(n=2, size=48, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g)


def test_registry_lists_every_method_once():
    assert len(METHODS) == len(set(METHODS)) >= 4
    for name in ("occlusion", "gradient", "cam", "gradcam"):
        assert name in METHODS
    assert cl.list_methods("grad*")[0].name.startswith("grad")


@pytest.mark.parametrize("method", METHODS)
def test_normal_call_leaves_model_unchanged(method):
    net = _model_in_odd_state(method)
    before = snapshot(net)
    x = _x()
    e = cl.attribute(net, x, method, target=[[1, 3], [0, 4]])
    assert_unchanged(before, net)
    assert e.maps.shape == (2, 2, 48, 48)
    assert e.targets.tolist() == [[1, 3], [0, 4]]
    assert torch.isfinite(e.maps).all()
    assert e.maps.device == x.device
    assert e.method == method and e.seconds > 0
    again = cl.attribute(net, x, method, target=[[1, 3], [0, 4]])
    assert torch.equal(e.maps, again.maps), "same call, same maps"


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bad", [7, [1], "top9", -1, "best"])
def test_bad_target_raises_and_restores(method, bad):
    net = _model_in_odd_state(method)
    before = snapshot(net)
    with pytest.raises(cl.TargetError):
        cl.attribute(net, _x(), method, target=bad)
    assert_unchanged(before, net)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("where", ["forward", "backward"])
def test_module_that_raises_leaves_model_unchanged(method, where):
    net = _model_in_odd_state(method)
    net[3].mode = where
    before = snapshot(net)
    try:
        cl.attribute(net, _x(), method, target=1)
    except RuntimeError as e:
        assert "injected" in str(e)
    else:
        # only methods that never backpropagate through the trap may succeed
        assert where == "backward"
    assert_unchanged(before, net)
    net[3].mode = "off"
    cl.attribute(net, _x(), method, target=1)  # still usable afterwards
    assert_unchanged(before, net)


@pytest.mark.parametrize("method", METHODS)
def test_unknown_parameter_is_refused(method):
    net = tiny_cnn()
    with pytest.raises(cl.MethodError, match="no parameter"):
        cl.attribute(net, _x(), method, target=1, not_a_parameter=3)


def test_unknown_method_suggests_close_name():
    with pytest.raises(cl.MethodError, match="gradcam"):
        cl.attribute(tiny_cnn(), _x(), "grad_cam")


BATCHED = [m.name for m in cl.list_methods() if "batch_size" in m.defaults]


@pytest.mark.parametrize("method", BATCHED)
@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_batch_size_is_refused(method, bad):
    with pytest.raises(ValueError, match="batch_size"):
        cl.attribute(tiny_cnn(), _x(), method, target=1, batch_size=bad)


# ----------------------------------------------------------------------------- target kinds


class Broken(Target):
    """A target whose score raises, as a user's own target might."""

    def score(self, output):
        raise RuntimeError("score failure injected by the test")


def _kinds():
    """Four target kinds, two per image (segmentation and detection need their own models:
    tests/test_targets_kinds.py)."""
    ref = _x(1, seed=5)
    return [
        [ClassProbability(1), EmbeddingSimilarity(ref)],
        [MultiLabel(3), Regression(2)],
    ]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_takes_target_objects_or_refuses_and_leaves_the_model_unchanged(method):
    net = _model_in_odd_state(method)
    if method in TRANSFORMER:
        nn.init.normal_(net[4].head.weight, std=0.5)  # the tiny ViT's head starts at zero
    before = snapshot(net)
    x = _x()
    if cl.get_method(method).targets == "output":
        with pytest.raises(cl.MethodError, match="methods that can"):
            cl.attribute(net, x, method, target=_kinds())
    else:
        e = cl.attribute(net, x, method, target=_kinds())
        assert e.maps.shape == (2, 2, 48, 48) and torch.isfinite(e.maps).all()
        assert e.targets.tolist() == [[1, -1], [3, 2]]
    assert_unchanged(before, net)
    with pytest.raises((RuntimeError, cl.MethodError)) as err:
        cl.attribute(net, x, method, target=Broken())
    assert "injected" in str(err.value) or cl.get_method(method).targets == "output"
    assert_unchanged(before, net)


# ----------------------------------------------------------------------------- SIAM models


class SiamLogits(nn.Module):
    """A SIAM model seen as a classifier: its ``output`` ``(N, O)`` are the logits."""

    def __init__(self, siam: SiamModel):
        super().__init__()
        self.siam = siam

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.siam(x).output


def _siam_in_odd_state() -> SiamModel:
    """A 5-class SIAM model on ``tiny_cnn`` cut after its second conv, in a mixed state."""
    backbone = _model_in_odd_state()
    config = SiamConfig(
        attributes=["a", "b", "c"],
        outputs=[f"class {i}" for i in range(5)],
        task="classification",
        layer="4",
        size=48,
    )
    before = snapshot(backbone)
    siam = SiamModel(config, LoadedModel.wrap(backbone))
    assert_unchanged(before, backbone)  # building probes the trunk and gives it back
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        siam.head.weight.copy_(torch.randn(siam.head.weight.shape, generator=g))
        siam.head.bias.copy_(torch.randn(siam.head.bias.shape, generator=g))
    siam.head.train()
    siam.head.attr.eval()
    siam.head.bias.requires_grad_(False)
    return siam


def test_siam_explain_leaves_model_unchanged_also_when_forward_raises():
    siam = _siam_in_odd_state()
    before = snapshot(siam)
    x = _x()
    expl = siam.explain(x)
    assert_unchanged(before, siam)
    assert expl.maps.shape == (2, 3, 48, 48) and expl.error() < 1e-5
    siam.trunk.net[3].mode = "forward"
    with pytest.raises(RuntimeError, match="injected"):
        siam.explain(x)
    assert_unchanged(before, siam)
    siam.trunk.net[3].mode = "off"
    torch.testing.assert_close(siam.explain(x).contributions, expl.contributions)


# CAM needs GAP feeding a linear layer; excitation backprop has no rule for the head's maths.
# LRP has no rule for the SIAM head (sigmoid gates, parameters of its own)
REFUSED_ON_SIAM = {
    "cam",
    "excitation_backprop",
    "contrastive_excitation_backprop",
    "lrp",
    *TRANSFORMER,
}


@pytest.mark.parametrize("method", METHODS)
def test_method_on_siam_model_works_or_refuses_and_leaves_it_unchanged(method):
    net = SiamLogits(_siam_in_odd_state())
    before = snapshot(net)
    if method in REFUSED_ON_SIAM:
        with pytest.raises(cl.MethodError):
            cl.attribute(net, _x(), method, target=[[1, 3], [0, 4]])
    else:
        e = cl.attribute(net, _x(), method, target=[[1, 3], [0, 4]])
        assert e.maps.shape == (2, 2, 48, 48)
        assert torch.isfinite(e.maps).all()
    assert_unchanged(before, net)


# ----------------------------------------------------------------------------- layer listing


def test_layer_listing_leaves_model_unchanged_also_when_forward_raises():
    net = _model_in_odd_state()
    before = snapshot(net)
    names = [info.name for info in cl.layers(net)]
    assert names[:3] == ["0", "1", "2"] and default_layer(net) == "5"
    assert_unchanged(before, net)
    net[3].mode = "forward"
    with pytest.raises(RuntimeError, match="injected"):
        cl.layers(net)
    with pytest.raises(RuntimeError, match="injected"):
        trace_layers(net, (48, 48))
    assert_unchanged(before, net)


def test_layer_listing_of_a_siam_model_leaves_it_unchanged():
    siam = _siam_in_odd_state()
    before = snapshot(siam)
    infos = {info.name: info for info in trace_layers(siam, (48, 48))}
    assert infos["trunk.net.4"].output_shape == (6, 24, 24)
    assert infos["head.attr"].output_shape == (3, 24, 24)
    assert infos["trunk.net.8"].output_shape is None  # the trunk stops after its layer
    assert_unchanged(before, siam)
