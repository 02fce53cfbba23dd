"""Metrics of cnnlens.evaluation on hand-worked examples."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import cnnlens as cl
from cnnlens.core.tensors import gaussian_blur
from cnnlens.evaluation import (
    AlphaSearch,
    DeletionAUC,
    PointingGame,
    RelevanceMass,
    RelevanceRankAccuracy,
    SpuriousCueScore,
    WeakLocalisation,
    centre_map,
    choose_alpha,
    deletion_auc,
    insertion_auc,
    pointing_game,
    random_map,
    relevance_mass,
    relevance_rank_accuracy,
    spurious_cue_score,
    weak_localisation,
)
from cnnlens.evaluation.deletion import trapezoid_auc
from cnnlens.evaluation.localisation import box_iou, threshold_maps
from cnnlens.evaluation.pointing import max_points
from helpers import assert_unchanged, snapshot, tiny_cnn


def peak(h, w, y, x, value=1.0):
    m = torch.zeros(h, w)
    m[y, x] = value
    return m


# ----------------------------------------------------------------------------- pointing game


def test_pointing_perfect_map_hits_and_background_peak_misses():
    mask = torch.zeros(1, 20, 20, dtype=torch.bool)
    mask[0, 5:10, 5:10] = True
    on = peak(20, 20, 7, 7).unsqueeze(0)
    off = peak(20, 20, 18, 18).unsqueeze(0)
    assert pointing_game(on, mask).accuracy == 1.0
    res = pointing_game(off, mask, tolerance=2, reference_size=None)
    assert res.accuracy == 0.0 and res.n == 1 and res.hits == 0


def test_pointing_tolerance_scales_with_map_size_and_boundary_is_inclusive():
    # One mask pixel at (y=10, x=4); at 112 px the 15 px@224 radius is 7.5 px.
    mask = torch.zeros(4, 112, 112, dtype=torch.bool)
    mask[:, 10, 4] = True
    maps = torch.stack(
        [
            peak(112, 112, 10, 11),  # distance 7: hit
            peak(112, 112, 10, 12),  # distance 8: miss
            peak(112, 112, 14, 10),  # 4² + 6² = 52 <= 56.25: hit
            peak(112, 112, 15, 10),  # 5² + 6² = 61 > 56.25: miss
        ]
    )
    res = pointing_game(maps, mask)
    assert res.hit.tolist() == [True, False, True, False]
    # absolute radius override: 7 px exactly reaches the first point, not the third
    res = pointing_game(maps, mask, tolerance=7, reference_size=None)
    assert res.hit.tolist() == [True, False, False, False]
    # 8 px at a 112 px reference is 8 px here: every point but the last (sqrt 61 = 7.8) hits
    assert pointing_game(maps, mask, tolerance=8, reference_size=112).hit.tolist() == [
        True,
        True,
        True,
        True,
    ]
    assert pointing_game(maps, mask, tolerance=7.5, reference_size=112).hits == 2


def test_pointing_per_class_mean_differs_from_overall_and_difficult_subset():
    mask = torch.zeros(4, 16, 16, dtype=torch.bool)
    mask[:, 2:5, 2:5] = True
    hit, miss = peak(16, 16, 3, 3), peak(16, 16, 14, 14)
    maps = torch.stack([hit, hit, hit, miss])
    classes = [0, 0, 0, 1]
    difficult = [False, False, True, True]
    res = pointing_game(maps, mask, tolerance=1, classes=classes, difficult=difficult)
    assert res.accuracy == pytest.approx(0.75)
    assert res.class_accuracy == {0: 1.0, 1: 0.0}
    assert res.class_counts == {0: 3, 1: 1}
    assert res.mean_class_accuracy == pytest.approx(0.5)
    d = res.difficult
    assert d.n == 2 and d.hits == 1
    assert d.accuracy == pytest.approx(0.5) and d.mean_class_accuracy == pytest.approx(0.5)
    assert res.to_dict()["difficult"]["n"] == 2


def test_pointing_ties_use_the_centroid_constant_map_points_at_centre():
    n = 3
    maps = torch.ones(n, 21, 21)  # constant: points at (10, 10)
    centre = torch.zeros(n, 21, 21, dtype=torch.bool)
    centre[:, 10, 10] = True
    corner = torch.zeros(n, 21, 21, dtype=torch.bool)
    corner[:, 0, 0] = True
    assert pointing_game(maps, centre, tolerance=0, reference_size=None).accuracy == 1.0
    assert pointing_game(maps, corner, tolerance=3, reference_size=None).accuracy == 0.0
    # two equal peaks: the point lies between them and hits neither object
    two = peak(21, 21, 2, 2) + peak(21, 21, 2, 18)
    assert max_points(two[None]).tolist() == [[2.0, 10.0]]
    assert pointing_game(two[None], corner[:1], tolerance=3, reference_size=None).hits == 0


def test_pointing_empty_mask_is_skipped_and_accumulator_matches_function():
    gen = torch.Generator().manual_seed(0)
    maps = torch.rand(7, 24, 24, generator=gen)
    masks = torch.rand(7, 24, 24, generator=gen) > 0.8
    masks[3] = False
    classes = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    difficult = torch.tensor([1, 0, 1, 0, 1, 0, 1], dtype=torch.bool)
    whole = pointing_game(maps, masks, 2, classes, difficult)
    acc = PointingGame(2)
    for s in (slice(0, 3), slice(3, 7)):
        acc.update(maps[s], masks[s], classes[s], difficult[s])
    part = acc.compute()
    assert whole.skipped == 1 and whole.n == 6
    assert part.to_dict() == whole.to_dict()
    assert torch.equal(part.hit, whole.hit)
    acc.reset()
    assert acc.compute().n == 0


def test_pointing_accepts_explanations_and_resizes_maps_to_masks():
    maps = peak(8, 8, 1, 1)[None, None]
    expl = cl.Explanation(maps=maps, targets=torch.zeros(1, 1, dtype=torch.long), method="x")
    mask = torch.zeros(1, 32, 32, dtype=torch.bool)
    mask[0, 4:8, 4:8] = True  # where the 8 px peak lands at 32 px
    # the bilinear peak is a 2x2 plateau at rows/cols 5-6: its centroid (5.5, 5.5) is 0.7 px
    # from the nearest mask pixel centre
    assert pointing_game(expl, mask, tolerance=1, reference_size=None).accuracy == 1.0
    with pytest.raises(ValueError, match="targets per image"):
        pointing_game(torch.zeros(1, 2, 8, 8), mask)


# ----------------------------------------------------------------------------- weak localisation


def block_map():
    """Block A (rows 2-4, cols 2-5) at 1.0 and a stray pixel (8, 8) at 0.3."""
    m = torch.zeros(1, 10, 10)
    m[0, 2:5, 2:6] = 1.0
    m[0, 8, 8] = 0.3
    return m


A_BOX = (2, 2, 6, 5)  # x0, y0, x1, y1, end exclusive
BIG_BOX = (2, 2, 9, 9)


@pytest.mark.parametrize(
    "kind,alpha,box",
    [
        ("value", 0.5, A_BOX),
        ("value", 0.2, BIG_BOX),
        ("energy", 0.9, A_BOX),  # 12 of the 12.3 mass: 0.976 >= 0.9
        ("energy", 0.99, BIG_BOX),  # needs the stray pixel as well
        ("mean", 5.0, A_BOX),  # mean 0.123 -> cut 0.615
        ("mean", 2.0, BIG_BOX),  # cut 0.246
        ("mean", 10.0, None),  # cut 1.23: nothing selected, no box
    ],
)
def test_weak_localisation_boxes_and_iou(kind, alpha, box):
    res = weak_localisation(block_map(), [[A_BOX]], alpha, kind)
    if box is None:
        assert res.boxes[0].tolist() == [-1, -1, -1, -1]
        assert res.iou[0] == 0 and res.errors == 1
    elif box == A_BOX:
        assert res.boxes[0].tolist() == list(A_BOX)
        assert res.iou[0] == pytest.approx(1.0) and res.error == 0.0
    else:
        assert res.boxes[0].tolist() == list(BIG_BOX)
        assert res.iou[0] == pytest.approx(12 / 49) and res.error == 1.0


def test_energy_threshold_keeps_ties_together_and_empty_map_takes_everything():
    m = torch.tensor([[[1.0, 1.0, 0.5, 0.0]]])
    # 0.1 of the mass is reached by the first pixel, but its tie comes along
    assert threshold_maps(m, 0.1, "energy").tolist() == [[[True, True, False, False]]]
    # all the mass: positive pixels only, never the zeros
    assert threshold_maps(m, 1.0, "energy").tolist() == [[[True, True, True, False]]]
    assert threshold_maps(torch.zeros(1, 2, 2), 0.5, "energy").all()
    assert threshold_maps(-torch.ones(1, 2, 2), 0.5, "value").all()


def test_box_iou_by_hand_and_best_of_several_boxes():
    iou = box_iou(torch.tensor([[0, 0, 4, 4]]), torch.tensor([[[2, 2, 6, 6], [0, 0, 4, 2]]]))
    assert iou[0].tolist() == pytest.approx([4 / 28, 0.5])
    res = weak_localisation(block_map(), [[(0, 0, 1, 1), A_BOX]], 0.5, "value")
    assert res.iou[0] == pytest.approx(1.0)


def test_choose_alpha_picks_the_threshold_that_localises():
    # Object A (rows 2-5, cols 2-7) with a bright core; a stray pixel outside.
    m = torch.zeros(3, 12, 12)
    m[:, 2:6, 2:8] = 0.6
    m[:, 3:5, 4:6] = 1.0
    m[:, 10, 10] = 0.3
    gt = [[(2, 2, 8, 6)]] * 3
    choice = choose_alpha(m, gt, "value", alphas=[0.1, 0.5, 0.9])
    assert choice.alpha == 0.5
    assert choice.errors == [1.0, 0.0, 1.0] and choice.n == 3
    search = AlphaSearch("value", [0.1, 0.5, 0.9])
    search.update(m[:1], gt[:1]).update(m[1:], gt[1:])
    assert search.compute().to_dict() == choice.to_dict()
    # equal errors: the first alpha of the grid wins
    assert choose_alpha(m, gt, "value", alphas=[0.9, 0.95]).alpha == 0.9


def test_weak_localisation_accumulator_matches_function():
    gen = torch.Generator().manual_seed(1)
    maps = torch.rand(6, 16, 16, generator=gen) ** 4
    boxes = [[(i, i, 8 + i, 10)] for i in range(6)]
    whole = weak_localisation(maps, boxes, 0.6, "energy")
    acc = WeakLocalisation(0.6, "energy")
    acc.update(maps[:2], boxes[:2]).update(maps[2:], boxes[2:])
    part = acc.compute()
    assert part.to_dict() == whole.to_dict()
    assert torch.equal(part.boxes, whole.boxes)
    with pytest.raises(ValueError, match="kind"):
        weak_localisation(maps, boxes, 0.5, "median")


# ----------------------------------------------------------------------------- relevance


MAP_4X4 = torch.tensor(
    [
        [4.0, 3.0, 0.0, -1.0],
        [2.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 5.0, 0.0],
        [0.0, -2.0, 0.0, 1.0],
    ]
)


def top_left_mask():
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, :2, :2] = True
    return mask


def test_relevance_mass_and_rank_by_hand():
    # positive mass 16, of which 4 + 3 + 2 + 1 = 10 inside; top-4 = 5, 4, 3, 2 -> 3 inside
    assert relevance_mass(MAP_4X4[None], top_left_mask()).mean == pytest.approx(10 / 16)
    assert relevance_rank_accuracy(MAP_4X4[None], top_left_mask()).mean == pytest.approx(0.75)


def test_rank_accuracy_shares_ties_and_constant_map_scores_chance():
    m = torch.zeros(1, 4, 4)
    m[0, 0, 0] = 2.0
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 0, 0] = mask[0, 3, 3] = True
    # one sure hit, then 1 place shared by 15 tied zeros of which 1 is in the mask
    assert relevance_rank_accuracy(m, mask).mean == pytest.approx((1 + 1 / 15) / 2)
    const = relevance_rank_accuracy(torch.ones(1, 4, 4), top_left_mask())
    assert const.mean == pytest.approx(4 / 16)


def test_relevance_undefined_cases_are_counted():
    maps = torch.stack([MAP_4X4, -torch.ones(4, 4), MAP_4X4])
    masks = top_left_mask().repeat(3, 1, 1)
    masks[2] = False
    mass = relevance_mass(maps, masks)
    assert mass.n == 1 and mass.undefined == 2
    assert math.isnan(mass.values[1]) and math.isnan(mass.values[2])
    rank = relevance_rank_accuracy(maps, masks)
    assert rank.n == 2 and rank.undefined == 1  # no positive mass: all tied, chance level
    assert rank.values[1] == pytest.approx(0.25)


def test_relevance_accumulators_match_functions():
    gen = torch.Generator().manual_seed(2)
    maps = torch.randn(5, 12, 12, generator=gen)
    masks = torch.rand(5, 12, 12, generator=gen) > 0.7
    for acc, fn in (
        (RelevanceMass(), relevance_mass),
        (RelevanceRankAccuracy(), relevance_rank_accuracy),
    ):
        acc.update(maps[:2], masks[:2]).update(maps[2:], masks[2:])
        got, want = acc.compute(), fn(maps, masks)
        assert got.to_dict() == want.to_dict()
        assert torch.allclose(got.values, want.values, equal_nan=True)


# ----------------------------------------------------------------------------- spurious cue


def test_spurious_cue_score_by_hand():
    maps = torch.tensor(
        [[[3.0, 1.0], [0.0, -5.0]], [[1.0, 1.0], [1.0, 1.0]], [[0.0, 0.0], [0, -1]]]
    )
    cue = torch.zeros(3, 2, 2, dtype=torch.bool)
    cue[:, 0, 0] = True
    res = spurious_cue_score(maps, cue)
    assert res.values[:2].tolist() == pytest.approx([0.75, 0.25])
    assert math.isnan(res.values[2])
    assert res.n == 2 and res.undefined == 1 and res.mean == pytest.approx(0.5)
    acc = SpuriousCueScore().update(maps[:1], cue[:1]).update(maps[1:], cue[1:])
    assert acc.compute().to_dict() == res.to_dict()


# ----------------------------------------------------------------------------- deletion / insertion


class MeanPixel(nn.Module):
    """Logit = mean of all input values: the deletion curve is known in closed form."""

    def __init__(self, two_classes: bool = False):
        super().__init__()
        self.two = two_classes

    def forward(self, x):
        m = x.flatten(1).mean(1, keepdim=True)
        return torch.cat([m, torch.zeros_like(m)], 1) if self.two else m


X22 = torch.tensor([[[[4.0, 3.0], [2.0, 1.0]]]])
MAP22 = torch.tensor([[[0.1, 0.9], [0.5, 0.3]]])  # order: 3, 2, 1, 4


def test_deletion_curve_and_auc_by_hand():
    res = deletion_auc(MeanPixel(), X22, MAP22, 0, substrate="zero", step=1, score="logit")
    assert res.fractions.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert res.curves[0].tolist() == pytest.approx([2.5, 1.75, 1.25, 1.0, 0.0])
    # 0.25 * ((2.5+1.75) + (1.75+1.25) + (1.25+1) + (1+0)) / 2
    assert res.auc[0].item() == pytest.approx(1.3125, abs=1e-6)
    ins = insertion_auc(MeanPixel(), X22, MAP22, 0, substrate="zero", step=1, score="logit")
    assert ins.curves[0].tolist() == pytest.approx([0.0, 0.75, 1.25, 1.5, 2.5])
    assert ins.auc[0].item() == pytest.approx(1.1875, abs=1e-6)


def test_deletion_uneven_last_step_uses_true_fractions():
    res = deletion_auc(MeanPixel(), X22, MAP22, 0, substrate="zero", step=3, score="logit")
    assert res.fractions.tolist() == [0.0, 0.75, 1.0]
    assert res.curves[0].tolist() == pytest.approx([2.5, 1.0, 0.0])
    assert res.auc[0].item() == pytest.approx(0.75 * 3.5 / 2 + 0.25 * 0.5, abs=1e-6)
    assert trapezoid_auc(torch.tensor([[0.0, 1.0, 1.0]]), torch.tensor([0, 0.5, 1])).item() == 0.75


def test_deletion_ties_follow_raster_order_and_prob_score():
    res = deletion_auc(MeanPixel(True), X22, torch.ones(1, 2, 2), 0, substrate="zero", step=1)
    want = torch.sigmoid(torch.tensor([2.5, 1.5, 0.75, 0.25, 0.0]))
    assert torch.allclose(res.curves[0], want, atol=1e-6)


def test_insertion_starts_from_blur_by_default_and_ends_at_the_image():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 16, 16, generator=gen)
    net = MeanPixel()
    res = insertion_auc(net, x, torch.rand(2, 16, 16, generator=gen), 0, score="logit")
    assert res.substrate == "blur"
    assert torch.allclose(res.curves[:, 0], net(gaussian_blur(x, 5.0))[:, 0], atol=1e-5)
    assert torch.allclose(res.curves[:, -1], net(x)[:, 0], atol=1e-5)
    assert res.curves.shape[1] == 53  # 256 px in steps of ceil(256 / 56) = 5: 0, 5, ..., 255, 256
    assert deletion_auc(net, x, res.curves.new_ones(2, 16, 16), 0).substrate == "zero"


def test_deletion_on_a_cnn_batches_consistently_and_leaves_the_model_alone():
    net = tiny_cnn()
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(3, 3, 16, 16, generator=gen)
    expl = cl.attribute(net, x, method="gradient")
    before = snapshot(net)
    a = deletion_auc(net, None, expl, step=16, batch_size=1)
    b = deletion_auc(net, x, expl.maps, expl.targets, step=16, batch_size=7)
    assert_unchanged(before, net)
    assert torch.allclose(a.curves, b.curves, atol=1e-6)
    assert torch.equal(a.targets, expl.targets[:, 0])
    acc = DeletionAUC(net, step=16)
    acc.update(x[:1], expl.maps[:1], expl.targets[:1]).update(
        x[1:], expl.maps[1:], expl.targets[1:]
    )
    part = acc.compute()
    assert torch.allclose(part.auc, a.auc, atol=1e-6) and part.n == 3
    assert part.mean == pytest.approx(a.mean, abs=1e-6)


# ----------------------------------------------------------------------------- baselines


def test_baselines_centre_peaks_at_centre_and_random_is_seeded():
    c = centre_map(2, 21, 31)
    assert c.shape == (2, 21, 31) and c[0, 10, 15] == 1.0
    assert max_points(c).tolist() == [[10.0, 15.0], [10.0, 15.0]]
    even = centre_map(1, 20, 20)
    assert max_points(even).tolist() == [[9.5, 9.5]]  # four tied pixels: the true centre
    r1, r2 = random_map(2, 8, 8, seed=5), random_map(2, 8, 8, seed=5)
    assert torch.equal(r1, r2) and not torch.equal(r1, random_map(2, 8, 8, seed=6))
    assert 0 <= r1.min() and r1.max() < 1
