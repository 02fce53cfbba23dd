"""Excitation backprop where activations are functions, and where its rule is undefined.

A ReLU called as a function is the same unit as an ``nn.ReLU`` (its gradient is the
rule), a clipped one gets the ReLU6 gate rule; anything else the rule cannot pass
probability through is refused naming the module (or the function and the module
whose ``forward`` called it), the reason, and the methods that do work.
"""

from __future__ import annotations

import pytest
import timm
import timm.layers.activations as ta
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import cnnlens as cl
from cnnlens.models.base import LoadedModel, Preprocess
from helpers import assert_unchanged, snapshot

EB, CEB = "excitation_backprop", "contrastive_excitation_backprop"
PLAIN = Preprocess(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
WORKING = r"Use 'gradcam', 'guided_backprop', 'integrated_gradients', 'occlusion' or 'rise'"


def plain(net: nn.Module) -> LoadedModel:
    return LoadedModel(net, PLAIN)


class Body(nn.Module):
    """conv -> act -> conv(grouped) -> BN -> act -> GAP -> linear; ``act`` set per subclass."""

    def __init__(self, act=nn.ReLU, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.c1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.c2 = nn.Conv2d(4, 6, 3, padding=1, groups=2, bias=False)
        self.bn = nn.BatchNorm2d(6)
        with torch.no_grad():  # positive gamma keeps every channel's mass
            self.bn.weight.uniform_(0.5, 2.0)
            self.bn.running_var.uniform_(0.5, 2.0)
        self.a1, self.a2, self.fc = act(), act(), nn.Linear(6, 4)

    def forward(self, x):
        h = self.a2(self.bn(self.c2(self.a1(self.c1(x)))))
        return self.fc(h.mean((2, 3)))


class FunctionalReLU(Body):
    def forward(self, x):
        h = F.relu(self.c1(x), inplace=True)
        h = self.bn(self.c2(h))
        h.relu_()
        return self.fc(h.mean((2, 3)))


X = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("layer", [None, "c2"])
def test_functional_relu_equals_module_relu(layer):
    for method in (EB, CEB) if layer else (EB,):
        a = cl.attribute(plain(Body().eval()), X, method, target="top2", layer=layer).maps
        b = cl.attribute(plain(FunctionalReLU().eval()), X, method, target="top2", layer=layer)
        torch.testing.assert_close(a, b.maps)
    assert a.sum() > 0


def _saturating(net: Body) -> Body:
    with torch.no_grad():
        net.c1.weight.mul_(40)
        net.c2.weight.abs_()
    return net.eval()


@pytest.mark.parametrize(
    "call", [lambda h: F.relu6(h), lambda h: F.hardtanh(h, 0.0, 6.0), lambda h: F.relu6(h, True)]
)
def test_functional_relu6_keeps_the_mass_of_saturated_units(call):
    # As for nn.ReLU6 modules: z g_z = y g_y keeps a saturated unit's mass, so with
    # non-negative inputs and weights and no hidden bias the pixel map sums to 1.
    class Functional(Body):
        def forward(self, x):
            h = self.bn(self.c2(call(self.c1(x))))
            return self.fc(call(h).mean((2, 3)))

    modules = _saturating(Body(nn.ReLU6))
    functional = _saturating(Functional())
    assert (modules.c1(X) > 6).float().mean() > 0.1  # many saturated units
    a = cl.attribute(plain(modules), X, EB, target="top2").maps
    b = cl.attribute(plain(functional), X, EB, target="top2").maps
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a.sum(dim=(2, 3)), torch.ones(2, 2), atol=1e-5, rtol=0)


def test_inplace_functional_relu_between_conv_and_bn_stops_the_fold():
    # conv -> ReLU -> BN: the BN is fed by the ReLU, not by the conv, so it is a per-channel
    # weight (as with an nn.ReLU module), even though F.relu_ keeps the conv's tensor object.
    class Modules(Body):
        def forward(self, x):
            return self.fc(self.bn(self.a1(self.c2(self.c1(x)))).mean((2, 3)))

    class Functional(Body):
        def forward(self, x):
            h = self.c2(self.c1(x))
            F.relu(h, inplace=True)
            return self.fc(self.bn(h).mean((2, 3)))

    # A positive BN bias switches on units the ReLU turned off: folded, they would pass
    # mass down to the conv's inputs; unfolded, they have no excitatory input and lose it.
    modules, functional = Modules().eval(), Functional().eval()
    for net in (modules, functional):
        net.bn.bias.data.fill_(0.5)
    a = cl.attribute(plain(modules), X, EB, target="top2").maps
    b = cl.attribute(plain(functional), X, EB, target="top2").maps
    torch.testing.assert_close(a, b)
    assert float(a.sum()) < 1.9  # mass was lost at the units the ReLU switched off


# --------------------------------------------------------------------------- refusals


class Gate(nn.Module):
    """A block whose forward applies ``fn`` to a conv output (a function call, not a module)."""

    def __init__(self, fn):
        super().__init__()
        self.conv, self.fn = nn.Conv2d(3, 4, 3, padding=1), fn

    def forward(self, x):
        return self.fn(self.conv(x))


def _attention(h):
    q = h.flatten(2)  # (N, C, L)
    return (q.transpose(1, 2) @ q).softmax(dim=-1).sum(1).view_as(h[:, :1]) * h


class MySwish(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


def _net(block: nn.Module) -> nn.Sequential:
    return nn.Sequential(block, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()


@pytest.mark.parametrize(
    "block, where, why",
    [
        (Gate(F.silu), r"F\.silu called in module '0'", r"self-gated .* -0\.278 at z = -1\.3"),
        (Gate(torch.sigmoid), r"torch\.sigmoid called in module '0'", "saturating"),
        (Gate(lambda h: h * h.sigmoid()), r"Tensor\.sigmoid called in module '0'", "saturating"),
        (Gate(lambda h: F.gelu(h)), r"F\.gelu called in module '0'", "self-gated"),
        (
            Gate(lambda h: F.leaky_relu(h, 0.2)),
            r"F\.leaky_relu called in module '0'",
            "leaky rectifier",
        ),
        (
            Gate(lambda h: F.layer_norm(h, h.shape[1:])),
            r"F\.layer_norm called in module '0'",
            "divides each",
        ),
        (
            Gate(lambda h: F.group_norm(h, 2)),
            r"F\.group_norm called in module '0'",
            "divides each unit",
        ),
        (Gate(_attention), r"Tensor\.softmax called in module '0'", "couples its inputs"),
        (nn.Sequential(nn.Conv2d(3, 4, 3), ta.GELU()), r"module '0\.1' \(GELU\)", "self-gated"),
        (nn.Sequential(nn.Conv2d(3, 4, 3), MySwish()), r"module '0\.1' \(MySwish\)", "gated"),
        (
            nn.Sequential(nn.Conv2d(3, 4, 3), nn.Hardswish()),
            r"module '0\.1' \(Hardswish\)",
            "gated",
        ),
        (
            nn.Sequential(nn.Conv2d(3, 4, 3), nn.Hardsigmoid()),
            r"module '0\.1' \(Hardsigmoid\)",
            "saturating",
        ),
        (
            nn.Sequential(nn.Conv2d(3, 4, 3), nn.Softplus()),
            r"module '0\.1' \(Softplus\)",
            "non-negative rectifier that is not max",
        ),
    ],
)
def test_refusal_names_where_why_and_what_works(block, where, why):
    net = _net(block)
    before = snapshot(net)
    for method in (EB, CEB):
        with pytest.raises(cl.MethodError, match=rf"undefined at {where}: .*{why}.*{WORKING}"):
            cl.attribute(net, torch.rand(1, 3, 8, 8), method, target=0, layer="0")
        assert_unchanged(before, net)
        assert torch._C._len_torch_function_stack() == 0


def test_function_called_in_the_models_own_forward():
    class Own(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(torch.tanh(self.conv(x)).mean((2, 3)))

    with pytest.raises(cl.MethodError, match=r"torch\.tanh called in the model's forward"):
        cl.attribute(Own(), torch.rand(1, 3, 8, 8), EB, target=0)


def test_attention_module_names_its_own_parameters():
    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.bias = nn.Parameter(torch.zeros(4, 1, 1))

        def forward(self, x):
            return self.conv(x) + self.bias

    with pytest.raises(
        cl.MethodError, match=r"'0' \(Attention\): .*parameters of its own \(bias\)"
    ):
        cl.attribute(_net(Attention()), torch.rand(1, 3, 8, 8), EB, target=0)


def test_a_container_is_refused_after_its_children_whose_reason_is_sharper():
    # Like a ViT: the model holds a token of its own, and a LayerNorm inside is what the
    # rule cannot pass; the message names the LayerNorm, not the container's parameter.
    class TokenNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.token = nn.Parameter(torch.zeros(1, 4, 1, 1))
            self.conv, self.norm, self.fc = nn.Conv2d(3, 4, 3), nn.LayerNorm(4), nn.Linear(4, 2)

        def forward(self, x):
            h = self.conv(x) + self.token
            return self.fc(self.norm(h.mean((2, 3))))

    with pytest.raises(cl.MethodError, match=r"undefined at module 'norm' \(LayerNorm\)"):
        cl.attribute(TokenNet(), torch.rand(1, 3, 8, 8), EB, target=0)


# --------------------------------------------------------------------------- architectures


def test_squeezenet_conv_head_is_seeded_and_contrastive_refused():
    torch.manual_seed(0)
    net = torchvision.models.squeezenet1_1(num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    e = cl.attribute(net, x, EB, target="top1")
    assert torch.isfinite(e.maps).all() and e.maps.std() > 0 and e.extras["classifier"] is None
    with pytest.raises(cl.MethodError, match="negates the classifier row"):
        cl.attribute(net, x, CEB, target=1)


def test_googlenet_functional_relus_are_supported():
    torch.manual_seed(0)
    net = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False).eval()
    before = snapshot(net)
    e = cl.attribute(net, torch.randn(1, 3, 64, 64), EB, target=1)
    m = e.maps[0, 0]
    assert torch.isfinite(m).all() and (m >= 0).all() and m.std() > 0
    assert e.extras["classifier"] == "fc"
    assert_unchanged(before, net)


@pytest.mark.parametrize(
    "arch, where, why",
    [
        ("mobilenet_v3_small", r"module 'features\.0\.2' \(Hardswish\)", "self-gated"),
        ("efficientnet_b0", r"module 'bn1\.act' \(SiLU\)", "self-gated"),
        ("convnext_nano", r"module 'stem\.1' \(LayerNorm2d\)", "divides each unit"),
        ("levit_128s", r"module 'stem\.act1' \(Hardswish\)", "self-gated"),
        ("vit_tiny_patch16_224", r"module 'blocks\.0\.norm1' \(LayerNorm\)", "divides each"),
    ],
)
def test_modern_architectures_are_refused_with_the_reason(arch, where, why):
    torch.manual_seed(0)
    if arch == "mobilenet_v3_small":
        net = torchvision.models.mobilenet_v3_small(num_classes=10)
    else:
        extra = {"img_size": 64} if arch in ("levit_128s", "vit_tiny_patch16_224") else {}
        net = timm.create_model(arch, num_classes=10, **extra)
    with pytest.raises(cl.MethodError, match=rf"undefined at {where}: .*{why}.*{WORKING}"):
        cl.attribute(net.eval(), torch.randn(1, 3, 64, 64), EB, target=1)
