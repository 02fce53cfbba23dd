"""Parameter-randomisation sanity checks and the map similarity measures they use."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity
from torch import nn

import cnnlens as cl
from cnnlens.evaluation import SanityCheck, sanity_check, spearman, ssim
from cnnlens.evaluation.sanity import parameter_layers, randomise
from cnnlens.evaluation.similarity import average_ranks
from helpers import assert_unchanged, snapshot, tiny_cnn


def inputs(n=2, size=16, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def relu_cnn(seed: int = 0, c: int = 8) -> nn.Module:
    """A small VGG-like CNN (ReLU + max-pool), randomly initialised."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, c, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(c, c, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(c, 2 * c, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(2 * c, 2 * c, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(2 * c, 4 * c, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * c, 10),
    )


# ----------------------------------------------------------------------------- similarity


def test_average_ranks_and_spearman_match_scipy_with_ties():
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (3, 6, 7), generator=gen).float()  # many ties
    b = a + torch.randn(3, 6, 7, generator=gen)
    assert average_ranks(torch.tensor([[3.0, 1.0, 3.0, 2.0]])).tolist() == [[2.5, 0.0, 2.5, 1.0]]
    got = spearman(a, b)
    for i in range(3):
        want = spearmanr(a[i].flatten().numpy(), b[i].flatten().numpy()).statistic
        assert got[i].item() == pytest.approx(want, abs=1e-6)
    assert spearman(a, a).tolist() == pytest.approx([1.0] * 3)
    assert math.isnan(spearman(torch.ones(1, 4, 4), a[:1, :4, :4]).item())


def test_ssim_identical_is_one_and_matches_skimage():
    gen = torch.Generator().manual_seed(1)
    a = torch.rand(2, 24, 30, generator=gen)
    b = (a + 0.3 * torch.rand(2, 24, 30, generator=gen)).clamp(0, 1)
    b[1] = torch.rand(24, 30, generator=gen)
    assert ssim(a, a).tolist() == pytest.approx([1.0, 1.0], abs=1e-6)
    got = ssim(a, b, normalize=False)
    for i in range(2):
        want = structural_similarity(
            a[i].double().numpy(),
            b[i].double().numpy(),
            data_range=1.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        assert got[i].item() == pytest.approx(want, abs=1e-5)
    assert got[0] > got[1]  # the noisy copy is more alike than an unrelated map
    with pytest.raises(ValueError, match="window"):
        ssim(a[:, :8, :8], b[:, :8, :8])


# ----------------------------------------------------------------------------- randomisation


def test_layers_are_parameterised_modules_top_first():
    net = tiny_cnn()
    assert parameter_layers(net, inputs()) == ["8", "4", "1", "0"]


def test_randomise_is_seeded_and_changes_weights():
    a, b = nn.Linear(4, 3), nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    old = a.weight.detach().clone()
    randomise(a, 7)
    randomise(b, 7)
    assert torch.equal(a.weight, b.weight) and not torch.equal(a.weight, old)
    state = torch.random.get_rng_state()
    randomise(b, 8)
    assert torch.equal(state, torch.random.get_rng_state()), "global RNG must not move"


@pytest.mark.parametrize("mode", ["cascading", "independent"])
def test_sanity_check_leaves_model_alone_and_gradient_decorrelates(mode):
    net = tiny_cnn()
    net.train()  # a training-mode model must come back in training mode
    x = inputs(3, 16, seed=2)
    before = snapshot(net)
    res = sanity_check(net, x, "gradient", mode=mode)
    assert_unchanged(before, net)
    assert res.steps == ["original", "8", "4", "1", "0"] and res.layers == res.steps[1:]
    assert res.spearman.shape == res.spearman_abs.shape == res.ssim.shape == (5, 3)
    # step 0 (an unrandomised copy) reproduces the maps exactly
    assert torch.allclose(res.spearman[0], torch.ones(3))
    assert torch.allclose(res.ssim[0], torch.ones(3), atol=1e-6)
    # every model with its logits layer re-initialised explains something else
    assert res.spearman[1:].mean() < 0.6
    assert res.ssim[1:].mean() < 0.6
    assert res.maps is None and res.original.shape == (3, 16, 16)


def test_cascading_and_independent_share_the_random_weights_of_a_layer():
    net, x = tiny_cnn(), inputs(2, 16, seed=3)
    cas = sanity_check(net, x, "gradient", mode="cascading", keep_maps=True)
    ind = sanity_check(net, x, "gradient", mode="independent", keep_maps=True)
    # the first step randomises the same top layer with the same seed in both schedules
    assert torch.equal(cas.maps[1], ind.maps[1])
    # deeper steps differ: cascading keeps the upper layers random, independent restores them
    assert not torch.equal(cas.maps[-1], ind.maps[-1])
    other = sanity_check(net, x, "gradient", mode="cascading", seed=1, keep_maps=True)
    assert not torch.equal(other.maps[1], cas.maps[1])


def test_targets_stay_fixed_to_the_original_model():
    net, x = tiny_cnn(), inputs(3, 16, seed=4)
    top = net(x).argmax(1)
    res = sanity_check(net, x, "gradient", target=None, keep_maps=True)
    assert torch.equal(res.targets, top)
    fixed = cl.attribute(net, x, method="gradient", target=top)
    assert torch.allclose(res.original, fixed.maps[:, 0])


def test_layer_selection_module_parameters_and_loaded_models():
    net = tiny_cnn()
    x = inputs(2, 16, seed=5)
    res = sanity_check(net, x, "gradient", layers=["0", "8"])
    assert res.layers == ["8", "0"]  # sorted top first whatever the order given
    with pytest.raises(cl.LayerError):
        sanity_check(net, x, "gradient", layers=["nope"])
    # a module-valued method parameter is pointed at the randomised copy
    loaded = cl.LoadedModel(net=net, class_names=[f"c{i}" for i in range(5)], name="tiny")
    before = snapshot(net)
    res = sanity_check(loaded, x, "gradcam", layer=net[4], layers=["8"])
    assert_unchanged(before, net)
    assert res.steps == ["original", "8"]
    assert torch.allclose(res.spearman[0], torch.ones(2))
    with pytest.raises(ValueError, match="one target"):
        sanity_check(net, x, "gradient", target="top2")


def test_accumulator_equals_one_call():
    net, x = tiny_cnn(), inputs(4, 16, seed=6)
    whole = sanity_check(net, x, "gradient", mode="cascading")
    acc = SanityCheck(net, "gradient", mode="cascading")
    acc.update(x[:1]).update(x[1:])
    part = acc.compute()
    assert part.steps == whole.steps
    for name in ("spearman", "spearman_abs", "ssim"):
        assert torch.allclose(getattr(part, name), getattr(whole, name), atol=1e-5)
    assert torch.equal(part.targets, whole.targets)
    assert part.to_dict()["n"] == 4


def test_guided_backprop_survives_randomisation_better_than_gradient():
    """Adebayo et al. fig. 2: guided backprop barely depends on the upper layers' weights.

    On a random ReLU/max-pool CNN the guided maps keep a rank correlation of about 0.6
    on average over the cascade, the gradient's about 0.25 (over 12 seeds the gap was
    0.23 to 0.46).
    """
    net = relu_cnn(seed=0)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(100))
    grad = sanity_check(net, x, "gradient").spearman[1:]
    guided = sanity_check(net, x, "guided_backprop").spearman[1:]
    assert guided.mean() > grad.mean() + 0.15
    assert guided[0].mean() > 0.7  # logits layer randomised: guided maps nearly unchanged
    assert grad[0].mean() < 0.5


def test_similarity_summary_is_json_friendly():
    res = sanity_check(tiny_cnn(), inputs(2, 16, seed=7), "gradient", layers=["8"])
    d = res.to_dict()
    assert d["steps"] == ["original", "8"] and len(d["spearman"]) == 2
    assert d["spearman"][0] == pytest.approx(1.0)
    assert np.isfinite(d["ssim"]).all()
