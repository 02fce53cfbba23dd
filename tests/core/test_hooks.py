"""The hook primitive: ``attached`` removes every hook it placed, also when attaching
fails half-way, and so do ``capture``, guided backprop / deconvnet, excitation backprop
and the sanity check's forward-order probe, which are built on it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import cnnlens as cl
from cnnlens.attribution import excitation
from cnnlens.core.hooks import KINDS, attached, capture, hook_count, preserved
from cnnlens.evaluation.sanity import forward_order
from helpers import assert_unchanged, snapshot, tiny_cnn


class Injected(RuntimeError):
    """The failure a test plants."""


def _record(log: list, tag: str):
    def hook(module, *args):
        log.append(tag)

    return hook


def _x(n: int = 2, size: int = 16) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def _refuse_after_others(net: nn.Module):
    """A registration method that raises once other hooks are already on ``net``."""

    def register(*args, **kwargs):
        assert hook_count(net) > 0, "the failure must come half-way through attaching"
        raise Injected("registration failure injected by the test")

    return register


# ----------------------------------------------------------------------------- attached


def test_attached_runs_hooks_of_every_kind_and_removes_them():
    net = tiny_cnn().eval()
    log: list[str] = []
    triples = [(net[4], _record(log, kind), kind) for kind in KINDS]
    with attached(triples):
        assert hook_count(net) == len(KINDS)
        net(_x()).sum().backward()
    assert sorted(log) == sorted(KINDS)
    assert hook_count(net) == 0
    net(_x()).sum().backward()
    assert len(log) == len(KINDS), "no hook may run after the block"


def test_attached_removes_its_hooks_when_the_block_raises():
    net = tiny_cnn()
    with pytest.raises(Injected):
        with attached((m, _record([], "f")) for m in net):
            assert hook_count(net) == len(net)
            raise Injected
    assert hook_count(net) == 0


def test_attached_removes_the_first_hooks_when_the_generator_raises_after_two():
    net = tiny_cnn()
    fn = _record([], "f")

    def pairs():
        yield net[0], fn
        yield net[4], fn
        assert hook_count(net) == 2  # both attached before the failure
        raise Injected("generator failure injected by the test")

    with pytest.raises(Injected):
        with attached(pairs()):
            pytest.fail("the block must not run")
    assert hook_count(net) == 0


def test_attached_removes_the_first_hooks_when_a_registration_raises(monkeypatch):
    net = tiny_cnn()
    monkeypatch.setattr(net[4], "register_forward_pre_hook", _refuse_after_others(net))
    fn = _record([], "f")
    with pytest.raises(Injected):
        with attached([(net[0], fn), (net[1], fn, "forward"), (net[4], fn), (net[8], fn)],
                      kind="forward_pre"):  # fmt: skip
            pytest.fail("the block must not run")
    assert hook_count(net) == 0


def test_attached_refuses_an_unknown_kind_after_attaching_others():
    net = tiny_cnn()
    fn = _record([], "f")
    with pytest.raises(ValueError, match="hook kind"):
        with attached([(net[0], fn), (net[4], fn, "backward")]):
            pytest.fail("the block must not run")
    assert hook_count(net) == 0


def test_capture_with_a_bad_layer_after_a_good_one_leaves_no_hook():
    net = tiny_cnn()
    with pytest.raises(cl.LayerError, match="nope"):
        with capture(net, ["0", "nope"]):
            pytest.fail("the block must not run")
    assert hook_count(net) == 0


def test_preserved_switches():
    net = tiny_cnn().train()
    net[0].weight.requires_grad_(False)
    before = snapshot(net)
    with preserved(net, eval_mode=False, freeze=False):
        assert net.training and net[0].bias.requires_grad
        net.eval()
        net[0].bias.requires_grad_(False)
    assert_unchanged(before, net)
    with pytest.raises(Injected), preserved(net, freeze=False):
        assert not net.training and net[0].bias.requires_grad
        raise Injected
    assert_unchanged(before, net)


# ----------------------------------------------------------------------------- methods


@pytest.mark.parametrize("method", ["guided_backprop", "deconvnet"])
def test_guided_failure_while_attaching_leaves_no_hook_and_restores_inplace(method, monkeypatch):
    net = tiny_cnn()
    assert net[2].inplace  # switched off while hooked, must come back
    monkeypatch.setattr(net[5], "register_forward_hook", _refuse_after_others(net))
    before = snapshot(net)
    with pytest.raises(Injected):
        cl.attribute(net, _x(), method, target=1)
    assert hook_count(net) == 0
    assert_unchanged(before, net)
    monkeypatch.undo()
    cl.attribute(net, _x(), method, target=1)  # still usable
    assert_unchanged(before, net)


@pytest.mark.parametrize("method", ["excitation_backprop", "contrastive_excitation_backprop"])
def test_excitation_failure_while_attaching_leaves_no_hook_and_restores_inplace(
    method, monkeypatch
):
    net = tiny_cnn()
    seen = []
    rule = excitation.unsupported

    def fails_at_the_trap(module):  # modules "", 0 (conv), 1 (BN), 2 (ReLU), 3 (trap)
        seen.append(module)
        if len(seen) == 5:
            assert hook_count(net) == 2, "the conv and BN hooks are attached by now"
            raise Injected("install failure injected by the test")
        return rule(module)

    monkeypatch.setattr(excitation, "unsupported", fails_at_the_trap)
    before = snapshot(net)
    with pytest.raises(Injected):
        cl.attribute(net, _x(), method, target=1)
    assert len(seen) == 5
    assert hook_count(net) == 0
    assert_unchanged(before, net)


def test_excitation_registration_failure_leaves_no_hook(monkeypatch):
    net = tiny_cnn()
    monkeypatch.setattr(net[8], "register_forward_hook", _refuse_after_others(net))
    before = snapshot(net)
    with pytest.raises(Injected):
        cl.attribute(net, _x(), "excitation_backprop", target=1)
    assert hook_count(net) == 0
    assert_unchanged(before, net)


def test_excitation_hooks_cover_linear_bn_gate_and_refusals():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU6(), nn.Sigmoid())
    state = excitation.State(torch.zeros(1), None)
    kinds = [
        (type(m).__name__, kind) for m, _, kind in excitation.excitation_hooks(net, state, "1")
    ]
    assert kinds == [
        ("Conv2d", "forward"),
        ("BatchNorm2d", "forward"),
        ("ReLU6", "forward"),
        ("Sigmoid", "forward_pre"),
        ("BatchNorm2d", "forward"),  # records the named layer
    ]
    assert hook_count(net) == 0, "the generator only names hooks; attached places them"


class _Spare(nn.Module):
    """``tiny_cnn`` plus a layer its forward pass never calls."""

    def __init__(self):
        super().__init__()
        self.net, self.spare = tiny_cnn(), nn.Linear(2, 2)

    def forward(self, x):
        return self.net(x)


def test_forward_order_leaves_no_hook_and_refuses_layers_that_never_run():
    net = _Spare()
    before = snapshot(net)
    assert forward_order(net, _x(), ["net.8", "net.0", "net.4"]) == ["net.0", "net.4", "net.8"]
    with pytest.raises(ValueError, match="forward pass: spare"):
        forward_order(net, _x(), ["net.0", "spare"])
    with pytest.raises(KeyError):
        forward_order(net, _x(), ["net.0", "nope"])
    assert_unchanged(before, net)
