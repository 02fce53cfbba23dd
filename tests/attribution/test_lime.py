"""LIME over segments, the weighted surrogates and the segmentations.

Hand-computed case: ``Cells`` from ``test_shapley`` reads the indicators ``a, b, c, d``
of the four 2x2 cells of a 4x4 image (1 on channel 0, zero baseline); its class 1 logit
``a + 2 b - d`` is linear in them, so a weighted least-squares surrogate recovers the
coefficients (1, 2, 0, -1) and intercept 0 exactly, with R^2 = 1, whatever the kernel.

Cross-checks: the surrogates against scikit-learn on the same data; LIME's kernel and
lasso against Captum's own kernel function and scikit-learn's ``Lasso`` on the very
samples LIME drew; LIME against Captum 0.9.0's ``Lime`` (its defaults: lasso 0.01,
cosine kernel of width 1) in expectation on a tiny CNN.
"""

from __future__ import annotations

import pytest
import torch
from test_shapley import Cells, cell_values, cells_input, pearson, segment_values

import cnnlens as cl
from cnnlens.attribution import lime as lm
from cnnlens.attribution.segments import Segmentation, grid_labels, segment
from cnnlens.attribution.surrogate import constrained_fit, weighted_fit
from cnnlens.core.explanation import Explanation
from cnnlens.models.base import LoadedModel, Preprocess
from helpers import tiny_cnn

sklearn = pytest.importorskip("sklearn.linear_model")


def test_linear_score_is_recovered_exactly():
    out = lm.lime(
        LoadedModel.wrap(Cells()), cells_input(), 1, segments="grid", n_segments=4,
        samples=50, surrogate="linear",
    )  # fmt: skip
    torch.testing.assert_close(cell_values(out.maps[0, 0]), torch.tensor([1.0, 2.0, 0.0, -1.0]))
    assert abs(out.extras["intercept"].item()) < 1e-6
    assert out.extras["r2"].item() == pytest.approx(1.0, abs=1e-9)
    assert out.extras["segments"].counts == (4,)


@pytest.mark.parametrize("model", ["linear", "ridge", "lasso"])
def test_surrogates_equal_scikit_learn(model):
    g = torch.Generator().manual_seed(0)
    X = (torch.rand(300, 12, generator=g) < 0.5).double()
    Y = X @ torch.randn(12, 2, generator=g, dtype=torch.float64)
    Y += 0.3 * torch.randn(300, 2, generator=g, dtype=torch.float64)
    w = torch.rand(300, generator=g, dtype=torch.float64) + 0.2
    coef, intercept = weighted_fit(X, Y, w, model=model, alpha=0.05)
    kind = {"linear": "LinearRegression", "ridge": "Ridge", "lasso": "Lasso"}[model]
    extra = {"linear": {}, "ridge": {"alpha": 0.05}, "lasso": {"alpha": 0.05, "tol": 1e-12}}
    for t in range(2):
        ref = getattr(sklearn, kind)(**extra[model]).fit(X.numpy(), Y[:, t].numpy(), w.numpy())
        torch.testing.assert_close(coef[t], torch.from_numpy(ref.coef_), atol=1e-8, rtol=0)
        assert intercept[t].item() == pytest.approx(ref.intercept_, abs=1e-8)
    if model == "lasso":
        assert (coef == 0).any()  # the penalty is strong enough to drop a feature


def test_constrained_fit_meets_both_constraints_and_is_exact_on_additive_data():
    g = torch.Generator().manual_seed(1)
    X = (torch.rand(40, 5, generator=g) < 0.5).double()
    phi = torch.tensor([[1.0, -2.0, 0.5, 0.0, 3.0]], dtype=torch.float64)
    coef = constrained_fit(X, 0.7 + X @ phi.T, torch.ones(40), torch.tensor([0.7]),
                           torch.tensor([0.7 + 2.5]))  # fmt: skip
    torch.testing.assert_close(coef, phi)
    noisy = constrained_fit(X, torch.randn(40, 1, generator=g, dtype=torch.float64),
                            torch.ones(40), torch.tensor([0.0]), torch.tensor([4.0]))  # fmt: skip
    assert noisy.sum().item() == pytest.approx(4.0, abs=1e-9)


@pytest.fixture(scope="module")
def small():
    net = tiny_cnn(num_classes=5, seed=0).eval()
    with torch.no_grad():
        net[-1].weight.mul_(30)
    x = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    return net, x, grid_labels(12, 12, 9)


def test_kernel_and_lasso_equal_captum_kernel_and_scikit_learn_on_the_same_samples(small):
    from captum.attr._core.lime import get_exp_kernel_similarity_function

    net, x, labels = small
    model = LoadedModel.wrap(net)
    out = lm.lime(model, x, 2, segments=labels, samples=200, kernel_width=0.5, seed=3)
    z = torch.rand(200, 9, generator=torch.Generator().manual_seed(3)) < 0.5  # LIME's draw
    images = x * z.float()[:, labels].unsqueeze(1)  # zero baseline
    with torch.no_grad():
        y = net(images)[:, 2].double()
    kernel = get_exp_kernel_similarity_function("cosine", kernel_width=0.5)
    w = torch.tensor([kernel(x, im[None], None) for im in images], dtype=torch.float64)
    ref = sklearn.Lasso(alpha=0.01, tol=1e-12, max_iter=100000)
    ref.fit(z.double().numpy(), y.numpy(), sample_weight=w.numpy())
    ours = segment_values(out.maps[0, 0], labels)
    torch.testing.assert_close(ours, torch.from_numpy(ref.coef_), atol=2e-5, rtol=0)
    assert out.extras["intercept"].item() == pytest.approx(ref.intercept_, abs=2e-5)


def test_agrees_with_captum_lime_in_expectation(small):
    from captum.attr import Lime

    net, x, labels = small
    ours = cl.attribute(net, x, "lime", target=2, segments=labels, samples=2000)
    ours = segment_values(ours.maps[0, 0], labels)
    torch.manual_seed(7)  # Captum draws from the global RNG
    theirs = Lime(net).attribute(
        x, target=2, feature_mask=labels.expand(1, 3, 12, 12).contiguous(), n_samples=2000,
        perturbations_per_eval=64,
    )  # fmt: skip
    theirs = segment_values(theirs[0, 0], labels)
    assert pearson(ours, theirs) >= 0.95
    assert (ours - theirs).abs().max() / (theirs.max() - theirs.min()) < 0.2


def test_batch_equals_images_one_by_one_and_seed_decides(small):
    net, x, labels = small
    model = LoadedModel.wrap(net)
    x2 = torch.cat([x, x.flip(-1)])
    both = lm.lime(model, x2, [[2, 0], [1, 4]], segments="grid", n_segments=9, samples=64)
    for i, t in enumerate([[2, 0], [1, 4]]):
        one = lm.lime(model, x2[i : i + 1], [t], segments="grid", n_segments=9, samples=64,
                      batch_size=5)  # fmt: skip
        torch.testing.assert_close(both.maps[i], one.maps[0], atol=1e-5, rtol=1e-5)
    other = lm.lime(model, x2, [[2, 0], [1, 4]], segments="grid", n_segments=9, samples=64,
                    seed=1)  # fmt: skip
    assert not torch.equal(both.maps, other.maps)


# ----------------------------------------------------------------------------- segments


def test_superpixels_are_computed_on_the_rgb_image_whatever_the_normalisation():
    rgb = torch.zeros(1, 3, 32, 32)
    rgb[:, 0, :, :16] = 0.9  # red left half, blue right half, a green square
    rgb[:, 2, :, 16:] = 0.8
    rgb[:, 1, 8:20, 8:20] = 1.0
    a = LoadedModel.wrap(tiny_cnn())
    b = LoadedModel(tiny_cnn(), Preprocess(mean=(0.1, 0.2, 0.3), std=(0.5, 0.6, 0.7)))
    for kind in ("slic", "quickshift"):
        sa = segment(a, a.preprocess_spec.normalize(rgb), kind, n_segments=6)
        sb = segment(b, b.preprocess_spec.normalize(rgb), kind, n_segments=6)
        assert torch.equal(sa.labels, sb.labels) and sa.counts == sb.counts
        assert sa.counts[0] >= 2  # the colour edges split the image
        assert sa.labels[0, 0, 0] != sa.labels[0, 31, 31]
        assert torch.equal(sa.labels, segment(a, a.preprocess_spec.normalize(rgb), kind, 6).labels)


def test_grid_and_given_labels():
    g = grid_labels(6, 9, 9)
    assert g.tolist()[0] == [0, 0, 0, 1, 1, 1, 2, 2, 2] and int(g.max()) == 8
    model = LoadedModel.wrap(tiny_cnn())
    x = torch.randn(2, 3, 6, 9)
    labels = torch.tensor([[5, 5, 7] * 3] * 6)  # renumbered 0, 1
    s = segment(model, x, labels)
    assert s.counts == (2, 2) and s.labels.shape == (2, 6, 9) and int(s.labels.max()) == 1
    per_image = torch.stack([labels, 3 * torch.ones_like(labels)])
    assert segment(model, x, per_image).counts == (2, 1)
    joined = Segmentation.cat([s, segment(model, x[:1], labels)])
    assert joined.counts == (2, 2, 2) and joined.labels.shape[0] == 3


@pytest.mark.parametrize(
    "params, match",
    [
        ({"segments": "felzenszwalb"}, "segments must be one of"),
        ({"segments": torch.zeros(5, 5, dtype=torch.long)}, r"\(H, W\)"),
        ({"segments": torch.zeros(12, 12)}, "integer labels"),
        ({"n_segments": 0}, "n_segments"),
        ({"samples": 0}, "samples"),
        ({"kernel_width": 0}, "kernel_width"),
        ({"surrogate": "svm"}, "model must be one of"),
        ({"baseline": "noise"}, "baseline"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_refusals_name_the_parameter(small, params, match):
    net, x, _ = small
    with pytest.raises(ValueError, match=match):
        cl.attribute(net, x, "lime", target=1, samples=params.pop("samples", 8), **params)


def test_explanation_carries_the_segments_and_joins_them(small):
    net, x, _ = small
    parts = [cl.attribute(net, x, m, target=1, segments="grid", n_segments=4, samples=4)
             for m in ("lime", "lime")]  # fmt: skip
    assert parts[0].signed and isinstance(parts[0].extras["segments"], Segmentation)
    joined = Explanation.cat(parts)
    assert joined.extras["segments"].labels.shape == (2, 12, 12)


def test_lasso_that_zeroes_every_weight_says_so():
    # A head scaled by 1e-6: the logit moves by ~1e-6 over the samples, far below
    # alpha = 0.01, so the lasso keeps no segment; an all-zero map must not pass silently.
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 3),
    )
    with torch.no_grad():
        net[3].weight.mul_(1e-6)
    x = torch.randn(1, 3, 16, 16)
    with pytest.warns(UserWarning, match="set every segment's weight to 0"):
        e = cl.attribute(net, x, "lime", target=0, segments="grid", n_segments=4, samples=64)
    assert (e.maps == 0).all()
    ridge = cl.attribute(
        net,
        x,
        "lime",
        target=0,
        segments="grid",
        n_segments=4,
        samples=64,
        surrogate="ridge",
        alpha=1e-12,
    )
    assert (ridge.maps != 0).any()
