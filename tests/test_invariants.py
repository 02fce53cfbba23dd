"""Registry-wide invariants: every registered method, called normally, with a bad
target, and with a module that raises (forward or backward), leaves the model as
it came: no hooks, same training flags, requires_grad, parameters and buffers."""

from __future__ import annotations

import pytest
import torch

import cnnlens as cl
from helpers import assert_unchanged, snapshot, tiny_cnn

METHODS = [m.name for m in cl.list_methods()]


def _model_in_odd_state():
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
    net = _model_in_odd_state()
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
