"""Convolution + clamp fusion in the incremental engine's private graph: which pairs are
fused, that the fused op equals conv + clamp, and that occlusion is unchanged by it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnlens as cl
from cnnlens.attribution.incremental import IncrementalEngine, fuse
from cnnlens.attribution.incremental.fuse import ConvAct


class Own(nn.Conv2d):
    """A conv subclass with its own forward: never fused."""

    def forward(self, x):
        return super().forward(x) * 0.5


class Clamps(nn.Module):
    """One conv per clamp spelling, plus convs that must stay unfused."""

    def __init__(self):
        super().__init__()
        c = lambda k=3, **kw: nn.Conv2d(6, 6, k, padding=k // 2, **kw)  # noqa: E731
        self.a, self.relu = nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=True)
        self.b, self.relu6 = c(groups=6), nn.ReLU6()
        self.c, self.tanh_clip = c(stride=2), nn.Hardtanh(-0.5, 0.25)
        self.d = c(5, dilation=1)
        self.e = c(1)
        self.f = c()
        self.g = c()  # read twice: not fused
        self.h = Own(6, 6, 3, padding=1)  # own forward: not fused
        self.mid = nn.Identity()
        self.head = nn.Linear(6, 4)

    def forward(self, x):
        x = self.relu(self.a(x))
        x = self.relu6(self.mid(self.b(x)))
        x = self.tanh_clip(self.c(x))
        x = F.relu(self.d(x))
        x = torch.relu(self.e(x))
        x = F.hardtanh(self.f(x), -1.0, 2.0)
        y = self.g(x)
        x = F.relu6(y) + y
        x = self.h(x).relu()
        return self.head(x.mean(dim=(2, 3)))


def _engine_and_ref(net, x, positions, win):
    eng = IncrementalEngine(net)
    with torch.inference_mode():
        eng.prepare(x)
        batch = x.repeat(len(positions), 1, 1, 1)
        for j, (y, xx) in enumerate(positions):
            batch[j, :, y : y + win, xx : xx + win] = 0
        ref = net(batch)
        out = eng.run(
            torch.zeros(len(positions), 3, win, win),
            torch.tensor([p[0] for p in positions]),
            torch.tensor([p[1] for p in positions]),
        )
    return eng, out, ref


def test_which_pairs_are_fused():
    eng = IncrementalEngine(Clamps().eval())
    fused = {name for name, m in eng.modules.items() if isinstance(m, ConvAct)}
    assert fused == {"a", "b", "c", "d", "e", "f"}
    kinds = {name: (eng.modules[name].act, eng.modules[name].bounds) for name in fused}
    assert kinds["b"] == ("hardtanh", (0.0, 6.0))
    assert kinds["c"] == ("hardtanh", (-0.5, 0.25))
    assert kinds["f"] == ("hardtanh", (-1.0, 2.0))
    assert kinds["a"][0] == kinds["d"][0] == kinds["e"][0] == "relu"
    # the clamp nodes and the identity are gone from the engine's graph
    targets = {n.target for n in eng.nodes if n.op == "call_module"}
    assert not {"relu", "relu6", "tanh_clip", "mid"} & targets


@pytest.mark.parametrize("fused_op", [True, False])
def test_engine_with_fused_convs_equals_naive(fused_op, monkeypatch):
    if not fused_op:  # a PyTorch build without the oneDNN op: conv, then clamp
        monkeypatch.setattr(fuse, "_fused_ok", lambda: False)
    torch.manual_seed(0)
    net, x = Clamps().eval(), torch.randn(1, 3, 24, 24)
    positions = [(0, 0), (20, 20), (9, 13), (0, 17)]
    eng, out, ref = _engine_and_ref(net, x, positions, 4)
    assert sum(isinstance(m, ConvAct) for m in eng.modules.values()) == 6
    assert float((out - ref).abs().max()) <= 1e-4 * float(ref.max() - ref.min())


def test_fused_op_is_conv_then_clamp_to_the_bit():
    if not fuse._fused_ok():
        pytest.skip("this PyTorch build has no fused oneDNN convolution")
    torch.manual_seed(1)
    conv = nn.Conv2d(8, 8, 5, stride=2, padding=2, groups=8)
    x = torch.randn(4, 8, 15, 15).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for act, bounds in [("relu", (0.0, 0.0)), ("hardtanh", (0.0, 6.0))]:
            m = ConvAct.wrap(conv, act, bounds)
            y = conv(x)
            ref = F.relu(y) if act == "relu" else F.hardtanh(y, *bounds)
            assert torch.equal(m(x), ref)


def test_with_autograd_on_the_two_ops_run_and_gradients_flow():
    conv = nn.Conv2d(3, 4, 3, padding=1)
    m = ConvAct.wrap(conv, "hardtanh", (0.0, 6.0))
    x = torch.randn(1, 3, 8, 8, requires_grad=True)
    m(x).sum().backward()
    ref = x.detach().clone().requires_grad_(True)
    F.hardtanh(conv(ref), 0.0, 6.0).sum().backward()
    assert torch.allclose(x.grad, ref.grad)


def test_fusion_leaves_the_occlusion_map_unchanged(monkeypatch):
    from cnnlens.attribution.incremental import graph  # the module that calls the rewrite

    torch.manual_seed(2)
    net, x = Clamps().eval(), torch.randn(1, 3, 32, 32)
    # With default weights the signal dies in the chain of clamps: the map spans ~1e-6
    # (probabilities) and a tolerance relative to it asks for bit-identical float sums,
    # which oneDNN's fused kernel does not give on every CPU (off by ~3e-8). Doubled conv
    # weights and logits give a map spanning ~3e-3, so the tolerance means something.
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(2)
    kw = dict(target=2, window=6, stride=4, mode="incremental", score="logit")
    first = cl.attribute(net, x, "occlusion", **kw)
    assert first.extras["mode"] == "incremental" and first.extras["macs_saved"] > 0.3
    with_fusion = first.maps
    monkeypatch.setattr(graph, "fuse_conv_clamps", lambda *a: 0)
    without = cl.attribute(net, x, "occlusion", **kw).maps
    scale = float(without.max() - without.min())
    assert float((with_fusion - without).abs().max()) <= 1e-5 * scale
