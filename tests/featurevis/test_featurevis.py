"""Feature visualisation on tiny models: objectives with hand-computed values, their
algebra and descriptions, regularisers, parameterisations, transforms, the batched
renderer (determinism, gradient flow, early stop), filters and activation maps, and
the invariant that the model leaves every call unchanged."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import cnnlens as cl
from cnnlens import featurevis as fv
from cnnlens.core.hooks import hook_count
from cnnlens.featurevis.engine import forward_fn
from cnnlens.featurevis.objectives import Activations
from cnnlens.featurevis.params import COLOR_MATRIX
from helpers import ProgressLog, assert_unchanged, snapshot, tiny_cnn


def _acts(**tensors) -> Activations:
    return Activations(tensors)


def _odd_state(net: nn.Module) -> nn.Module:
    net.train()
    net[1].eval()
    net[0].weight.requires_grad_(False)
    return net


# --------------------------------------------------------------------------- objectives


def test_channel_neuron_deepdream_by_hand():
    a = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)
    acts = _acts(L=a)
    # image 0, channel 1 holds 4, 5, 6, 7; image 1 channel 1 holds 16..19
    assert fv.channel("L", 1)(acts).tolist() == [5.5, 17.5]
    # neuron default position: centre (h // 2, w // 2) = (1, 1) -> last entry of the 2x2 map
    assert fv.neuron("L", 1)(acts).tolist() == [7.0, 19.0]
    assert fv.neuron("L", 2, x=0, y=1)(acts).tolist() == [10.0, 22.0]
    expected = [float((a[i] ** 2).mean()) for i in range(2)]
    assert fv.deepdream("L")(acts).tolist() == pytest.approx(expected)
    assert fv.layer_objective is fv.deepdream


def test_fully_connected_layer_is_treated_as_1x1():
    acts = _acts(fc=torch.tensor([[1.0, -2.0, 3.0]]))
    assert fv.channel("fc", 2)(acts).tolist() == [3.0]
    assert fv.neuron("fc", 1)(acts).tolist() == [-2.0]


def test_class_logit_and_probability_by_hand():
    z = torch.tensor([[0.0, math.log(3.0)], [2.0, 2.0]])
    acts = _acts(logits=z)
    assert fv.class_logit(1)(acts).tolist() == pytest.approx([math.log(3.0), 2.0])
    assert fv.class_prob(1)(acts).tolist() == pytest.approx([0.75, 0.5])
    assert fv.class_prob(1, log=True)(acts).tolist() == pytest.approx(
        [math.log(0.75), math.log(0.5)]
    )


def test_direction_projects_on_a_unit_vector():
    a = torch.zeros(1, 2, 1, 2)
    a[0, 0] = torch.tensor([[3.0, 1.0]])
    a[0, 1] = torch.tensor([[4.0, 1.0]])
    value = fv.direction("L", [3.0, 4.0])(_acts(L=a))  # v = (0.6, 0.8)
    assert value.tolist() == pytest.approx([(0.6 * 3 + 0.8 * 4 + 0.6 + 0.8) / 2])
    with pytest.raises(ValueError, match="zero"):
        fv.direction("L", [0.0, 0.0])


def test_diversity_is_minus_mean_gram_cosine():
    same = torch.ones(3, 2, 2, 2)
    assert fv.diversity("L")(_acts(L=same)).tolist() == pytest.approx([-1.0] * 3)
    # two images whose Gram matrices are orthogonal: channel 0 only vs channel 1 only
    a = torch.zeros(2, 2, 1, 1)
    a[0, 0] = 1.0
    a[1, 1] = 1.0
    assert fv.diversity("L")(_acts(L=a)).tolist() == pytest.approx([0.0, 0.0])
    assert fv.diversity("L")(_acts(L=same[:1])).tolist() == [0.0]  # a group of one


def test_algebra_values_and_descriptions():
    a = torch.arange(8, dtype=torch.float32).view(1, 2, 2, 2)
    acts = _acts(L=a, M=2 * a)
    c0, c1 = fv.channel("L", 0), fv.channel("M", 1)
    combo = c0 + 2 * c1 - fv.deepdream("L") / 4
    expected = 1.5 + 2 * 11.0 - float((a**2).mean()) / 4
    assert combo(acts).item() == pytest.approx(expected)
    assert combo.description == ("channel('L', 0) + 2 * channel('M', 1) - 0.25 * deepdream('L')")
    assert combo.layers == {"L", "M"}
    assert (-(c0 + c1)).description == "-(channel('L', 0) + channel('M', 1))"
    assert (c0 - (c1 + c0)).description == "channel('L', 0) - (channel('M', 1) + channel('L', 0))"
    assert (0.5 * (c0 + c1)).description == "0.5 * (channel('L', 0) + channel('M', 1))"
    assert (-c0)(acts).item() == -1.5
    assert sum([c0, c1]).description == "channel('L', 0) + channel('M', 1)"
    assert str(c0 * 3) == "3 * channel('L', 0)"
    with pytest.raises(TypeError):
        c0 * c1
    with pytest.raises(TypeError):
        c0 + 1.0
    with pytest.raises(ZeroDivisionError):
        c0 / 0


def test_string_shorthand():
    assert fv.as_objective("blocks.3:7").description == "channel('blocks.3', 7)"
    assert fv.as_objective("logits:285").description == "class_logit(285)"
    for bad in ("blocks.3", "blocks.3:x", ":3", ""):
        with pytest.raises(ValueError, match="layer:channel"):
            fv.as_objective(bad)
    with pytest.raises(TypeError):
        fv.as_objective(3)


def test_objective_must_return_one_score_per_image():
    bad = fv.Objective(lambda acts: acts["L"].sum(), "sum('L')", ["L"])
    with pytest.raises(ValueError, match=r"one score per image, shape \(2,\)"):
        bad(_acts(L=torch.ones(2, 1, 2, 2)))


# --------------------------------------------------------------------------- regularisers


def test_regularisers_by_hand():
    grey = Activations({}, image=torch.full((2, 3, 8, 8), 0.5))
    assert fv.l1()(grey).tolist() == [0.0, 0.0]
    assert fv.total_variation()(grey).tolist() == [0.0, 0.0]
    assert fv.blur(1.0)(grey).tolist() == pytest.approx([0.0, 0.0], abs=1e-12)
    step = torch.zeros(1, 3, 4, 4)
    step[..., 2:] = 1.0  # a vertical edge: one jump of 1 per row, out of 3 horizontal pairs
    acts = Activations({}, image=step)
    assert fv.total_variation()(acts).tolist() == pytest.approx([1 / 3])
    assert fv.l1(0.5)(acts).tolist() == pytest.approx([0.5])
    checker = ((torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2).float()
    sharp = Activations({}, image=checker.expand(1, 3, 8, 8))
    assert fv.blur(1.0)(sharp).item() > 0.1
    combo = fv.channel("L", 0) - 0.5 * fv.total_variation()
    acts = Activations({"L": torch.ones(1, 1, 2, 2)}, image=step)
    assert combo(acts).item() == pytest.approx(1 - 0.5 / 3)


# --------------------------------------------------------------------------- params


@pytest.mark.parametrize("make", [fv.fourier, fv.pixel, fv.dense])
@pytest.mark.parametrize("decorrelate", [True, False])
def test_parameterisations_give_valid_images_and_gradients(make, decorrelate):
    g = torch.Generator().manual_seed(0)
    p = make(2, 16, generator=g, decorrelate=decorrelate)
    img = p()
    assert img.shape == (2, 3, 16, 16)
    assert float(img.detach().min()) > 0 and float(img.detach().max()) < 1
    (img[:, 0].sum() - img[:, 2].sum()).backward()
    grad = p.params[0].grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    with torch.no_grad():  # extreme parameters still give a valid image
        p.params[0].copy_(torch.randn_like(p.params[0]) * 1e4)
    extreme = p().detach()
    assert torch.isfinite(extreme).all()
    assert float(extreme.min()) >= 0 and float(extreme.max()) <= 1


def test_fourier_scales_low_frequencies_up():
    freq = fv.params.frequencies(16, 16)
    assert freq[0, 0] == 0 and freq[0, 8] == pytest.approx(0.5)
    g = torch.Generator().manual_seed(0)
    p = fv.fourier(1, 32, generator=g)
    p()[0].sum().backward()
    coeffs_grad = p.params[0].grad[0].norm(dim=(0, -1))  # (H, W//2+1)
    # a brightness change is all in the DC coefficient, which carries the largest scale
    assert coeffs_grad[0, 0] > 10 * coeffs_grad[16, 16]


@pytest.mark.parametrize("make", [fv.fourier, fv.pixel, fv.dense])
def test_init_round_trips(make):
    target = torch.rand(2, 3, 16, 12) * 0.9 + 0.05
    p = make(2, (16, 12), init=target)
    assert torch.allclose(p(), target, atol=1e-4)
    with pytest.raises(ValueError, match="init must have shape"):
        make(1, 16, init=target)


def test_colour_matrix_is_a_normalised_covariance_root():
    cov = COLOR_MATRIX @ COLOR_MATRIX.T
    assert torch.allclose(cov, cov.T)
    assert float(COLOR_MATRIX.norm(dim=0).max()) == pytest.approx(1.0)
    assert torch.linalg.det(COLOR_MATRIX).abs() > 1e-3


# --------------------------------------------------------------------------- transforms


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_pad_and_jitter_sizes_and_content():
    x = torch.rand(4, 3, 10, 10)
    assert fv.Pad(3)(x, _gen()).shape == (4, 3, 16, 16)
    assert fv.Pad(3, value=0.25)(x, _gen())[0, 0, 0, 0] == 0.25
    y = fv.Jitter(4)(x, _gen())
    assert y.shape == (4, 3, 6, 6)
    for i in range(4):  # every output is a 6x6 window of its own input
        windows = [x[i, :, r : r + 6, c : c + 6] for r in range(5) for c in range(5)]
        assert any(torch.equal(y[i], w) for w in windows)
    offsets = {tuple(fv.Jitter(4)(x, _gen(s))[0, 0, 0, :2].tolist()) for s in range(6)}
    assert len(offsets) > 1  # the shift is random


def test_affine_transforms_identity_and_randomness():
    x = torch.rand(3, 3, 12, 12)
    assert torch.allclose(fv.RandomScale(1, 1)(x, _gen()), x, atol=1e-5)
    assert torch.allclose(fv.RandomRotate(0)(x, _gen()), x, atol=1e-5)
    rotated = fv.RandomRotate(30)(x, _gen())
    assert rotated.shape == x.shape and not torch.allclose(rotated, x)
    # each image draws its own angle: the same picture three times comes out three ways
    same = x[:1].expand(3, -1, -1, -1)
    out = fv.RandomRotate(30)(same, _gen())
    assert not torch.allclose(out[0], out[1]) and not torch.allclose(out[1], out[2])
    assert torch.equal(fv.RandomRotate(30)(x, _gen(5)), fv.RandomRotate(30)(x, _gen(5)))


def test_compose_and_gradient_through_transforms():
    t = fv.standard()
    assert "Pad(12" in repr(t) and "Jitter(4)" in repr(t)
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    y = t(x, _gen())
    assert y.shape == (2, 3, 64 + 24 - 8 - 4, 64 + 24 - 8 - 4)
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert fv.standard(0.5).transforms[0].width == 6
    for bad in (lambda: fv.Pad(-1), lambda: fv.Jitter(-2), lambda: fv.RandomScale(2, 1)):
        with pytest.raises(ValueError):
            bad()


# --------------------------------------------------------------------------- rendering


def test_render_shape_range_and_determinism():
    net = tiny_cnn()
    objs = ["0:1", fv.channel("4", 2), fv.class_logit(3)]
    a = fv.render(net, objs, steps=4, size=24, seed=3)
    b = fv.render(net, objs, steps=4, size=24, seed=3)
    c = fv.render(net, objs, steps=4, size=24, seed=4)
    assert a.shape == (3, 3, 24, 24)
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_each_image_ascends_its_own_objective():
    net = tiny_cnn()
    objs = [fv.channel("4", c) for c in range(6)]
    d = fv.dream(net, objs, steps=40, size=32, seed=0, lr=0.1)
    start = fv.render(net, objs, steps=0, size=32, seed=0)
    assert torch.all(fv.evaluate(net, objs, d.images) > fv.evaluate(net, objs, start))
    assert d.scores.shape == (40, 6)
    assert d.scores[-5:].mean() > d.scores[:5].mean()
    m = fv.channel_means(net, d.images, "4")
    assert m.shape == (6, 6)
    assert (m.argmax(dim=0) == torch.arange(6)).sum() >= 5  # each dream drives its channel


def test_batched_equals_each_objective_alone_without_randomness():
    """Without random transforms the batch does not mix images: the batched render of
    several objectives equals rendering each alone (same start, same steps)."""
    net = tiny_cnn()
    objs = [fv.channel("4", 0), fv.channel("4", 5)]
    start = torch.rand(2, 3, 20, 20)
    kw = dict(steps=5, size=20, transforms="none", param="pixel", init=start)
    both = fv.render(net, objs, **kw)
    alone = torch.cat(
        [fv.render(net, [o], **{**kw, "init": start[i : i + 1]}) for i, o in enumerate(objs)]
    )
    assert torch.allclose(both, alone, atol=1e-5)


def test_batches_and_groups():
    net = tiny_cnn()
    objs = [fv.channel("4", c) - 0.1 * fv.diversity("4") for c in range(3)]
    d = fv.dream(net, objs, steps=2, size=16, images_per_objective=2, batch_size=3)
    assert d.images.shape == (6, 3, 16, 16) and d.scores.shape == (2, 6)
    assert d.params["batch_size"] == 3 and d.params["images_per_objective"] == 2
    assert d.descriptions[0] == "channel('4', 0) - 0.1 * diversity('4')"


def test_bad_requests_fail_before_optimising():
    net = tiny_cnn()
    with pytest.raises(ValueError) as e:
        fv.render(net, ["4:9"], steps=1, size=16)
    assert str(e.value) == "channel 9 is out of range: layer '4' has 6 (channels 0-5)"
    with pytest.raises(ValueError) as e:
        fv.render(net, ["logits:7"], steps=1, size=16)
    assert str(e.value) == "class 7 is out of range: the output has 5 (classes 0-4)"
    with pytest.raises(cl.LayerError, match="Closest names: 4"):
        fv.render(net, ["44:0"], steps=1, size=16)
    with pytest.raises(ValueError, match="direction has 2 entries"):
        fv.render(net, [fv.direction("4", [1.0, 0.0])], steps=1, size=16)
    with pytest.raises(ValueError, match="param must be"):
        fv.render(net, ["4:0"], steps=1, size=16, param="cppn")
    with pytest.raises(ValueError, match="at least one objective"):
        fv.render(net, [], steps=1)
    with pytest.raises(
        ValueError, match=r"init must hold 2 or 1 image\(s\) of shape \(3, 16, 16\)"
    ):
        fv.render(net, ["4:0", "4:1"], steps=1, size=16, init=torch.rand(3, 3, 16, 16))


def test_image_only_objective_skips_the_network():
    net = tiny_cnn()
    tail = _Counter()
    net.add_module("9", tail)
    start = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    kw = dict(size=16, param="pixel", init=start, transforms="none")
    smooth = fv.render(net, -fv.total_variation(), steps=30, lr=0.05, **kw)
    assert tail.calls == 1  # the probe pass, none per step
    tv = fv.total_variation()
    assert tv(Activations({}, smooth)).item() < 0.8 * tv(Activations({}, start)).item()


class _Counter(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x


def test_early_stop_skips_later_layers_and_matches_a_full_pass():
    net = tiny_cnn()
    net.eval()
    tail = _Counter()
    net.add_module("9", tail)
    x = torch.randn(2, 3, 16, 16)
    with forward_fn(net, ["2"], early_stop=True) as fwd:
        early = fwd(x)["2"]
    assert tail.calls == 0
    with forward_fn(net, ["2"], early_stop=False) as fwd:
        full = fwd(x)["2"]
    assert tail.calls == 1 and torch.equal(early, full)
    assert hook_count(net) == 0
    fv.render(net, ["2:0"], steps=2, size=16)
    # only two passes reached the end: the one reading the layers' layouts (traced once
    # per model and input size) and the shape probe; the optimisation steps stopped early
    assert tail.calls == 3
    fv.render(net, ["2:0"], steps=2, size=16)
    assert tail.calls == 4  # the layout trace is reused
    fv.render(net, ["logits:0"], steps=2, size=16)
    assert tail.calls == 4 + 1 + 2  # logits need full passes: probe + 2 steps


OBJECTIVES = {
    "channel": lambda: fv.channel("4", 1),
    "neuron": lambda: fv.neuron("4", 1),
    "deepdream": lambda: fv.deepdream("2"),
    "class_logit": lambda: fv.class_logit(2),
    "class_prob": lambda: fv.class_prob(2),
    "direction": lambda: fv.direction("4", torch.arange(6.0)),
    "diversity": lambda: fv.diversity("4") + fv.channel("4", 0),
    "regularised": lambda: fv.channel("0", 0) - fv.l1() - fv.total_variation() - fv.blur(),
}


@pytest.mark.parametrize("kind", sorted(OBJECTIVES))
@pytest.mark.parametrize("param", ["fourier", "pixel", "dense"])
def test_every_objective_and_param_leaves_the_model_unchanged(kind, param):
    net = _odd_state(tiny_cnn())
    before = snapshot(net)
    d = fv.dream(net, [OBJECTIVES[kind]()], steps=2, size=16, param=param, images_per_objective=2)
    assert torch.isfinite(d.images).all() and torch.isfinite(d.scores).all()
    assert_unchanged(before, net)


@pytest.mark.parametrize("where", ["forward", "backward"])
def test_module_that_raises_leaves_the_model_unchanged(where):
    net = _odd_state(tiny_cnn())
    net[3].mode = where
    before = snapshot(net)
    with pytest.raises(RuntimeError, match="injected"):
        fv.render(net, ["4:0", "logits:1"], steps=2, size=16)
    net[3].mode = "off"
    assert_unchanged(before, net)


def test_objective_that_raises_mid_run_leaves_the_model_unchanged():
    net = _odd_state(tiny_cnn())
    before = snapshot(net)
    calls = []

    def fn(acts):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("objective failure injected by the test")
        return acts["4"][:, 0].mean(dim=(1, 2))

    with pytest.raises(RuntimeError, match="injected"):
        fv.render(net, [fv.Objective(fn, "flaky", ["4"])], steps=3, size=16)
    assert_unchanged(before, net)
    for f in (fv.evaluate, lambda n, o, x: fv.channel_means(n, x, "4")):
        f(net, ["4:0"], torch.rand(1, 3, 16, 16))
        assert_unchanged(before, net)


def test_progress_is_reported(monkeypatch):
    from cnnlens.core import progress

    log = ProgressLog()
    with progress.reporting(log):
        fv.render(tiny_cnn(), ["4:0", "4:1", "4:2"], steps=3, size=16, batch_size=2)
    assert log.starts == [("dream 4", 6)] and log.steps == [1] * 6 and log.finished == ["dream 4"]


# --------------------------------------------------------------------------- filters


def test_first_layer_filters_in_colour_by_hand():
    net = tiny_cnn()
    bank = fv.filter_bank(net)
    assert bank.layer == "0" and bank.rgb and len(bank) == 4
    w = net[0].weight.detach()
    joint = bank.images("joint")
    assert torch.allclose(joint, 0.5 + 0.5 * w / w.abs().max())
    per = bank.images("filter")
    for o in range(4):
        assert torch.allclose(per[o], 0.5 + 0.5 * w[o] / w[o].abs().max())
        assert float((per[o] - 0.5).abs().max()) == pytest.approx(0.5)
    pic = bank.grid(cell=12)  # 4 tiles of 3x3 scaled by 4, in a 2x2 grid with 2 px padding
    assert pic.size == (2 + 2 * (12 + 2), 2 + 2 * (12 + 2))
    assert "directly interpretable" not in bank.note


def test_deeper_filters_in_grey_and_errors():
    net = tiny_cnn()
    bank = fv.filter_bank(net, "4")
    assert not bank.rgb and bank.weight.shape == (6, 4, 3, 3)
    assert "Only the first layer" in bank.note
    pic = bank.grid(max_filters=5, max_inputs=3, cell=6)  # rows: filters, columns: inputs
    assert pic.size == (1 + 3 * (6 + 1), 1 + 5 * (6 + 1))
    with pytest.raises(ValueError, match="not a Conv2d; conv layers: 0, 4"):
        fv.filter_bank(net, "1")
    with pytest.raises(cl.LayerError):
        fv.filter_bank(net, "conv9")
    assert fv.conv_layers(net) == ["0", "4"] and fv.first_conv(net) == "0"


# --------------------------------------------------------------------------- activations


def test_activation_maps_sorted_with_values():
    net = _odd_state(tiny_cnn())
    before = snapshot(net)
    x = torch.randn(1, 3, 16, 16)
    m = fv.activation_maps(net, x, "4")
    net.eval()
    with torch.no_grad():
        expected = net[:5](x)[0]
    net.train()
    net[1].eval()
    assert torch.allclose(m.maps, expected, atol=1e-6)
    assert torch.allclose(m.means, expected.mean(dim=(1, 2)))
    assert m.means[m.order].tolist() == sorted(m.means.tolist(), reverse=True)
    pics, caps = m.tiles(max_channels=3)
    assert len(pics) == 3 and caps[0] == f"#{int(m.order[0])} {float(m.means[m.order[0]]):.3g}"
    assert m.grid().size[0] > 0
    assert_unchanged(before, net)
    with pytest.raises(ValueError, match="one image"):
        fv.activation_maps(net, torch.randn(2, 3, 16, 16), "4")


def test_overview_follows_the_stages():
    net = tiny_cnn()
    names = fv.stages(net, 32)
    assert names == ["3", "5"]  # last module at 32x32 (the Trap), then at 16x16
    maps = fv.overview(net, torch.randn(1, 3, 32, 32))
    assert [m.layer for m in maps] == names
    assert torch.allclose(maps[1].rms, maps[1].maps.pow(2).mean(0).sqrt())
    strip = fv.overview_strip(maps, torch.rand(3, 32, 32), cell=40)
    assert strip.size[0] == 4 + 3 * (40 + 4)
    assert fv.preset_layer(net, "shallow") == "5" and fv.preset_layer(net, "deep") == "5"
    with pytest.raises(ValueError, match="preset must be"):
        fv.preset_layer(net, "medium")


def test_tile_layout_and_captions():
    pics = [torch.rand(3, 5, 7) for _ in range(5)]
    g = fv.tile(pics, ncol=2, pad=1)
    assert g.size == (1 + 2 * (7 + 1), 1 + 3 * (5 + 1))
    captioned = fv.tile(pics, ncol=5, captions=list("abcde"), font_size=8)
    assert captioned.size[1] > 1 + 5 + 1
    with pytest.raises(ValueError, match="captions"):
        fv.tile(pics, captions=["a"])
    from PIL import Image, ImageDraw

    from cnnlens.featurevis.grid import _fit, _font

    draw, font = ImageDraw.Draw(Image.new("RGB", (1, 1))), _font(10)
    assert _fit(draw, "short", font, 200) == "short"
    cut = _fit(draw, "a caption far too long for a tiny cell", font, 40)
    assert cut.endswith("…") and draw.textlength(cut, font=font) <= 40


def test_page_is_self_contained_and_escaped(tmp_path):
    from cnnlens.featurevis.page import Section, write_page

    pic = fv.tile([torch.rand(3, 8, 8)])
    path = write_page(
        tmp_path / "sub" / "p.html",
        "<script>alert(1)</script>",
        [Section("h<1>", "note & more", pic, [(pic, 'cap"<b>')])],
        {"layer": "<i>x</i>"},
    )
    text = path.read_text()
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "&lt;i&gt;x&lt;/i&gt;" in text and "cap&quot;&lt;b&gt;" in text
    assert text.count("data:image/png;base64,") == 2
    assert "http://" not in text and "https://" not in text and 'src="/' not in text
