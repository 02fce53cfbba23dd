"""The analyses of Fong & Vedaldi 2017 (cnnlens.perturbation.interrogate, .boxes,
.representativeness, .regions) and the SVG line chart they plot with: hand-computed
cases on models whose score depends only on a known square, the CLI, and one pinned
number on the bundled model."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET

import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

import cnnlens as cl
from cnnlens.cli import app
from cnnlens.core.masks import MaskResult
from cnnlens.core.tensors import gaussian_blur
from cnnlens.models.base import LoadedModel, Preprocess
from cnnlens.perturbation.boxes import (
    compare_deletion_boxes,
    deletion_boxes,
    normalize_maps,
    tightest_boxes,
)
from cnnlens.perturbation.interrogate import (
    box_masks,
    box_to_input,
    interrogate,
    normalized_score,
)
from cnnlens.perturbation.operators import Perturbation
from cnnlens.perturbation.regions import keypoint_values, region_test, window_means
from cnnlens.perturbation.representativeness import representativeness, simplified_masks
from cnnlens.report.charts import line_chart, nice_ticks
from helpers import assert_unchanged, snapshot, tiny_cnn

runner = CliRunner()


class SquareModel(nn.Module):
    """Two classes; logit 0 = gain * (mean of x² over the square S - offset), logit 1 = 0.

    The score reads nothing outside S = (x0, y0, x1, y1) (end exclusive), so any
    perturbation that replaces all of S by the fully perturbed image gives exactly
    the fully perturbed score, and one that leaves S alone changes nothing.
    """

    calls: list[int] = []  # batch sizes seen (class level: survives the channels-last copy)

    def __init__(self, square=(8, 8, 16, 16), gain=1.0, offset=0.0):
        super().__init__()
        self.square, self.gain, self.offset = square, gain, offset

    def forward(self, x):
        SquareModel.calls.append(x.shape[0])
        x0, y0, x1, y1 = self.square
        energy = x[..., y0:y1, x0:x1].pow(2).mean(dim=(1, 2, 3))
        z = self.gain * (energy - self.offset)
        return torch.stack([z, torch.zeros_like(z)], dim=1)


def checker_image(size=32, square=(8, 8, 16, 16), amplitude=2.0, n=1):
    """Zeros, with a ±amplitude checkerboard inside the square: mean colour 0, S energy a²."""
    x = torch.zeros(n, 3, size, size)
    x0, y0, x1, y1 = square
    yy, xx = torch.meshgrid(torch.arange(y0, y1), torch.arange(x0, x1), indexing="ij")
    x[..., y0:y1, x0:x1] = amplitude * (1 - 2 * ((yy + xx) % 2)).float()
    return x


def energy(x, square):
    x0, y0, x1, y1 = square
    return x[..., y0:y1, x0:x1].pow(2).mean(dim=(1, 2, 3))


# ----------------------------------------------------------------------------- interrogate


def test_interrogate_constant_box_hand_computed():
    net, x = SquareModel(), checker_image()
    # the left half of S goes to the mean colour (0): S keeps half its energy, 4 -> 2
    r = interrogate(net, x, (8, 8, 12, 16), target=0, perturbation="constant", score="logit")
    torch.testing.assert_close(r.before, torch.tensor([[4.0]]))
    torch.testing.assert_close(r.after, torch.tensor([[2.0]]))
    assert r.lines() == [["class_0: 4.000 → 2.000"]]
    assert torch.equal(r.perturbed[0, :, 8:16, 8:12], torch.zeros(3, 8, 4))
    assert torch.equal(r.perturbed[0, :, :, 12:], x[0, :, :, 12:])
    assert r.masks.shape == (1, 1, 32, 32) and float(r.masks.sum()) == 32 * 32 - 32
    # probabilities: sigmoid of the logit difference
    r = interrogate(net, x, (8, 8, 12, 16), target=0, perturbation="constant")
    torch.testing.assert_close(r.before, torch.sigmoid(torch.tensor([[4.0]])))
    torch.testing.assert_close(r.after, torch.sigmoid(torch.tensor([[2.0]])))
    torch.testing.assert_close(r.change, r.after - r.before)


@pytest.mark.parametrize("kind", ["blur", "constant", "noise"])
def test_interrogate_box_outside_or_over_the_square(kind):
    net, x = SquareModel(), checker_image(n=2)
    x[1] *= 0.5  # second image: energy 1
    boxes = [(20, 0, 32, 32), (8, 8, 16, 16)]  # beside S / exactly S
    r = interrogate(net, x, boxes, target="top2", perturbation=kind, score="logit", seed=3)
    assert r.targets.tolist() == [[0, 1], [0, 1]]
    torch.testing.assert_close(r.before[:, 0], torch.tensor([4.0, 1.0]))
    torch.testing.assert_close(r.after[0], r.before[0])  # S untouched: nothing changes
    full = Perturbation(x, kind, seed=3).fully_perturbed()
    torch.testing.assert_close(r.after[1, 0], energy(full, (8, 8, 16, 16))[1])
    assert torch.equal(r.boxes, torch.tensor(boxes))


def test_interrogate_blur_uses_the_fully_blurred_image_inside_the_box():
    net, x = SquareModel(), checker_image()
    r = interrogate(net, x, (8, 8, 16, 12), target=0, score="logit", sigma=4.0)
    blurred = gaussian_blur(x, 4.0)
    want = 0.5 * 4.0 + 0.5 * float(energy(blurred, (8, 8, 16, 12)))  # top half blurred
    assert abs(float(r.after) - want) < 1e-5
    torch.testing.assert_close(r.perturbed[..., 8:12, 8:16], blurred[..., 8:12, 8:16])


def test_interrogate_leaves_the_model_as_it_came_and_labels_from_the_model():
    net = tiny_cnn()
    net.train()
    before = snapshot(net)
    loaded = LoadedModel(net=net, class_names=["a", "b", "c", "d", "e"], name="tiny")
    x = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    r = interrogate(loaded, x, (2, 2, 10, 10), target=[[1, 3], [0, 4]], perturbation="noise")
    assert_unchanged(before, net)
    assert r.before.shape == r.after.shape == (2, 2)
    assert r.lines(loaded)[1][0].startswith("a: ") and r.lines(loaded)[1][1].startswith("e: ")
    # the same call again gives the same numbers (seeded noise)
    again = interrogate(loaded, x, (2, 2, 10, 10), target=[[1, 3], [0, 4]], perturbation="noise")
    assert torch.equal(again.after, r.after)


@pytest.mark.parametrize(
    "box, message",
    [
        ((5, 5, 5, 9), "empty or reversed"),
        ((9, 5, 3, 9), "empty or reversed"),
        ((0, 0, 33, 9), "reaches outside the 32x32 image"),
        ((-1, 0, 3, 9), "reaches outside"),
        ((0, 0, 3), "four numbers"),
        ("0,0,3,3", "four numbers"),
        ((0.5, 0, 3, 3), "integer pixel coordinates"),
        ([(0, 0, 3, 3)] * 3, "3 boxes for 1 images"),
    ],
)
def test_interrogate_refuses_malformed_boxes(box, message):
    with pytest.raises(ValueError, match=message):
        interrogate(SquareModel(), checker_image(), box)


def test_box_to_input_through_resize_and_centre_crop():
    spec = Preprocess(crop=224, resize=256)  # 600x400 photo -> 384x256, crop at (80, 16)
    m = box_to_input((200, 100, 400, 300), (600, 400), spec)
    assert m.box == (48, 48, 176, 176) and not m.clipped
    assert m.exact == (48.0, 48.0, 176.0, 176.0)
    m = box_to_input((0, 0, 200, 200), (600, 400), spec)  # reaches left of and above the crop
    assert m.box == (0, 0, 48, 112) and m.clipped
    with pytest.raises(ValueError, match="entirely outside"):
        box_to_input((0, 0, 100, 400), (600, 400), spec)  # x 0..64 in the resized image
    with pytest.raises(ValueError, match="reaches outside the 600x400"):
        box_to_input((0, 0, 601, 10), (600, 400), spec)
    # resize=None: the whole photo is squeezed to 224x224 (x by 224/600, y by 224/400)
    m = box_to_input((150, 100, 450, 300), (600, 400), Preprocess(crop=224, resize=None))
    assert m.box == (56, 56, 168, 168) and not m.clipped
    m = box_to_input((0, 0, 1, 1), (600, 400), Preprocess(crop=224, resize=None))
    assert m.box == (0, 0, 1, 1)  # at least one pixel wide


# ----------------------------------------------------------------------------- smallest box


def test_normalized_score_and_box_helpers_by_hand():
    p = torch.tensor([0.5, 0.1, 0.9, 0.3])
    got = normalized_score(p, torch.tensor([0.9, 0.9, 0.9, 0.05]), torch.tensor(0.1))
    torch.testing.assert_close(got[:3], torch.tensor([0.5, 0.0, 1.0]))
    assert math.isnan(float(got[3]))  # blurring everything does not lower the score
    m = box_masks(torch.tensor([[1, 0, 3, 2], [0, 0, 0, 0]]), (3, 4))
    assert m[0, 0].tolist() == [[1, 0, 0, 1], [1, 0, 0, 1], [1, 1, 1, 1]]
    assert float(m[1].min()) == 1.0  # an empty box keeps everything


def test_tightest_boxes_by_hand():
    s = torch.zeros(6, 8)
    s[1, 2], s[4, 6], s[3, 3] = 10.0, 5.0, 8.0
    s[0, 0] = -10.0  # the minimum maps to 0
    n = normalize_maps(s)
    assert float(n[0, 0]) == 0 and float(n[1, 2]) == 1 and abs(float(n[2, 2]) - 0.5) < 1e-6
    boxes = tightest_boxes(n, [0.0, 0.5, 0.6, 0.8, 0.95, 1.0])
    assert boxes.tolist() == [
        [0, 0, 8, 6],  # h = 0: everything
        [0, 0, 8, 6],  # >= 0.5: every pixel but the minimum (zeros map to 0.5)
        [2, 1, 7, 5],  # >= 0.6: the three peaks (5 maps to 0.75)
        [2, 1, 4, 4],  # >= 0.8: values 10 and 8 (0.9)
        [2, 1, 3, 2],  # >= 0.95: the maximum only
        [2, 1, 3, 2],
    ]
    flat = tightest_boxes(normalize_maps(torch.ones(1, 4, 4)), [0.0, 0.1])
    assert flat.tolist() == [[[0, 0, 4, 4], [-1, -1, -1, -1]]]  # constant map: no box above 0


def _maps(size=32, regions=((8, 8, 16, 16),), values=(1.0,)):
    m = torch.zeros(size, size)
    for (x0, y0, x1, y1), v in zip(regions, values):
        m[y0:y1, x0:x1] = v
    return m


def test_smallest_deleting_box_is_the_known_square():
    net, x = SquareModel(), checker_image(n=2)
    good = torch.stack([_maps(), _maps()]).unsqueeze(1)  # (2, 1, 32, 32): S exactly
    res = deletion_boxes(net, x, good, target=0, score="logit")
    # h = 0 gives the whole image, every h > 0 gives S
    assert res.boxes[0, 0, 0].tolist() == [0, 0, 32, 32]
    assert (res.boxes[0, 0, 1:] == torch.tensor([8, 8, 16, 16])).all()
    blurred = gaussian_blur(x, 10.0)
    pb = energy(blurred, (8, 8, 16, 16))
    torch.testing.assert_close(res.p0[:, 0], torch.tensor([4.0, 4.0]))
    torch.testing.assert_close(res.pb[:, 0], pb)
    # blurring S is blurring everything as far as the score goes: normalised score 0
    assert float(res.normalized[..., 1:].abs().max()) < 1e-6
    assert torch.equal(res.smallest_area, torch.full((2, 1, 4), 64 / 1024))
    assert (res.smallest_box == torch.tensor([8, 8, 16, 16])).all()
    summary = res.summary()
    assert [c.reached for c in summary] == [2, 2, 2, 2]
    assert abs(summary[0].mean_area - 0.0625) < 1e-9 and summary[0].sem == 0.0


def test_partial_box_normalisation_by_hand():
    # the map ranks the left half of S first: h in (0.5, 1] gives the left half only
    net, x = SquareModel(), checker_image()
    m = _maps(regions=((8, 8, 16, 16), (8, 8, 12, 16)), values=(0.5, 1.0)).view(1, 1, 32, 32)
    res = deletion_boxes(net, x, m, target=0, score="logit")
    assert res.boxes[0, 0, 6].tolist() == [8, 8, 12, 16]
    blurred = gaussian_blur(x, 10.0)
    p0, pb = 4.0, float(energy(blurred, (8, 8, 16, 16)))
    p_half = 0.5 * float(energy(blurred, (8, 8, 12, 16))) + 0.5 * 4.0
    want = (p_half - pb) / (p0 - pb)
    assert 0.3 < want < 0.7
    torch.testing.assert_close(res.normalized[0, 0, 6:], torch.full((5,), want))
    # the half box never reaches 80 %, so the smallest box for every level is all of S
    assert res.smallest_area[0, 0].tolist() == [0.0625] * 4


def test_compare_methods_table_and_one_batch_per_image():
    net, x = SquareModel(), checker_image(n=2)
    good = torch.stack([_maps(), _maps()]).unsqueeze(1)
    bad = torch.stack([_maps(regions=((20, 20, 28, 28),))] * 2).unsqueeze(1)  # beside S
    targets = torch.zeros(2, 1, dtype=torch.long)
    expl = [
        cl.Explanation(maps=good, targets=targets, method="good", inputs=x),
        cl.Explanation(maps=bad, targets=targets, method="bad", inputs=x),
        cl.Explanation(maps=good.clone(), targets=targets, method="good", inputs=x),
    ]
    SquareModel.calls.clear()
    table = compare_deletion_boxes(net, expl)
    # per image one forward pass: original, fully blurred (= the h = 0 box), S, the square
    # beside it; plus the first pass over both images
    assert SquareModel.calls == [2, 4, 4]
    assert list(table.results) == ["good", "bad", "good-2"]
    assert [c.mean_area for c in table.rows["good"]] == [0.0625] * 4
    assert [c.mean_area for c in table.rows["bad"]] == [1.0] * 4  # only the whole image works
    assert table.rows["bad"][0].reached == 2 and table.rows["bad"][0].total == 2
    text = table.format()
    assert text.splitlines()[0].split() == ["method", "80%", "90%", "95%", "99%"]
    assert "0.062 ± 0.000 (2/2)" in text and "1.000 ± 0.000 (2/2)" in text
    assert "64 ± 0 (2/2)" in table.format(pixels=True)
    json.dumps(table.to_dict(), allow_nan=False)
    ET.fromstring(table.svg())
    # batch_size splits the passes and changes nothing else
    SquareModel.calls.clear()
    small = compare_deletion_boxes(net, expl, batch_size=3)
    assert SquareModel.calls == [2, 3, 1, 3, 1]
    assert torch.equal(small.results["bad"].normalized, table.results["bad"].normalized)
    with pytest.raises(ValueError, match="different images"):
        compare_deletion_boxes(net, [expl[0], cl.Explanation(good, targets, "x", inputs=-x)])


def test_deletion_boxes_on_a_real_method_and_refusals():
    net = tiny_cnn()
    before = snapshot(net)
    x = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    e = cl.attribute(net, x, "gradient", target="top2")
    res = deletion_boxes(net, None, e)
    assert res.method == "gradient" and res.smallest_area.shape == (2, 2, 4)
    assert torch.equal(res.targets, e.targets)
    assert_unchanged(before, net)
    with pytest.raises(ValueError, match="suppression levels"):
        deletion_boxes(net, None, e, levels=(80,))
    with pytest.raises(ValueError, match="pass the images"):
        deletion_boxes(net, None, e.maps, target=0)


# ----------------------------------------------------------------------------- representativeness


def test_simplified_masks_threshold_the_keep_mask_by_hand():
    m = torch.tensor([[0.0, 0.3, 0.6, 1.0]])  # (H=1, W=4)
    b = simplified_masks(m, alphas=[0.0, 0.5, 0.7], smooth=0)
    assert b.shape == (3, 1, 4)
    assert b[:, 0].tolist() == [[1, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1]]  # deleted: m < α


def test_representativeness_on_the_known_square():
    size, sq = 48, (16, 16, 32, 32)
    net, x = SquareModel(square=sq), checker_image(size=size, square=sq)
    mask = torch.ones(1, 1, size, size)
    mask[..., 16:32, 16:32] = 0  # the learned mask deletes S exactly
    alphas = [0.0, 0.25, 0.5]
    r = representativeness(net, x, mask, target=0, alphas=alphas, smooth=0, score="logit")
    torch.testing.assert_close(r.p0, torch.tensor([[4.0]]))
    assert float(r.pb["constant"]) == 0.0  # S becomes the mean colour, 0
    noise = Perturbation(x, "noise").fully_perturbed()
    torch.testing.assert_close(r.pb["noise"][0, 0], energy(noise, sq)[0])
    for kind in ("blur", "constant", "noise"):
        # α = 0 deletes nothing (1); any α > 0 deletes exactly S (0)
        torch.testing.assert_close(r.normalized[kind][0, 0], torch.tensor([1.0, 0.0, 0.0]))
        torch.testing.assert_close(r.mean[kind], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(r.deleted[0, 0], torch.tensor([0.0, 256 / 2304, 256 / 2304]))
    assert r.counted == {"blur": 1, "constant": 1, "noise": 1}

    # smoothed: the deleted region grows with α from nothing to a superset of S
    r = representativeness(net, x, mask, target=0, smooth=2.0, score="logit")
    assert r.alphas.shape == (20,)
    d = r.deleted[0, 0]
    assert float(d[0]) == 0 and bool((d[1:] >= d[:-1]).all()) and float(d[-1]) > 256 / 2304
    for kind in ("blur", "constant", "noise"):
        curve = r.mean[kind]
        assert float(curve[0]) == 1.0
        assert float(curve[15:].abs().max()) < 1e-5  # α >= 0.75: all of S is deleted
        assert bool(((curve >= -1e-5) & (curve <= 1 + 1e-5)).all())
    svg = r.svg()
    ET.fromstring(svg)
    assert "constant" in svg and "noise" in svg


def test_representativeness_takes_a_perturbation_explanation():
    size, sq = 48, (16, 16, 32, 32)
    net, x = SquareModel(square=sq), checker_image(size=size, square=sq)
    mask = torch.ones(1, 1, size, size)
    mask[..., 16:32, 16:32] = 0
    # the learned mask is the start: no step, one mask cell per pixel, no smoothing
    e = cl.attribute(net, x, "perturbation", target=0, iterations=0, init=mask, mask_scale=1,
                     mask_sigma=0.0)  # fmt: skip
    assert torch.equal(MaskResult.of(e).mask[0, 0, 0], mask[0, 0])
    r = representativeness(net, None, e, alphas=[0.0, 0.5], smooth=0, perturbations=["blur"])
    assert list(r.normalized) == ["blur"]
    torch.testing.assert_close(r.normalized["blur"][0, 0], torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="carries no learned mask"):
        representativeness(net, None, cl.Explanation(1 - mask, e.targets, "gradcam", inputs=x))
    with pytest.raises(ValueError, match="lie in \\[0, 1\\]"):
        representativeness(net, x, mask * 2, target=0)


# ----------------------------------------------------------------------------- regions


def test_window_means_and_keypoints_by_hand():
    m = torch.arange(25.0).view(1, 1, 5, 5)  # value = 5 * row + column
    w = window_means(m, 3)
    assert float(w[0, 0, 2, 2]) == 12.0  # interior: mean of rows 1-3, columns 1-3
    assert float(w[0, 0, 0, 0]) == (0 + 1 + 5 + 6) / 4  # corner: the 2x2 inside the image
    vals = keypoint_values(m, [[(3, 1), (0, 4)]], window=1)  # (x, y) = (column, row)
    assert vals[0].tolist() == [8.0, 20.0]
    vals = keypoint_values(m, [[(3.4, 0.6)]], window=3)  # rounds to (3, 1)
    assert float(vals[0]) == float(w[0, 0, 1, 3])
    with pytest.raises(ValueError, match="odd"):
        window_means(m, 4)
    with pytest.raises(ValueError, match="outside the 5x5 mask"):
        keypoint_values(m, [[(5, 0)]])


def test_region_test_groups_and_ratios_by_hand():
    masks = torch.ones(3, 8, 8)
    masks[:, :4] = 0.2  # top half: value 0.2 (salient); bottom half 1.0
    masks[1, 4:] = 0.6
    eyes = [[(1, 1), (6, 1)], [(3, 2)], []]  # third image: no eyes
    feet = [[(1, 6)], [(2, 6), (5, 6)], [(4, 6)]]
    groups = ["tiger", "tiger", "bison"]
    t = region_test(masks, {"eyes": eyes, "feet": feet}, "feet", "eyes", groups, window=3)
    torch.testing.assert_close(t.values["eyes"][:2], torch.tensor([0.2, 0.2]))
    assert math.isnan(float(t.values["eyes"][2]))
    torch.testing.assert_close(t.values["feet"], torch.tensor([1.0, 0.6, 1.0]))
    torch.testing.assert_close(t.ratio[:2], torch.tensor([5.0, 3.0]))
    tiger = t.groups["tiger"]
    assert tiger.images == 2 and abs(tiger.mean_ratio - 4.0) < 1e-6
    assert abs(tiger.ratio_of_means - 0.8 / 0.2) < 1e-6
    assert t.groups["bison"].images == 0 and math.isnan(t.groups["bison"].mean_ratio)
    assert t.groups["bison"].to_dict()["mean_ratio"] is None
    with pytest.raises(ValueError, match="no keypoints of type 'paws'"):
        region_test(masks, {"eyes": eyes}, "paws", "eyes")


# ----------------------------------------------------------------------------- charts


def test_nice_ticks():
    assert nice_ticks(0, 0.95) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(80, 99) == [80, 85, 90, 95, 100]
    assert nice_ticks(-1, 2.2) == [-1.0, 0.0, 1.0, 2.0, 3.0]
    assert nice_ticks(0, 0.3) == [0.0, 0.1, 0.2, 0.3]
    assert 3.0 in nice_ticks(3, 3)


def test_line_chart_escapes_text_and_breaks_lines_at_gaps():
    series = {"blur": [1.0, 0.5, None, 0.1], '<script>alert("x")</script>': [0.2, 0.3, 0.4, 0.5]}
    svg = line_chart(series, x=[0, 0.25, 0.5, 0.75], title="A & B", xlabel="α", ylabel="<y>")
    root = ET.fromstring(svg)  # well-formed XML
    assert "<script" not in svg and "&lt;script&gt;" in svg and "A &amp; B" in svg
    ns = "{http://www.w3.org/2000/svg}"
    groups = root.findall(f".//{ns}g[@class='series']")
    assert [g.get("data-name") for g in groups] == list(series)
    assert len(groups[0].findall(f"{ns}polyline")) == 2  # the gap splits "blur"
    assert len(groups[1].findall(f"{ns}polyline")) == 1
    assert len(groups[0].findall(f"{ns}circle")) == 3
    ticks = [t.text for t in root.iter(f"{ns}text") if t.get("class") == "xtick"]
    assert ticks == ["0.0", "0.2", "0.4", "0.6", "0.8"]
    assert svg == line_chart(
        series, x=[0, 0.25, 0.5, 0.75], title="A & B", xlabel="α", ylabel="<y>"
    )
    own_x = line_chart({"a": ([1, 2, 3], torch.tensor([3.0, 1.0, 2.0]))})
    ET.fromstring(own_x)
    with pytest.raises(ValueError, match="non-empty"):
        line_chart({})
    with pytest.raises(ValueError, match="3 values for 2 x positions"):
        line_chart({"a": [1, 2, 3]}, x=[0, 1])


# ----------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def coffee(tmp_path_factory):
    import skimage.data

    path = tmp_path_factory.mktemp("photos") / "coffee.jpg"
    Image.fromarray(skimage.data.coffee()).save(path, quality=95)
    return path


@pytest.mark.parametrize(
    "box, message",
    [
        ("1,2,3", "four numbers"),
        ("a,b,c,d", "four numbers"),
        ("1.5,2,3,4", "whole pixel"),
        ("10,10,5,20", "empty or reversed"),
        ("0,0,700,10", "reaches outside the 600x400"),
    ],
)
def test_cli_interrogate_malformed_boxes(coffee, tmp_path, box, message):
    result = runner.invoke(app, ["interrogate", str(coffee), "--box", box, "-o", str(tmp_path)])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert not list(tmp_path.iterdir())


def test_cli_interrogate_blurs_the_cup(coffee, tmp_path):
    # the bundled model squeezes the whole photo to 224x224 (no crop)
    args = ["interrogate", str(coffee), "--box", "170,15,410,300", "--target", "top2"]
    result = runner.invoke(app, [*args, "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "= (63, 8, 153, 168) in the 224x224 model input" in result.stdout
    lines = [ln for ln in result.stdout.splitlines() if "→" in ln]
    assert lines[0].startswith("espresso: 0.90") and float(lines[0].split("→")[1]) < 0.05
    assert lines[1].startswith("cup: ")
    assert Image.open(tmp_path / "coffee-blur.png").size == (224, 224)
    assert Image.open(tmp_path / "coffee-blur-compare.png").size == (454, 240)
    # the same box in input pixels; a box beyond the input is refused
    args = ["interrogate", str(coffee), "--coords", "input", "--perturbation", "constant"]
    result = runner.invoke(app, [*args, "--box", "63,8,153,168", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "coffee-constant.png").exists()
    result = runner.invoke(app, [*args, "--box", "0,0,225,10", "-o", str(tmp_path)])
    assert result.exit_code == 2 and "reaches outside the 224x224" in result.output


def test_cli_boxes_table(coffee, tmp_path):
    # a small pickled model keeps this fast; it gets ImageNet preprocessing (resize 256, crop 224)
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 5, stride=4),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )
    torch.save(net, tmp_path / "small.pt")
    args = ["boxes", str(coffee), str(coffee), "--methods", "gradcam,gradient", "--target", "1,2"]
    args += ["--model", str(tmp_path / "small.pt"), "--trust-checkpoint", "-o", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "80%" in result.stdout and "gradcam" in result.stdout
    assert "the 224x224 input" in result.stdout
    data = json.loads((tmp_path / "boxes.json").read_text())
    assert set(data["methods"]) == {"gradcam", "gradient"}
    assert len(data["methods"]["gradcam"]) == 4
    ET.fromstring((tmp_path / "boxes.svg").read_text())


# ----------------------------------------------------------------------------- bundled model


@pytest.mark.slow
def test_bundled_model_espresso_cup_box():
    model = cl.load_model()
    x = model.preprocess(cl.sample_images(["coffee"])["coffee"])
    box = box_to_input((170, 15, 410, 300), (600, 400), model.preprocess_spec).box
    r = interrogate(model, x, box, target=967)  # espresso
    # measured: 0.902 -> 0.006 (blur, σ0 = 10)
    assert abs(float(r.before) - 0.902) < 0.002
    assert abs(float(r.after) - 0.006) < 0.003
    spoon = box_to_input((320, 230, 410, 330), (600, 400), model.preprocess_spec).box
    r = interrogate(model, x, spoon, target=967)
    assert abs(float(r.after) - 0.930) < 0.005  # blurring the spoon makes it more espresso
