"""LRP: each rule by hand on a two-input Linear layer, whole networks by hand (Linear-ReLU-
Linear, one conv on an arange input), conservation and the reported leak, residual sums,
determinism and refusals. Cross-checks against zennit: test_lrp_zennit.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnlens as cl
from cnnlens.attribution.lrp import COMPOSITES
from cnnlens.attribution.lrp.rules import (
    AlphaBeta,
    Epsilon,
    Flat,
    Gamma,
    Layer,
    WSquare,
    ZBox,
    ZPlus,
)
from helpers import assert_unchanged, snapshot, tiny_cnn

# ----------------------------------------------------------------------------- each rule

# One Linear unit, x = (2, -1), w = (1, 2), b = 1: contributions x*w = (2, -2), z = 1,
# relevance R = 1 above it. The stabiliser 1e-6 moves these values by about 1e-6.
X = torch.tensor([[2.0, -1.0]])
LAYER = Layer(F.linear, torch.tensor([[1.0, 2.0]]), torch.tensor([1.0]))
R = torch.tensor([[1.0]])
HAND = {
    # epsilon 0.5: (2, -2) / (z + 0.5) = (2, -2) / 1.5
    "epsilon": (Epsilon(0.5), [4 / 3, -4 / 3]),
    # z-plus: positive contributions (2, 0) plus b+ = 1: z+ = 3
    "zplus": (ZPlus(), [2 / 3, 0.0]),
    # alpha2-beta1: 2 * (2, 0) / 3 - 1 * (0, -2) / z-, z- = x- w+ + b- = -2
    "alpha2_beta1": (AlphaBeta(2, 1), [4 / 3, -1.0]),
    # gamma 0.25, z > 0: x+ through w + 0.25 w+ = (1.25, 2.5) -> 2.5, bias 1 + 0.25 = 1.25,
    # x- through w + 0.25 w- = (1, 2) -> -2: denominator 1.75, shares (2.5, -2) / 1.75
    "gamma": (Gamma(0.25), [10 / 7, -8 / 7]),
    # flat: inputs and weights 1, bias dropped: z = 2, each input 1/2
    "flat": (Flat(), [0.5, 0.5]),
    # w-square: w^2 = (1, 4), b^2 = 1: z = 6, shares (1, 4) / 6
    "wsquare": (WSquare(), [1 / 6, 4 / 6]),
    # z^B in [-3, 3]: z = x w + b - (l w+ + b+) - (h w- + b-) = 1 - (-9 + 1) - 0 = 9,
    # R = (x w - l w+ - h w-) / 9 = ((2, -2) - (-3, -6)) / 9 = (5, 4) / 9
    "zbox": (ZBox(torch.tensor(-3.0), torch.tensor(3.0)), [5 / 9, 4 / 9]),
}


@pytest.mark.parametrize("name", HAND)
def test_each_rule_on_one_linear_unit_equals_the_hand_computation(name):
    rule, want = HAND[name]
    got = rule(LAYER, X, R)
    torch.testing.assert_close(got, torch.tensor([want]), atol=1e-5, rtol=1e-5)


def test_rules_skip_a_zero_negative_part_exactly():
    # x >= 0 takes the short path (no x- terms); a -1e-30 entry forces the full one
    layer = Layer(F.linear, torch.tensor([[1.0, -2.0, -1.0]]), torch.tensor([0.5]))
    x, signed = torch.tensor([[2.0, 0.0, 3.0]]), torch.tensor([[2.0, -1e-30, 3.0]])
    for rule in (ZPlus(), AlphaBeta(2, 1), Gamma(0.5)):
        torch.testing.assert_close(rule(layer, x, R), rule(layer, signed, R))


# ----------------------------------------------------------------------------- whole networks


def _mlp():
    """x (2) -> Linear(W1, b1) -> ReLU -> Linear(W2, b2) -> 1 output."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[1.0, 1.0], [2.0, -3.0]]))
        net[1].bias.copy_(torch.tensor([1.0, 0.0]))
        net[3].weight.copy_(torch.tensor([[0.5, 1.0]]))
        net[3].bias.copy_(torch.tensor([2.0]))
    return net


def test_linear_relu_linear_by_hand_with_its_leaks():
    # x = (1, 2): z1 = (1 + 2 + 1, 2 - 6) = (4, -4), a1 = (4, 0); score z2 = 0.5*4 + 2 = 4.
    # Linear 2, epsilon 0.5: s = 4 / 4.5 = 8/9, R_a1 = a1 * w2 * s = (16/9, 0); leak 4 - 16/9.
    # Linear 1: s1 = R_a1 / (z1 + 0.5 sign z1) = (16/9 / 4.5, 0) = (32/81, 0),
    # R_x = x * W1^T s1 = (32/81, 64/81); leak 16/9 - 96/81.
    x = torch.tensor([1.0, 2.0]).view(1, 1, 1, 2)
    e = cl.attribute(_mlp(), x, "lrp", target=0, epsilon=0.5)
    torch.testing.assert_close(e.maps.flatten(), torch.tensor([32 / 81, 64 / 81]))
    ex = e.extras
    assert ex["rules"] == {"1": "epsilon(0.5)", "3": "epsilon(0.5)"}
    torch.testing.assert_close(ex["score"], torch.tensor([[4.0]]))
    torch.testing.assert_close(ex["leaks"]["3"], torch.tensor([[4 - 16 / 9]]))
    torch.testing.assert_close(ex["leaks"]["1"], torch.tensor([[16 / 9 - 96 / 81]]))
    torch.testing.assert_close(ex["relevance_sum"] + ex["leak"], ex["score"])


def _one_conv(first_linear_bias=False):
    """Conv2d(1, 1, 2) with w = [[1, -1], [2, 0]], b = 0.5 -> flatten -> sum (Linear of ones)."""
    net = nn.Sequential(nn.Conv2d(1, 1, 2), nn.Flatten(), nn.Linear(4, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[[[1.0, -1.0], [2.0, 0.0]]]]))
        net[0].bias.fill_(0.5)
        net[2].weight.fill_(1.0)
    return net


# x = arange(9) - 4 on 3x3: [[-4, -3, -2], [-1, 0, 1], [2, 3, 4]]; conv outputs
# z = [[-4 + 3 - 2 + .5, -3 + 2 + 0 + .5], [-1 - 0 + 4 + .5, 0 - 1 + 6 + .5]]
#   = [[-2.5, -0.5], [3.5, 5.5]], score 6; the sum (epsilon 1e-6) gives each output R = z.
ARANGE = (torch.arange(9.0) - 4).view(1, 1, 3, 3)


def test_one_conv_epsilon_plus_by_hand():
    # z-plus per output: the positive contributions and b+ = 0.5 share its relevance.
    # (0,0): only x01 w01 = (-3)(-1) = 3 -> z+ = 3.5, x01 gets 3/3.5 * -2.5 = -15/7
    # (0,1): only x02 w01 = (-2)(-1) = 2 -> z+ = 2.5, x02 gets 2/2.5 * -0.5 = -0.4
    # (1,0): only x20 w10 = 2*2 = 4     -> z+ = 4.5, x20 gets 4/4.5 * 3.5 = 28/9
    # (1,1): only x21 w10 = 3*2 = 6     -> z+ = 6.5, x21 gets 6/6.5 * 5.5 = 66/13
    e = cl.attribute(_one_conv(), ARANGE, "lrp", target=0)
    want = torch.tensor([[0, -15 / 7, -0.4], [0, 0, 0], [28 / 9, 66 / 13, 0]])
    torch.testing.assert_close(e.maps[0, 0], want, atol=1e-5, rtol=1e-5)
    assert e.extras["rules"] == {"0": "zplus", "2": "epsilon(1e-06)"}


def test_one_conv_flat_first_layer_by_hand():
    # flat: each output's relevance z splits equally over its 4 pixels (bias ignored):
    # pixel (i, j) gets the sum of z over the outputs covering it, / 4.
    e = cl.attribute(_one_conv(), ARANGE, "lrp", target=0, composite="epsilon_plus_flat")
    want = torch.tensor([[-2.5, -3.0, -0.5], [1.0, 6.0, 5.0], [3.5, 9.0, 5.5]]) / 4
    torch.testing.assert_close(e.maps[0, 0], want, atol=1e-5, rtol=1e-5)
    assert e.extras["rules"]["0"] == "flat"
    torch.testing.assert_close(e.extras["relevance_sum"], torch.tensor([[6.0]]))


# ----------------------------------------------------------------------------- conservation


class Residual(nn.Module):
    """Bias-free conv net with a functional residual sum, an in-place one and average pooling."""

    def __init__(self, bias=False):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 6, 3, padding=1, bias=bias)
        self.a = nn.Conv2d(6, 6, 3, padding=1, bias=bias)
        self.b = nn.Conv2d(6, 6, 1, bias=bias)
        self.head = nn.Linear(6, 4, bias=bias)

    def forward(self, x):
        x = F.relu(self.stem(x))
        y = self.a(x).relu() + x  # functional sum of two activations
        y += F.relu(self.b(y))  # in-place sum
        return self.head(F.adaptive_avg_pool2d(y, 1).flatten(1))


def _x(n=2, size=12, seed=1):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_bias_free_network_conserves_relevance_through_sums_and_pooling():
    e = cl.attribute(Residual(), _x(), "lrp", target=[[0, 2], [1, 3]])
    ex = e.extras
    torch.testing.assert_close(ex["relevance_sum"], ex["score"], rtol=1e-4, atol=1e-6)
    assert ex["leak"].abs().max() < 1e-4 * ex["score"].abs().max()
    assert sum(r == "norm" for r in ex["rules"].values()) == 3  # two sums and the pooling
    torch.testing.assert_close(e.maps.sum((2, 3)), ex["relevance_sum"])


def test_leak_is_what_biases_and_stabilisers_absorbed():
    for net in (Residual(bias=True), tiny_cnn()):
        for comp in COMPOSITES:
            ex = cl.attribute(net, _x(), "lrp", target=[[0, 2], [1, 3]], composite=comp).extras
            torch.testing.assert_close(ex["relevance_sum"] + ex["leak"], ex["score"],
                                       rtol=1e-4, atol=1e-5)  # fmt: skip
            assert ex["leak"].abs().max() > 1e-3  # the biases do take some


def test_residual_sum_shares_in_proportion_to_the_summands():
    class Two(nn.Module):
        def forward(self, x):
            return (x[..., :1] + 3 * x[..., 1:]).flatten(1)

    # pixels a = 1 and b = 2: the sum a + 3b = 7 gives a 1/7 of it and 3b 6/7; the scale by
    # a constant passes relevance on (the plain gradient would give b 3 * 6 instead).
    net = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), Two())
    with torch.no_grad():
        net[0].weight.fill_(1.0)
    x = torch.tensor([1.0, 2.0]).view(1, 1, 1, 2)
    e = cl.attribute(net, x, "lrp", target=0)
    torch.testing.assert_close(e.extras["score"], torch.tensor([[7.0]]))
    torch.testing.assert_close(e.maps.flatten(), torch.tensor([1.0, 6.0]))


def test_batch_and_targets_equal_single_calls_and_repeat_exactly():
    net = Residual(bias=True)
    x = _x()
    both = cl.attribute(net, x, "lrp", target=[[0, 2], [1, 3]], composite="epsilon_gamma_box")
    again = cl.attribute(net, x, "lrp", target=[[0, 2], [1, 3]], composite="epsilon_gamma_box")
    assert torch.equal(both.maps, again.maps)
    one = cl.attribute(net, x[1:], "lrp", target=3, composite="epsilon_gamma_box")
    torch.testing.assert_close(both.maps[1:, 1:], one.maps, atol=1e-6, rtol=1e-5)


def test_model_comes_back_unchanged_with_batch_norm_folded():
    net = tiny_cnn()
    net[1].running_mean.uniform_(-1, 1)
    net[1].running_var.uniform_(0.5, 2)
    before = snapshot(net)
    e = cl.attribute(net, _x(), "lrp", target=1)
    assert_unchanged(before, net)
    assert "0+1" in e.extras["rules"]  # the conv and its batch norm are one layer


# ----------------------------------------------------------------------------- refusals


class SE(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Conv2d(4, 4, 1)
        self.gate = nn.Sigmoid()
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        x = self.conv(x).relu()
        s = self.fc(x.mean((2, 3), keepdim=True))
        x = x * self.gate(s)
        return self.head(x.mean((2, 3)))


class Gated(SE):
    def __init__(self):
        super().__init__()
        self.gate = nn.Identity()  # the product of two activations is refused by itself


@pytest.mark.parametrize(
    "net, where",
    [
        (SE(), "module 'gate' (Sigmoid)"),
        (Gated(), "in the model's forward"),
        (nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.Flatten(), nn.LazyLinear(2)),
         "module '1' (GroupNorm)"),
        (nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 2, 3), nn.Flatten(), nn.LazyLinear(2)),
         "batch norm '0'"),
    ],
)  # fmt: skip
def test_layers_without_a_rule_are_refused_with_module_reason_and_alternatives(net, where):
    net(_x())  # materialise lazy layers
    before = snapshot(net)
    with pytest.raises(cl.MethodError) as err:
        cl.attribute(net, _x(), "lrp", target=0)
    msg = str(err.value)
    assert where in msg and "Use 'gradient'" in msg, msg
    assert_unchanged(before, net)


def test_unknown_composite_and_box_away_from_the_input_are_refused():
    with pytest.raises(cl.MethodError, match="epsilon_gamma_box"):
        cl.attribute(tiny_cnn(), _x(), "lrp", target=0, composite="epsilon_box")
    net = nn.Sequential(nn.Flatten(), nn.Linear(432, 432), nn.Unflatten(1, (3, 12, 12)),
                        nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(200, 2))  # fmt: skip
    with pytest.raises(cl.MethodError, match="does not read the network input"):
        cl.attribute(net, _x(), "lrp", target=0, composite="epsilon_gamma_box")
