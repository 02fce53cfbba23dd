"""Excitation backprop (EB) and contrastive EB: hand-computed marginal winning probabilities.

Every expected value below follows from the MWP rule of Zhang et al. (ECCV 2016): a unit
``y_j`` hands its probability to its inputs in proportion to ``x_i w+_ij`` (bias ignored),
and the explained class starts with probability 1. Unless a test says otherwise the inputs
are non-negative and the model's preprocessing is the identity (``PLAIN``), so an input
value of 0 is black and the pixel rule needs no shift.
"""

from __future__ import annotations

import pytest
import torch
from timm.layers import BatchNormAct2d, Conv2dSame
from torch import nn

import cnnlens as cl
from cnnlens.core.layers import default_layer
from cnnlens.core.tensors import upsample
from cnnlens.models.base import LoadedModel, Preprocess
from helpers import assert_unchanged, snapshot, tiny_cnn

EB, CEB = "excitation_backprop", "contrastive_excitation_backprop"
PLAIN = Preprocess(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def plain(net: nn.Module) -> LoadedModel:
    return LoadedModel(net, PLAIN)


def close(actual: torch.Tensor, expected, atol: float = 1e-6) -> None:
    expected = torch.as_tensor(expected, dtype=actual.dtype)
    torch.testing.assert_close(actual, expected, atol=atol, rtol=1e-5)


def set_weights(layer: nn.Module, weight, bias=None) -> nn.Module:
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weight, dtype=torch.float32).view_as(layer.weight))
        if bias is not None:
            layer.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
    return layer


# --------------------------------------------------------------------------- hand-computed


def test_two_layer_net_by_hand_and_logit_value_is_irrelevant():
    # x = [1, 2]; W1 = [[1, 2], [-1, 1]] -> z = [5, 1], h = ReLU(z) = [5, 1].
    # Class 0, row [-2, 3]: w+ = [0, 3], h w+ = [0, 3] -> P(h) = [0, 1].
    #   Unit 2 of layer 1 (w+ = [0, 1]): x w+ = [0, 2] -> P(x) = [0, 1].
    # Class 1, row [1, 1]: h w+ = [5, 1] -> P(h) = [5/6, 1/6].
    #   Unit 1 (w+ = [1, 2]): x w+ = [1, 4] -> [1/6, 4/6]; unit 2: [0, 1/6].
    #   P(x) = [1/6, 5/6].
    # The class bias (-100 makes logit 0 negative) does not enter: P(class) = 1.
    net = nn.Sequential(
        nn.Flatten(),
        set_weights(nn.Linear(2, 2, bias=False), [[1, 2], [-1, 1]]),
        nn.ReLU(),
        set_weights(nn.Linear(2, 2), [[-2, 3], [1, 1]], [-100.0, 7.0]),
    )
    x = torch.tensor([[[[1.0, 2.0]]]])
    e = cl.attribute(plain(net), x, EB, target=[[0, 1]])
    assert net(x)[0, 0] < 0 and e.signed is False
    close(e.maps[0], [[[0.0, 1.0]], [[1 / 6, 5 / 6]]])
    assert e.extras == {"layer": None, "classifier": "3"}


def test_residual_sum_splits_mass_in_proportion_to_the_summands():
    # x = [1, 3]; h = ReLU(W1 x) with W1 = [[2, 0], [1, 1]] -> h = [2, 4]; y = h + x = [3, 7].
    # Top row [1, 1]: P(y) = [3, 7] / 10. The sum's ordinary gradient is g = P(y) / y = 0.1,
    # so P(h) = 0.1 h = [0.2, 0.4] and the skip gets P(x) = 0.1 x = [0.1, 0.3]
    # (EB with weights 1: each summand gets its share y_part / y).
    # Through W1: h1 = 2 x1 -> x1 gets 0.2; h2 = x1 + x2 = 1 + 3 -> x1 0.1, x2 0.3.
    # Total P(x) = [0.1 + 0.2 + 0.1, 0.3 + 0.3] = [0.4, 0.6].
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.flat, self.relu = nn.Flatten(), nn.ReLU()
            self.fc1 = set_weights(nn.Linear(2, 2, bias=False), [[2, 0], [1, 1]])
            self.fc2 = set_weights(nn.Linear(2, 1, bias=False), [[1, 1]])

        def forward(self, x):
            x = self.flat(x)
            return self.fc2(self.relu(self.fc1(x)) + x)

    e = cl.attribute(plain(Residual()), torch.tensor([[[[1.0, 3.0]]]]), EB, target=0)
    close(e.maps[0, 0], [[0.4, 0.6]])


def test_average_pooling_shares_mass_in_proportion_to_the_inputs():
    # 2x2 average pool of [[1, 2], [3, 4]] = 2.5, then logits [2 * 2.5, -1 * 2.5].
    # Class 0: all mass to the pool; uniform weights 1/4 -> P(x) = x / sum(x) = x / 10.
    # Class 1: its only weight is negative: no excitatory input, the mass is lost.
    net = nn.Sequential(
        nn.AvgPool2d(2), nn.Flatten(), set_weights(nn.Linear(1, 2, bias=False), [[2], [-1]])
    )
    e = cl.attribute(plain(net), torch.tensor([[[[1.0, 2], [3, 4]]]]), EB, target=[[0, 1]])
    close(e.maps[0, 0], [[0.1, 0.2], [0.3, 0.4]])
    close(e.maps[0, 1], torch.zeros(2, 2))


def test_max_pooling_gives_all_mass_to_the_winner():
    net = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), set_weights(nn.Linear(1, 1), [[1]], [0]))
    e = cl.attribute(plain(net), torch.tensor([[[[1.0, 4], [3, 2]]]]), EB, target=0)
    close(e.maps[0, 0], [[0, 1], [0, 0]])


def test_batchnorm_without_a_conv_before_it_is_a_per_channel_weight():
    # x = [1, 2] (one channel, two pixels) -> 1x1 conv to two equal channels -> ReLU ->
    # BN (eps 0, mean 0, var 1): gamma = [2, -1], beta = [0, 5]: y = [[2, 4], [4, 3]].
    # Top row of ones: P(y) = [[2, 4], [4, 3]] / 13. The BN follows a ReLU, not the conv,
    # so it is a per-channel weight: channel 0 (weight 2 > 0) passes [2, 4] / 13 on,
    # channel 1 (weight -1) has no excitatory input and loses its 7 / 13.
    bn = nn.BatchNorm2d(2, eps=0.0)
    set_weights(bn, [2.0, -1.0], [0.0, 5.0])
    net = nn.Sequential(
        set_weights(nn.Conv2d(1, 2, 1, bias=False), [1.0, 1.0]),
        nn.ReLU(),
        bn,
        nn.Flatten(),
        set_weights(nn.Linear(4, 1, bias=False), [[1, 1, 1, 1]]),
    )
    x = torch.tensor([[[[1.0, 2.0]]]])
    for layer in (None, "1"):
        e = cl.attribute(plain(net), x, EB, target=0, layer=layer)
        close(e.maps[0, 0], [[2 / 13, 4 / 13]])


def _folded(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    out = nn.Conv2d(conv.in_channels, conv.out_channels, 3, padding=1)
    with torch.no_grad():
        out.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        out.bias.copy_((conv.bias - bn.running_mean) * scale + bn.bias)
    return out


def _head(seed: int = 0) -> list[nn.Module]:
    torch.manual_seed(seed)
    return [nn.Conv2d(4, 3, 3, padding=1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1)] + [
        nn.Flatten()
    ]


def test_conv_batchnorm_pair_equals_the_explicitly_folded_conv():
    torch.manual_seed(3)
    conv, bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
    with torch.no_grad():  # one negative gamma flips that channel's excitatory weights
        bn.weight.copy_(torch.tensor([1.5, -0.7, 0.3, 2.0]))
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    fc = nn.Linear(3, 5)
    pair = nn.Sequential(conv, bn, nn.ReLU(), *_head(), fc).eval()
    folded = nn.Sequential(_folded(conv, bn), nn.ReLU(), *_head(), fc).eval()
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(pair(x), folded(x), rtol=1e-5, atol=1e-5)
    for layer in (None, "2"):
        layer_b = None if layer is None else "1"
        a = cl.attribute(plain(pair), x, EB, target="top3", layer=layer).maps
        b = cl.attribute(plain(folded), x, EB, target="top3", layer=layer_b).maps
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
        assert a.sum() > 0
    # A conv named as the layer is explained at its BN's output (the same units).
    conv_map = cl.attribute(plain(pair), x, EB, target="top3", layer="0").maps
    bn_map = cl.attribute(plain(pair), x, EB, target="top3", layer="1").maps
    torch.testing.assert_close(conv_map, bn_map)


def test_relu6_keeps_the_mass_of_saturated_units_fused_or_not():
    # Large weights saturate ReLU6. Its derivative is 0 there, which would drop the mass;
    # EB's rule z g_z = y g_y keeps it, so P still sums to 1, and a timm BatchNormAct2d
    # (BN + ReLU6 inside one module, y = its post-activation output) gives the same maps.
    torch.manual_seed(5)
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.mul_(40)
    bn, fused = nn.BatchNorm2d(4), BatchNormAct2d(4, act_layer=nn.ReLU6)
    fused.load_state_dict(bn.state_dict())
    fc = nn.Linear(3, 5)
    separate = nn.Sequential(conv, bn, nn.ReLU6(inplace=True), *_head(), fc).eval()
    together = nn.Sequential(conv, fused, *_head(), fc).eval()
    x = torch.rand(1, 3, 8, 8)
    assert (separate[:2](x) > 6).float().mean() > 0.1  # many saturated units
    a = cl.attribute(plain(separate), x, EB, target="top2").maps
    b = cl.attribute(plain(together), x, EB, target="top2").maps
    torch.testing.assert_close(a, b)
    close(a.sum(dim=(2, 3)), torch.ones(1, 2), atol=1e-5)
    assert separate[2].inplace and fused.act.inplace  # flags given back


def _all_relu_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1, groups=2, bias=False),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 4),
    )


@pytest.mark.parametrize("layer", [None, "1", "3"])
def test_mass_is_conserved_at_every_layer_of_an_all_relu_net(layer):
    # Non-negative inputs and no hidden biases, so every active unit has excitatory input
    # (a unit switched on by its bias alone would lose its mass); a grouped conv; biased
    # classifier. Each layer's P sums to 1.
    x = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    e = cl.attribute(plain(_all_relu_net()), x, EB, target="top3", layer=layer)
    close(e.maps.sum(dim=(2, 3)), torch.ones(2, 3), atol=1e-5)
    assert (e.maps >= 0).all()


def test_pixels_compete_by_intensity_above_black():
    # ImageNet normalisation (a bare module): x = (r - mean) / std is negative for dark
    # pixels, so the input competes by x - x_black = r / std >= 0. One conv covers both
    # pixels and feeds the classifier, so P(pixel p) = sum_k r_kp / std_k over the total.
    r = torch.tensor([[[0.5, 0.1]], [[0.5, 0.2]], [[0.5, 0.3]]])  # (3, 1, 2): two pixels
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    x = ((r - mean.view(3, 1, 1)) / std.view(3, 1, 1)).unsqueeze(0)
    net = nn.Sequential(
        set_weights(nn.Conv2d(3, 1, (1, 2)), torch.ones(6), [10.0]),
        nn.Flatten(),
        set_weights(nn.Linear(1, 1), [[1.0]], [0.0]),
    )
    e = cl.attribute(net, x, EB, target=0)
    s = (r / std.view(3, 1, 1)).sum(dim=(0, 1))
    close(e.maps[0, 0, 0], s / s.sum())
    assert (x < 0).any()  # a plain clamp at 0 would have dropped these values


# --------------------------------------------------------------------------- contrastive


def test_contrastive_by_hand_channels_summed_before_the_difference():
    # x = [1, 2]; 1x1 conv to channels a = x, b = 2x; ReLU: h = a [1, 2], b [2, 4].
    # Class 0 row [1, 1, 0, -1] over (a0, a1, b0, b1):
    #   target w+ = [1, 1, 0, 0]: h w+ = [1, 2, 0, 0] / 3 -> summed map [1/3, 2/3];
    #   dual (-w)+ = [0, 0, 0, 1]: h w+ = [0, 0, 0, 4] / 4 -> summed map [0, 1].
    # c-EB = max([1/3, 2/3] - [0, 1], 0) = [1/3, 0]; per channel first would give [1/3, 2/3].
    net = nn.Sequential(
        set_weights(nn.Conv2d(1, 2, 1, bias=False), [1.0, 2.0]),
        nn.ReLU(),
        nn.Flatten(),
        set_weights(nn.Linear(4, 2, bias=False), [[1, 1, 0, -1], [0, 0, 1, 0]]),
    )
    x = torch.tensor([[[[1.0, 2.0]]]])
    close(cl.attribute(plain(net), x, EB, target=0, layer="1").maps[0, 0], [[1 / 3, 2 / 3]])
    e = cl.attribute(plain(net), x, CEB, target=0, layer="1")
    close(e.maps[0, 0], [[1 / 3, 0.0]])
    assert e.extras["layer"] == "1" and e.signed is False


def test_contrastive_before_global_pooling_matches_the_formula():
    # At a layer feeding GAP + linear, P_c(u) = sum_k h_k(u) w+_ck / sum_{k,u} h w+ and the
    # dual uses (-w_c)+; the default layer is Grad-CAM's.
    net = tiny_cnn()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    e = cl.attribute(net, x, CEB, target=[[1, 3], [0, 4]])
    assert e.extras["layer"] == default_layer(net, (16, 16)) == "5"
    with torch.no_grad():
        h = net.eval()[:6](x)
    w = net[8].weight[e.targets]  # (N, T, K)

    def p(weights):
        m = torch.einsum("ntk,nkhw->nthw", weights.clamp_min(0), h)
        return m / m.sum(dim=(2, 3), keepdim=True)

    ref = upsample((p(w) - p(-w)).clamp_min(0), (16, 16))
    torch.testing.assert_close(e.maps, ref, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- model handling


def test_batch_and_several_targets_equal_single_calls():
    net, x = plain(_all_relu_net()), torch.rand(2, 3, 6, 6)
    for method in (EB, CEB):
        both = cl.attribute(net, x, method, target=[[1, 3], [0, 2]], layer="1").maps
        for n, row in enumerate([[1, 3], [0, 2]]):
            for t, c in enumerate(row):
                one = cl.attribute(net, x[n : n + 1], method, target=c, layer="1").maps
                torch.testing.assert_close(both[n, t], one[0, 0])


def test_reused_inplace_modules_match_separate_ones():
    torch.manual_seed(0)
    conv, relu, fc = nn.Conv2d(3, 3, 3, padding=1, bias=False), nn.ReLU(True), nn.Linear(3, 2)

    class Twice(nn.Module):  # one conv and one in-place ReLU module, each called twice
        def __init__(self):
            super().__init__()
            self.conv, self.relu, self.fc = conv, relu, fc

        def forward(self, x):
            x = self.relu(self.conv(self.relu(self.conv(x))))
            return self.fc(x.mean(dim=(2, 3)))

    twice = Twice()
    unrolled = nn.Sequential(conv, nn.ReLU(), conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1))
    unrolled.append(nn.Flatten()).append(fc)
    x = torch.rand(2, 3, 6, 6)
    a = cl.attribute(plain(twice), x, EB, target=[[0, 1], [1, 0]]).maps
    b = cl.attribute(plain(unrolled), x, EB, target=[[0, 1], [1, 0]]).maps
    torch.testing.assert_close(a, b)
    close(a.sum(dim=(2, 3)), torch.ones(2, 2), atol=1e-5)
    assert relu.inplace


def test_conv2d_same_pads_like_its_forward():
    # timm's Conv2dSame pads asymmetrically inside forward (here 0 before, 1 after on 8 px
    # with kernel 3, stride 2); the W+ pass must pad the same way.
    torch.manual_seed(0)
    same = Conv2dSame(3, 4, 3, stride=2)
    explicit = nn.Conv2d(3, 4, 3, stride=2)
    explicit.load_state_dict(same.state_dict())
    tail = [nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)]
    a_net = nn.Sequential(same, *tail)
    b_net = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), explicit, *tail)
    x = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(a_net(x), b_net(x))
    a = cl.attribute(plain(a_net), x, EB, target="top3").maps
    b = cl.attribute(plain(b_net), x, EB, target="top3").maps
    torch.testing.assert_close(a, b)


class Block(nn.Module):
    def __init__(self, norm: nn.Module):
        super().__init__()
        self.conv, self.norm = nn.Conv2d(3, 4, 3, padding=1), norm

    def forward(self, x):
        return self.norm(self.conv(x))


@pytest.mark.parametrize(
    "body, name, kind",
    [
        ([nn.Conv2d(3, 4, 3, padding=1), nn.SiLU()], "'1'", "SiLU"),
        ([Block(nn.GroupNorm(2, 4)), nn.ReLU()], "'0.norm'", "GroupNorm"),
        ([nn.Conv2d(3, 4, 3), BatchNormAct2d(4, act_layer=nn.SiLU)], "'1.act'", "SiLU"),
        ([nn.Conv2d(3, 4, 3), nn.Sigmoid()], "'1'", "Sigmoid"),
    ],
)
def test_unsupported_module_is_named_and_the_model_restored(body, name, kind):
    net = nn.Sequential(*body, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    before = snapshot(net)
    for method in (EB, CEB):
        with pytest.raises(cl.MethodError, match=rf"{name} \({kind}\).*guided_backprop"):
            cl.attribute(net, torch.rand(1, 3, 8, 8), method, target=0)
        assert_unchanged(before, net)


def test_unsupported_module_that_never_runs_is_ignored_and_head_must_be_linear():
    class WithSpare(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.gate = _all_relu_net(), nn.Sigmoid()  # the gate is never called

        def forward(self, x):
            return self.body(x)

    x = torch.rand(1, 3, 6, 6)
    close(cl.attribute(plain(WithSpare()), x, EB, target=0).maps.sum(), 1.0, atol=1e-5)
    conv_head = nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
    conv_head.append(nn.Flatten())
    with pytest.raises(cl.MethodError, match="negates the classifier row.*nn.Linear"):
        cl.attribute(conv_head, x, CEB, target=0)


def test_output_without_a_linear_layer_is_seeded_with_probability_one():
    # Channels a = [1, 3], b = [2, 0] on two pixels; a 1x1 conv, ReLU and average pooling
    # give the scores (SqueezeNet's head). Class 0, weights [1, 1]: y0 = [3, 3], so each
    # pixel holds 1/2; pixel 0 splits a : b = 1 : 2, pixel 1 is all a -> map [1/2, 1/2].
    # Class 1, weights [1, -1]: y1 = ReLU([-1, 3]) = [0, 3] -> all mass at pixel 1, from a.
    net = nn.Sequential(
        set_weights(nn.Conv2d(2, 2, 1, bias=False), [1.0, 1.0, 1.0, -1.0]),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    x = torch.tensor([[[[1.0, 3.0]], [[2.0, 0.0]]]])
    e = cl.attribute(plain(net), x, EB, target=[[0, 1]])
    close(e.maps[0], [[[0.5, 0.5]], [[0.0, 1.0]]])
    assert e.extras["classifier"] is None
    dead = set_weights(nn.Conv2d(2, 1, 1, bias=False), [-1.0, -1.0])
    with pytest.raises(cl.MethodError, match=r"score of class 0 \(image 0\) is 0 <= 0"):
        cl.attribute(
            plain(nn.Sequential(dead, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())),
            x,
            EB,
            target=0,
        )


# --------------------------------------------------------------------------- bundled model


@pytest.fixture(scope="module")
def chelsea():
    model = cl.load_model()
    return model, model.preprocess(cl.sample_images(["chelsea"])["chelsea"])


@pytest.mark.slow
@pytest.mark.parametrize("method", [EB, CEB])
def test_bundled_model_maps_are_finite_and_on_the_cat(chelsea, method):
    # Rows 60-200, columns 40-180 of the 224 px image hold the cat's eyes and nose: 39% of
    # the area. Measured shares of the map: EB 0.65, c-EB 0.57 (Grad-CAM 0.60).
    model, x = chelsea
    e = cl.attribute(model, x, method, target=285)
    m = e.maps[0, 0]
    assert m.shape == (224, 224) and torch.isfinite(m).all() and (m >= 0).all()
    assert m[60:200, 40:180].sum() / m.sum() > 0.5
    if method == EB:
        # Mass lost at depthwise channels with no positive weight after BN folding.
        assert 0.09 < float(m.sum()) < 0.14
    else:
        assert e.extras["layer"] == "bn2"
