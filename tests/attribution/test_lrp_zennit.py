"""LRP against zennit 0.5.1 on the same model, input and target: Pearson >= 0.999 and max
|difference| <= 1e-4 of the map's range, for epsilon_plus and epsilon_gamma_box on ResNet-18,
VGG-11 (random weights, 32 px) and the bundled EfficientNet-Lite0 (64 px), and for every
composite on tests/helpers.py's tiny_cnn (conv, batch norm, ReLU6, pooling, Linear).
zennit starts from the output gradient it is given: ``logit * one_hot`` makes its relevance
start from the logit, as ours.

zennit needs its canonizers: ``ResNetCanonizer`` and ``VGGCanonizer`` for torchvision; for
the bundled model (timm's ``BatchNormAct2d`` is no leaf, its residual sums are ``+`` in
``forward``) this file writes one: each batch norm merged into the conv before it by name,
and each block's forward rewritten to sum through zennit's ``Sum`` module.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn

import cnnlens as cl
from cnnlens.attribution.lrp import COMPOSITES
from cnnlens.models.base import LoadedModel
from helpers import tiny_cnn

zennit = pytest.importorskip("zennit")
from zennit.attribution import Gradient  # noqa: E402
from zennit.canonizers import (  # noqa: E402
    AttributeCanonizer,
    NamedMergeBatchNorm,
    SequentialMergeBatchNorm,
)
from zennit.composites import COMPOSITES as ZENNIT  # noqa: E402
from zennit.layer import Sum  # noqa: E402
from zennit.torchvision import ResNetCanonizer, VGGCanonizer  # noqa: E402


class ExactMerge(NamedMergeBatchNorm):
    """zennit's named merge, with the emptied batch norm an exact identity (eps = 0; zennit
    leaves it computing ``u / sqrt(1 + eps)``, see test_zennit_merge_shrinks_by_eps)."""

    def register(self, linears, batch_norm):
        self.eps = batch_norm.eps
        super().register(linears, batch_norm)
        batch_norm.eps = 0.0

    def remove(self):
        super().remove()
        self.batch_norm.eps = self.eps

    def copy(self):
        return ExactMerge(self.name_map)


def _inverted_residual(self, x):
    shortcut = x
    x = self.bn3(self.conv_pwl(self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))))
    return self.canonizer_sum(torch.stack([x, shortcut], -1)) if self.has_skip else x


def _depthwise_separable(self, x):
    shortcut = x
    x = self.bn2(self.conv_pw(self.bn1(self.conv_dw(x))))
    return self.canonizer_sum(torch.stack([x, shortcut], -1)) if self.has_skip else x


def efficientnet_canonizers(net: nn.Module) -> list:
    """zennit canonizers for timm's EfficientNet-Lite: BN merges by name, residual Sums."""
    from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual

    pairs, last = [], None
    for name, m in net.named_modules():
        if isinstance(m, nn.Conv2d):
            last = name
        elif isinstance(m, nn.BatchNorm2d):
            pairs.append(([last], name))

    def attributes(name, m):
        forward = {InvertedResidual: _inverted_residual,
                   DepthwiseSeparableConv: _depthwise_separable}.get(type(m))  # fmt: skip
        return None if forward is None else {"forward": forward.__get__(m), "canonizer_sum": Sum()}

    return [ExactMerge(pairs), AttributeCanonizer(attributes)]


def zennit_map(model: LoadedModel, x, c: int, composite: str, canonizers) -> torch.Tensor:
    """zennit's LRP map ``(N, H, W)`` of class ``c``, relevance starting at the logit."""
    net = copy.deepcopy(model.net).eval()
    kwargs = {}
    if composite == "epsilon_gamma_box":
        spec = model.preprocess_spec
        mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (spec.mean, spec.std))
        kwargs = {"low": (0 - mean) / std, "high": (1 - mean) / std}
    comp = ZENNIT[composite](canonizers=canonizers(net), **kwargs)
    with Gradient(model=net, composite=comp) as attributor:
        _, rel = attributor(x, lambda out: out * torch.eye(out.shape[1])[[c]])
    return rel.sum(1)


def _agree(ours: torch.Tensor, theirs: torch.Tensor) -> tuple[float, float]:
    r = torch.corrcoef(torch.stack([ours.flatten(), theirs.flatten()]))[0, 1].item()
    span = (theirs.max() - theirs.min()).item()
    assert span > 0
    return r, (ours - theirs).abs().max().item() / span


def _x(size: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def bundled():
    return cl.load_model()


def _torchvision(name: str) -> LoadedModel:
    torch.manual_seed(0)
    net = tiny_cnn() if name == "tiny_cnn" else getattr(torchvision.models, name)(weights=None)
    net.eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, so the fold matters
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return LoadedModel.wrap(net)


MAIN = ("epsilon_plus", "epsilon_gamma_box")
CASES = [
    ("resnet18", lambda n: [ResNetCanonizer()], 32, MAIN),
    ("vgg11", lambda n: [VGGCanonizer()], 32, MAIN),
    ("tiny_cnn", lambda n: [SequentialMergeBatchNorm()], 32, COMPOSITES),  # every composite
]


@pytest.mark.parametrize("arch, canonizers, size, composites", CASES)
def test_equal_to_zennit_on_torchvision(arch, canonizers, size, composites):
    model, x = _torchvision(arch), _x(size)
    for comp in composites:
        e = cl.attribute(model, x, "lrp", composite=comp)  # the top class
        theirs = zennit_map(model, x, int(e.targets[0, 0]), comp, canonizers)
        r, d = _agree(e.maps[:, 0], theirs)
        assert r >= 0.999 and d <= 1e-4, (arch, comp, r, d)


def test_equal_to_zennit_on_the_bundled_model(bundled):
    # the top class: a small logit (class 285 scores -0.13 on this noise) makes float32
    # rounding of the two forward passes visible (1.3e-4 of the range; 5e-14 in float64)
    x = _x(64)
    for comp in MAIN:
        e = cl.attribute(bundled, x, "lrp", composite=comp)
        c = int(e.targets[0, 0])
        r, d = _agree(e.maps[:, 0], zennit_map(bundled, x, c, comp, efficientnet_canonizers))
        assert r >= 0.999 and d <= 1e-4, (comp, r, d)
        sums = sum(v == "norm" for k, v in e.extras["rules"].items() if ":sum#" in k)
        assert sums == 9, e.extras["rules"]  # the nine residual blocks of EfficientNet-Lite0


def test_zennit_merge_shrinks_by_eps():
    # 1x1 conv w = 2 on x = 3 -> 6; BN(mean 0, var 1, eps 0.25) -> 6 / sqrt(1.25) = 5.367.
    # zennit merges w' = 2 / sqrt(1.25) and leaves the BN as u / sqrt(1 + eps):
    # 6 / sqrt(1.25) / sqrt(1.25) = 4.8. The fold is exact: our score is the model's 5.367.
    net = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.BatchNorm2d(1, eps=0.25),
                        nn.Flatten(), nn.Linear(1, 1, bias=False)).eval()  # fmt: skip
    with torch.no_grad():
        net[0].weight.fill_(2.0)
        net[3].weight.fill_(1.0)
    x = torch.full((1, 1, 1, 1), 3.0)
    ours = cl.attribute(net, x, "lrp", target=0)
    torch.testing.assert_close(ours.extras["score"], torch.tensor([[6 / 1.25**0.5]]))
    torch.testing.assert_close(ours.maps.flatten(), torch.tensor([6 / 1.25**0.5]))
    comp = ZENNIT["epsilon_plus"](canonizers=[SequentialMergeBatchNorm()])
    with Gradient(model=net, composite=comp) as attributor:
        out, rel = attributor(x, lambda o: o)
    torch.testing.assert_close(out, torch.tensor([[4.8]]))
    torch.testing.assert_close(rel.flatten(), torch.tensor([4.8]))
