"""Adversarial defence (Fong & Vedaldi 2017, sec. 5.5): attack, detector, label recovery."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import cnnlens as cl
from cnnlens.core.masks import MaskResult
from cnnlens.models.base import IMAGENET_MEAN, IMAGENET_STD, LoadedModel, Preprocess
from cnnlens.perturbation.adversarial import (
    default_steps,
    detection_accuracy,
    ifgsm,
    label_recovery,
    pair_folds,
)
from helpers import assert_unchanged, snapshot, tiny_cnn

EPS = 8 / 255


def _normalise(pixels, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    return (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def _raw_pixels(x, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Pixels without clamping, so out-of-range values would show."""
    return x * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def pixels():
    g = torch.Generator().manual_seed(1)
    p = torch.rand(4, 3, 24, 24, generator=g)
    p[0, :, :4] = 0.0  # pixels at the ends of the range: the clip must hold there too
    p[1, :, :4] = 1.0
    return p


def test_default_steps_follow_kurakin():
    assert default_steps(8 / 255) == 10  # min(8 + 4, 1.25 * 8)
    assert default_steps(16 / 255) == 20  # min(16 + 4, 1.25 * 16)
    assert default_steps(2 / 255) == 2  # 1.25 * 2 = 2.5, rounded to even
    assert default_steps(0.0) == 1


def test_ifgsm_stays_in_the_ball_and_the_pixel_range(pixels):
    net = tiny_cnn()
    before = snapshot(net)
    x = _normalise(pixels)
    adv = ifgsm(net, x, steps=12, step=2 / 255)  # steps overshoot ε: the clip must bind
    assert adv.shape == x.shape and adv.dtype == x.dtype
    p = _raw_pixels(adv)
    assert float((p - pixels).abs().max()) <= EPS + 1e-5
    assert float((p - pixels).abs().max()) >= EPS - 1e-5  # it did reach the boundary
    assert float(p.min()) >= -1e-5 and float(p.max()) <= 1 + 1e-5
    assert_unchanged(before, net)


def test_ifgsm_uses_the_models_own_normalisation(pixels):
    spec = Preprocess(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    model = LoadedModel(tiny_cnn(), preprocess_spec=spec)
    x = _normalise(pixels, spec.mean, spec.std)
    adv = ifgsm(model, x, epsilon=4 / 255)
    p = _raw_pixels(adv, spec.mean, spec.std)
    assert float((p - pixels).abs().max()) <= 4 / 255 + 1e-5
    assert float(p.min()) >= -1e-5 and float(p.max()) <= 1 + 1e-5


def test_ifgsm_lowers_the_attacked_class_and_is_deterministic(pixels):
    net = tiny_cnn().eval()
    x = _normalise(pixels)
    with torch.no_grad():
        clean = F.softmax(net(x), 1)
    top = clean.argmax(1)
    adv = ifgsm(net, x, epsilon=16 / 255)
    with torch.no_grad():
        after = F.softmax(net(adv), 1)
    rows = torch.arange(len(x))
    assert bool((after[rows, top] < clean[rows, top]).all())
    assert torch.equal(adv, ifgsm(net, x, epsilon=16 / 255))
    # an explicit label is attacked instead of the prediction
    other = (top + 1) % 5
    adv2 = ifgsm(net, x, other, epsilon=16 / 255)
    with torch.no_grad():
        after2 = F.softmax(net(adv2), 1)
    assert bool((after2[rows, other] < clean[rows, other]).all())


def test_ifgsm_edge_cases(pixels):
    net = tiny_cnn()
    x = _normalise(pixels)
    assert torch.allclose(ifgsm(net, x, epsilon=0.0), x, atol=1e-6)
    assert torch.allclose(ifgsm(net, x, steps=0), x, atol=1e-6)
    start = ifgsm(net, x, steps=0, random_start=True, seed=3)
    assert 0 < float((_raw_pixels(start) - pixels).abs().max()) <= EPS + 1e-5
    with pytest.raises(ValueError, match="epsilon"):
        ifgsm(net, x, epsilon=-1.0)
    with pytest.raises(ValueError, match="one label per image"):
        ifgsm(net, x, "top2")


# ----------------------------------------------------------------------------- detection


def _blobs(n: int, g: torch.Generator, size: int = 32) -> torch.Tensor:
    """One Gaussian blob per map at a random place: smooth, single-region maps."""
    yy, xx = torch.meshgrid(torch.arange(size * 1.0), torch.arange(size * 1.0), indexing="ij")
    c = torch.randint(6, size - 6, (n, 2), generator=g).float()
    d2 = (yy - c[:, :1, None]) ** 2 + (xx - c[:, 1:, None]) ** 2
    return torch.exp(-d2 / (2 * 4.0**2)).unsqueeze(1)


def test_pair_folds_are_balanced_and_seeded():
    f = pair_folds(13, 5, seed=2)
    assert f.shape == (13,)
    assert sorted(torch.bincount(f).tolist()) == [2, 2, 3, 3, 3]
    assert torch.equal(f, pair_folds(13, 5, seed=2))
    assert sorted(pair_folds(3, 5).tolist()) == [0, 1, 2]  # capped: leave one pair out
    with pytest.raises(ValueError):
        pair_folds(1, 5)


@pytest.mark.parametrize("classifier", ["cnn", "logistic"])
def test_detection_separable_maps(classifier):
    g = torch.Generator().manual_seed(0)
    clean = _blobs(16, g)
    adv = torch.rand(16, 1, 32, 32, generator=g)  # scattered noise
    d = detection_accuracy(clean, adv, folds=4, classifier=classifier, epochs=60, size=16)
    assert d.accuracy >= 0.95 and d.pooled >= 0.95
    assert len(d.fold_accuracies) == 4 and d.n == 16
    assert d.predictions.shape == (2, 16)


@pytest.mark.parametrize("classifier", ["cnn", "logistic"])
def test_detection_chance_on_identically_distributed_maps(classifier):
    g = torch.Generator().manual_seed(1)
    a, b = _blobs(40, g), _blobs(40, g)
    d = detection_accuracy(a, b, folds=5, classifier=classifier, epochs=60, size=16)
    assert abs(d.accuracy - 0.5) <= 0.2


def test_detection_keeps_twins_in_one_fold():
    # Identical twins with opposite labels: in the same test fold the classifier
    # gives both the same answer, so every fold scores exactly one of each pair.
    # Split across folds, a memorising classifier would score below chance.
    g = torch.Generator().manual_seed(2)
    maps = torch.rand(12, 24, 24, generator=g)
    d = detection_accuracy(maps, maps.clone(), folds=4, classifier="logistic", l2=1e-3)
    assert d.fold_accuracies == [0.5] * 4
    assert torch.allclose(d.predictions[0], d.predictions[1])
    assert torch.equal(d.folds, pair_folds(12, 4, seed=0))


def test_detection_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="one adversarial map per clean map"):
        detection_accuracy(torch.rand(4, 8, 8), torch.rand(5, 8, 8))
    with pytest.raises(ValueError, match="one map per image"):
        detection_accuracy(torch.rand(4, 2, 8, 8), torch.rand(4, 2, 8, 8))
    with pytest.raises(ValueError, match="classifier"):
        detection_accuracy(torch.rand(4, 8, 8), torch.rand(4, 8, 8), classifier="svm")


# ----------------------------------------------------------------------------- label recovery


def test_label_recovery_with_trivial_masks(pixels):
    net = tiny_cnn()
    before = snapshot(net)
    x = _normalise(pixels)
    adv = ifgsm(net, x, epsilon=32 / 255)
    ones = torch.ones(4, 1, 24, 24)
    r = label_recovery(net, x, adv, ones, top_k=3)
    # keeping everything gives the adversarial image back
    assert torch.equal(r.masked_topk, r.adversarial_topk)
    assert r.masked_topk.shape == (4, 3)
    rates = r.rates(only_successful=False)
    assert rates["masked_top1"] == rates["adversarial_top1"]
    # deleting everything gives the fully blurred image
    r0 = label_recovery(net, x, adv, torch.zeros(4, 24, 24), top_k=3)
    assert torch.equal(r0.masked_topk, r0.perturbed_topk)
    # an "attack" that changed nothing is recovered trivially, and filtered out
    same = label_recovery(net, x, x, ones)
    assert not bool(same.attack_success.any())
    assert same.rates(only_successful=False)["masked_top1"] == 1.0
    assert same.rates()["n"] == 0
    assert_unchanged(before, net)


@pytest.mark.parametrize(
    "method, params",
    [
        ("meaningful_perturbation", {"iterations": 3, "mask_scale": 4}),
        ("extremal", {"areas": (0.2, 0.5), "iterations": 3}),
    ],
)
def test_label_recovery_takes_either_mask_method(pixels, method, params):
    net = tiny_cnn()
    x = _normalise(pixels)
    adv = ifgsm(net, x, epsilon=32 / 255)
    e = cl.attribute(net, adv, method, **params)  # the adversarial top-1 class
    r = label_recovery(net, x, adv, e, top_k=3)
    # the keep-masks of the first target and the first area, as a tensor would give them
    mask = MaskResult.of(e).mask[:, 0, 0]
    want = label_recovery(net, x, adv, mask, top_k=3)
    assert torch.equal(r.masked_topk, want.masked_topk) and r.to_dict() == want.to_dict()
    assert torch.equal(label_recovery(net, x, adv, MaskResult.of(e), top_k=3).masked_topk,
                       r.masked_topk)  # fmt: skip
    with pytest.raises(ValueError, match="carries no learned mask"):
        label_recovery(net, x, adv, cl.attribute(net, adv, "gradient"))
