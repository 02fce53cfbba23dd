"""Activations wherever they live: recognised by behaviour, reached when called as functions.

Guided backprop and deconvnet must apply their rule to timm's activation classes,
user-written ones and ``F.relu``-style calls inside ``forward``, through a mode that is
active only during the call. References: Captum on the same network written with
``nn.ReLU`` modules, and hand-written rules with closed-form derivatives.
"""

from __future__ import annotations

import copy
import math
import types

import pytest
import timm
import timm.layers.activations as ta
import timm.layers.activations_me as tme
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import cnnlens as cl
from cnnlens.attribution.guided import local_slope
from cnnlens.core.activations import module_behaviour
from helpers import Trap, assert_unchanged, snapshot


class MySwish(nn.Module):  # a user-written activation: no class name to go by
    def forward(self, x):
        return x * torch.sigmoid(x)


# --------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize(
    "module, family",
    [
        (nn.ReLU(), "relu"),
        (nn.ReLU(inplace=True), "relu"),
        (nn.ReLU6(), "clipped"),
        (nn.Hardtanh(0.0, 3.0), "clipped"),
        (nn.LeakyReLU(0.1), "rectifier"),
        (nn.ELU(), "rectifier"),
        (nn.GELU(), "rectifier"),
        (nn.SiLU(), "rectifier"),
        (nn.Mish(), "rectifier"),
        (nn.Hardswish(), "rectifier"),
        (nn.Softplus(), "rectifier"),
        (nn.PReLU(), "rectifier"),
        (ta.GELU(), "rectifier"),
        (ta.GELUTanh(), "rectifier"),
        (ta.QuickGELU(), "rectifier"),
        (ta.Swish(), "rectifier"),
        (ta.HardSwish(), "rectifier"),
        (ta.HardMish(), "rectifier"),
        (ta.Mish(), "rectifier"),
        (tme.SwishMe(), "rectifier"),
        (MySwish(), "rectifier"),
        (nn.Sigmoid(), "saturating"),
        (nn.Hardsigmoid(), "saturating"),
        (ta.HardSigmoid(), "saturating"),
        (nn.Tanh(), "saturating"),
        (nn.Hardtanh(), "saturating"),
        (nn.Hardshrink(), "other"),
        (nn.Identity(), None),
        (nn.Dropout(0.5).eval(), None),  # affine in eval mode
        (nn.Softmax(dim=1), None),  # couples entries
        (nn.Flatten(), None),
        (nn.MaxPool2d(2), None),
        (nn.PReLU(8), None),  # per-channel: fails the probe
        (nn.LayerNorm(9, elementwise_affine=False), None),
        (Trap(), None),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else str(v),
)
def test_family_by_behaviour(module, family):
    b = module_behaviour(module)
    assert (b.family if b else None) == family
    if family == "clipped":
        assert b.top == (6.0 if isinstance(module, nn.ReLU6) else 3.0)


def test_descriptions_carry_the_measured_facts():
    # SiLU's minimum on the 1/20 grid: z = -1.3, -1.3 * sigmoid(-1.3) = -0.2784.
    assert module_behaviour(nn.SiLU()).describe() == (
        "a self-gated activation z*gate(z), negative down to -0.278 at z = -1.3"
    )
    # LeakyReLU(0.1) at z = -8: -0.8; sigmoid(-8) = 3.35e-4.
    leaky = module_behaviour(nn.LeakyReLU(0.1)).describe()
    assert leaky == "a leaky rectifier, negative down to -0.8 on [-8, 8]"
    assert module_behaviour(nn.Sigmoid()).describe() == (
        "a saturating squashing function with outputs in [0.000335, 1]"
    )
    assert module_behaviour(nn.ReLU6()).describe() == "a clipped ReLU, min(max(z, 0), 6)"


Z = torch.linspace(-5.95, 5.95, 120, dtype=torch.float64)  # avoids the kinks at -3, 0, 3


def _phi(z):
    return torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def _cdf(z):
    return 0.5 * (1 + torch.erf(z / math.sqrt(2)))


def d_hardswish(z):
    return torch.where(z < -3, 0.0, torch.where(z > 3, 1.0, (2 * z + 3) / 6)).to(z.dtype)


def d_gelu(z):
    return _cdf(z) + z * _phi(z)


def d_silu(z):
    s = torch.sigmoid(z)
    return s * (1 + z * (1 - s))


def d_quick_gelu(z):
    s = torch.sigmoid(1.702 * z)
    return s + 1.702 * z * s * (1 - s)


@pytest.mark.parametrize(
    "module, derivative",
    [
        (nn.Hardswish(), d_hardswish),
        (ta.HardSwish(), d_hardswish),
        (ta.GELU(), d_gelu),
        (ta.Swish(), d_silu),
        (tme.SwishMe(), d_silu),
        (MySwish(), d_silu),
        (ta.QuickGELU(), d_quick_gelu),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else "",
)
def test_local_slope_is_the_hand_derivative(module, derivative):
    torch.testing.assert_close(local_slope(module, Z), derivative(Z))


# --------------------------------------------------------------------------- function calls


class ModuleNet(nn.Module):
    """conv -> act -> conv -> act -> conv -> act -> GAP -> linear, activations as modules."""

    def __init__(self, act=nn.ReLU, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.c1, self.c2, self.c3 = (
            nn.Conv2d(a, b, 3, padding=1) for a, b in ((3, 6), (6, 6), (6, 4))
        )
        self.a1, self.a2, self.a3 = act(), act(), act()
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        h = self.a3(self.c3(self.a2(self.c2(self.a1(self.c1(x))))))
        return self.fc(h.mean((2, 3)))


class FunctionalReLUNet(ModuleNet):
    """The same network with ReLU written five ways (the last two in a row: a ReLU of a
    ReLU changes nothing), two of them as in-place statements."""

    def forward(self, x):
        h = F.relu(self.c1(x), inplace=True)
        h = self.c2(h)
        torch.relu_(h)  # the result is dropped: the mutation must still happen
        h = self.c3(h).relu()
        h = h * 1.0
        h.relu_()
        return self.fc(torch.relu(h).mean((2, 3)))


def _functional(fn):
    class Net(ModuleNet):
        def forward(self, x):
            return self.fc(fn(self.c3(fn(self.c2(fn(self.c1(x)))))).mean((2, 3)))

    return Net()


X = torch.randn(2, 3, 10, 10, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(
    "ours, theirs", [("guided_backprop", "GuidedBackprop"), ("deconvnet", "Deconvolution")]
)
def test_functional_relus_equal_modules_and_captum(ours, theirs):
    import captum.attr

    modules, functional = ModuleNet(), FunctionalReLUNet()
    torch.testing.assert_close(modules(X), functional(X))
    ref = getattr(captum.attr, theirs)(modules).attribute(X, target=[1, 3]).sum(1)
    a = cl.attribute(modules, X, ours, target=[1, 3], reduce="sum")
    b = cl.attribute(functional, X, ours, target=[1, 3], reduce="sum")
    assert torch.equal(a.maps, b.maps)
    torch.testing.assert_close(b.maps[:, 0], ref, rtol=1e-5, atol=1e-7)
    assert b.extras["functional_calls"] == 5 and a.extras["functional_calls"] == 0
    assert not torch.allclose(b.maps, cl.attribute(functional, X, "gradient", target=[1, 3]).maps)


@pytest.mark.parametrize(
    "module, function",
    [(nn.GELU, F.gelu), (nn.SiLU, F.silu), (nn.Hardswish, F.hardswish), (nn.Mish, F.mish)],
    ids=lambda v: getattr(v, "__name__", ""),
)
@pytest.mark.parametrize("method", ["guided_backprop", "deconvnet"])
def test_functional_smooth_activations_equal_modules(module, function, method):
    a = cl.attribute(ModuleNet(module), X, method, target=2, reduce="sum")
    b = cl.attribute(_functional(function), X, method, target=2, reduce="sum")
    assert torch.equal(a.maps, b.maps)
    assert b.extras["functional_calls"] == 3


def test_saturating_calls_keep_their_gradient():
    # A sigmoid gate (squeeze-excitation style) is not a rectifier: guided backprop leaves
    # it alone, as a module or as a call; only the ReLU is rewritten.
    class Gated(ModuleNet):
        def forward(self, x):
            h = F.relu(self.c1(x))
            h = self.c3(self.c2(h) * torch.sigmoid(self.c2(h)))
            return self.fc(h.mean((2, 3)))

    e = cl.attribute(Gated(), X, "guided_backprop", target=0, reduce="sum")
    assert e.extras["functional_calls"] == 1


# --------------------------------------------------------------------------- no global state


class RaisesAfterRelu(ModuleNet):
    def forward(self, x):
        F.relu(self.c1(x))
        raise RuntimeError("forward failure injected by the test")


class TrapAfterRelu(ModuleNet):
    def __init__(self):
        super().__init__()
        self.trap = Trap()
        self.trap.mode = "backward"

    def forward(self, x):
        return self.fc(self.trap(F.gelu(self.c1(x))).mean((2, 3))[:, :4])


def _torch_globals():
    return [F.relu, torch.relu, torch.Tensor.relu, torch.relu_, F.gelu, F.silu, torch.sigmoid]


@pytest.mark.parametrize("method", ["guided_backprop", "deconvnet"])
def test_no_global_state_changes_even_when_the_call_raises(method):
    before_globals = _torch_globals()
    assert torch._C._len_torch_function_stack() == 0
    for net, expect in (
        (FunctionalReLUNet(), None),
        (RaisesAfterRelu(), "forward"),
        (TrapAfterRelu(), "backward"),
    ):
        before = snapshot(net)
        if expect is None:
            cl.attribute(net, X, method, target=1)
        else:
            with pytest.raises(RuntimeError, match=f"{expect} failure injected"):
                cl.attribute(net, X, method, target=1)
        assert_unchanged(before, net)
        assert torch._C._len_torch_function_stack() == 0, "the function mode was left on"
        assert all(a is b for a, b in zip(_torch_globals(), before_globals))
    # F.relu outside the call has its ordinary gradient (guided would zero the -1s).
    z = torch.tensor([-1.0, 2.0], requires_grad=True)
    (g,) = torch.autograd.grad(F.relu(z), z, torch.tensor([-1.0, -1.0]))
    assert g.tolist() == [0.0, -1.0]


def test_a_mode_the_user_has_on_stays_on_and_sees_the_calls():
    from torch.overrides import TorchFunctionMode

    class Log(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.names = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.names.append(getattr(func, "__name__", ""))
            return func(*args, **(kwargs or {}))

    with Log() as log:
        cl.attribute(FunctionalReLUNet(), X, "guided_backprop", target=1)
        assert torch._C._len_torch_function_stack() == 1
    assert log.names.count("conv2d") == 3 and torch._C._len_torch_function_stack() == 0


# --------------------------------------------------------------------------- architectures


class _HandRule(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, f, df, guided):
        ctx.save_for_backward(z)
        ctx.df, ctx.guided = df, guided
        return f(z)

    @staticmethod
    def backward(ctx, g):
        (z,) = ctx.saved_tensors
        g = g.clamp_min(0)
        return (g * ctx.df(z) if ctx.guided else g), None, None, None


class HandRule(nn.Module):
    """An activation ``f`` whose backward is written out by hand: ``max(g, 0) * f'(z)``
    (guided) or ``max(g, 0)`` (deconvnet)."""

    def __init__(self, f, df, guided):
        super().__init__()
        self.f, self.df, self.guided = f, df, guided

    def forward(self, z):
        return _HandRule.apply(z, self.f, self.df, self.guided)


HAND = {
    "relu": (lambda z: z.clamp_min(0), lambda z: (z > 0).to(z.dtype)),
    "gelu": (lambda z: z * _cdf(z), d_gelu),
    "hardswish": (lambda z: z * (z + 3).clamp(0, 6) / 6, d_hardswish),
}


def hand_reference(net, x, target, swap, guided):
    """The sum-reduced input gradient of a copy of ``net`` whose activations selected by
    ``swap(module) -> HAND key or None`` are replaced by :class:`HandRule` modules."""
    ref = copy.deepcopy(net).eval()
    for name, m in list(ref.named_modules()):
        key = swap(m)
        if key:
            parent, _, leaf = name.rpartition(".")
            setattr(ref.get_submodule(parent), leaf, HandRule(*HAND[key], guided))
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(ref(xg)[:, target].sum(), xg)
    return g.sum(1)


def check_against(net, x, reference, method, target=1):
    e = cl.attribute(net, x, method, target=target, reduce="sum")
    m = e.maps[:, 0]
    assert torch.isfinite(m).all() and m.std() > 0
    torch.testing.assert_close(m, reference, rtol=1e-4, atol=1e-5 * float(reference.abs().max()))
    return e


def _modular_basic_conv(net):
    """A copy of a GoogLeNet / Inception whose ``BasicConv2d`` use an ``nn.ReLU`` module."""
    ref = copy.deepcopy(net)
    for m in ref.modules():
        if type(m).__name__ == "BasicConv2d":
            m.relu = nn.ReLU()
            m.forward = types.MethodType(lambda self, x: self.relu(self.bn(self.conv(x))), m)
    return ref


@pytest.fixture(scope="module")
def googlenet():
    torch.manual_seed(0)
    net = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False)
    return net.eval()


@pytest.mark.parametrize(
    "ours, theirs", [("guided_backprop", "GuidedBackprop"), ("deconvnet", "Deconvolution")]
)
def test_googlenet_functional_relus_match_captum_on_a_module_copy(googlenet, ours, theirs):
    import captum.attr

    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    ref = getattr(captum.attr, theirs)(_modular_basic_conv(googlenet)).attribute(x, target=1)
    before = snapshot(googlenet)
    e = check_against(googlenet, x, ref.sum(1), ours)
    assert e.extras["functional_calls"] == 57  # every BasicConv2d, in place
    assert_unchanged(before, googlenet)


def _modular_densenet(net):
    ref = copy.deepcopy(net)
    ref.features.add_module("relu_final", nn.ReLU())

    def forward(self, x):
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))

    ref.forward = types.MethodType(forward, ref)
    return ref


@pytest.mark.parametrize(
    "size",
    [
        pytest.param(dict(growth_rate=8, block_config=(2, 2), num_init_features=8), id="small"),
        pytest.param({}, id="densenet121", marks=pytest.mark.slow),
    ],
)
def test_densenet_relu_before_pooling_is_reached(size):
    import captum.attr

    torch.manual_seed(0)
    net = torchvision.models.DenseNet(**size).eval() if size else torchvision.models.densenet121()
    net.eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    modular = _modular_densenet(net)
    for ours, theirs in (("guided_backprop", "GuidedBackprop"), ("deconvnet", "Deconvolution")):
        ref = getattr(captum.attr, theirs)(modular).attribute(x, target=1).sum(1)
        e = check_against(net, x, ref, ours)
        assert e.extras["functional_calls"] == 1


@pytest.mark.parametrize("method", ["guided_backprop", "deconvnet"])
def test_timm_convnext_gelu_class_gets_the_rule(method):
    # Layer scale 1 (not timm's 1e-6) so the blocks, and their GELUs, matter.
    torch.manual_seed(0)
    net = timm.create_model("convnext_nano", num_classes=10, ls_init_value=1.0).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    ref = hand_reference(net, x, 1, lambda m: "gelu" if isinstance(m, ta.GELU) else None,
                         method == "guided_backprop")  # fmt: skip
    e = check_against(net, x, ref, method)
    assert e.extras["activations"] == 14
    plain = cl.attribute(net, x, "gradient", target=1, reduce="sum").maps
    assert (plain - e.maps).norm() > 0.3 * plain.norm()


def _swap_hardswish_and_relu(m):
    return {nn.Hardswish: "hardswish", nn.ReLU: "relu"}.get(type(m))


@pytest.mark.parametrize("arch", ["mobilenet_v3_small", "levit_128s"])
@pytest.mark.parametrize("method", ["guided_backprop", "deconvnet"])
def test_hardswish_nets_match_the_hand_rule(arch, method):
    # MobileNetV3's squeeze-excitation Hardsigmoid gates are saturating: ordinary gradient.
    torch.manual_seed(0)
    if arch == "levit_128s":
        net = timm.create_model(arch, num_classes=10, img_size=64)
    else:
        net = torchvision.models.mobilenet_v3_small(num_classes=10)
    net.eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    ref = hand_reference(net, x, 1, _swap_hardswish_and_relu, method == "guided_backprop")
    before = snapshot(net)
    check_against(net, x, ref, method)
    assert_unchanged(before, net)
