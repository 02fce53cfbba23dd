"""KernelSHAP and Shapley value sampling over segments: hand-computed values, exact
Shapley values by enumerating every coalition, cross-checks against Captum 0.9.0.

The hand-computed cases use ``Cells``: a 4x4 image cut by ``segments="grid"`` with
``n_segments=4`` into four 2x2 cells A (top left), B (top right), C (bottom left) and
D (bottom right). Its input is 1 on channel 0 and the baseline is zero, so the mean of
channel 0 over a cell is 1 when the cell is kept and 0 when it is removed: the
coalition's indicators ``a, b, c, d``. The two logits are

    class 0:  a * b + c          class 1:  a + 2 b - d.

Class 1 is additive: every segment's Shapley value is its coefficient, (1, 2, 0, -1).
Class 0: ``c`` is alone (phi_C = 1), D never matters (phi_D = 0), and ``a * b`` is worth
1 only once both A and B are in; A is the one to complete the pair in exactly the orders
where B came first, half of them, so phi_A = phi_B = 1/2. Efficiency: 1/2 + 1/2 + 1 + 0
= 2 = v(full) - v(empty) = (1 + 1) - 0.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnlens as cl
from cnnlens.attribution import kernel_shap as ks
from cnnlens.attribution import shapley as sv
from cnnlens.attribution.segments import grid_labels
from cnnlens.models.base import LoadedModel
from helpers import tiny_cnn

HAND = {0: [0.5, 0.5, 1.0, 0.0], 1: [1.0, 2.0, 0.0, -1.0]}


class Cells(nn.Module):
    """Logits ``(a b + c, a + 2 b - d)`` of the cell means of channel 0 (module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cells = F.avg_pool2d(x[:, :1], 2).flatten(1)  # (N, 4): a, b, c, d
        a, b, c, d = cells.unbind(1)
        return torch.stack([a * b + c, a + 2 * b - d], dim=1)


def cell_values(maps: torch.Tensor) -> torch.Tensor:
    """The value painted on each 2x2 cell of ``(..., 4, 4)`` maps, checking it is uniform."""
    cells = maps.unfold(-2, 2, 2).unfold(-2, 2, 2).flatten(-2)  # (..., 2, 2, 4)
    assert torch.equal(cells.amax(-1), cells.amin(-1))
    return cells[..., 0].flatten(-2)


def cells_input() -> torch.Tensor:
    x = torch.zeros(1, 3, 4, 4)
    x[:, 0] = 1.0
    return x


def exact_shapley(value, d: int) -> torch.Tensor:
    """Shapley values ``(d, T)`` by enumerating all 2^d coalitions of ``value(z) -> (2^d, T)``."""
    coalitions = torch.tensor(list(itertools.product([0, 1], repeat=d)), dtype=torch.bool)
    v = value(coalitions).double()
    index = {tuple(z.tolist()): k for k, z in enumerate(coalitions.int())}
    phi = torch.zeros(d, v.shape[1], dtype=torch.float64)
    for z, k in index.items():
        size = sum(z)
        for j in range(d):
            if not z[j]:
                w = math.factorial(size) * math.factorial(d - size - 1) / math.factorial(d)
                phi[j] += w * (v[index[z[:j] + (1,) + z[j + 1 :]]] - v[k])
    return phi


def test_exact_enumeration_gives_the_hand_values():
    net = Cells()
    x = cells_input()
    labels = grid_labels(4, 4, 4)

    def value(z):
        return net(x * z.float()[:, labels].unsqueeze(1))

    phi = exact_shapley(value, 4)
    torch.testing.assert_close(phi.T, torch.tensor([HAND[0], HAND[1]], dtype=torch.float64))


@pytest.mark.parametrize("samples", [1, 3])
def test_shapley_sampling_hand_values_and_efficiency_per_order(samples):
    out = sv.shapley_sampling(
        LoadedModel.wrap(Cells()), cells_input(), [[0, 1]], segments="grid", n_segments=4,
        samples=samples,
    )  # fmt: skip
    values = cell_values(out.maps[0])
    # additive class: exact for any number of orders
    torch.testing.assert_close(values[1], torch.tensor(HAND[1]))
    # class 0: one order gives A or B the whole pair (1 or 0), C its 1, D 0; sum exactly 2
    assert values[0, 2] == 1.0 and values[0, 3] == 0.0
    assert values[0, 0] + values[0, 1] == pytest.approx(1.0, abs=1e-6)
    assert values[0].sum() == pytest.approx(2.0, abs=1e-6)
    assert out.extras["gap"].abs().max() < 1e-6


def test_shapley_sampling_converges_to_the_hand_values():
    out = sv.shapley_sampling(
        LoadedModel.wrap(Cells()), cells_input(), 0, segments="grid", n_segments=4,
        samples=4000, batch_size=512,
    )  # fmt: skip
    values = cell_values(out.maps[0, 0])
    # phi_A is the share of orders where B came before A: binomial, sd 0.5/sqrt(4000)=0.008
    torch.testing.assert_close(values, torch.tensor(HAND[0]), atol=0.04, rtol=0)
    assert out.extras["stderr"][0, 0] == pytest.approx(0.5 / math.sqrt(4000), rel=0.05)


def test_kernel_shap_hand_values():
    out = ks.kernel_shap(
        LoadedModel.wrap(Cells()), cells_input(), [[0, 1]], segments="grid", n_segments=4,
        samples=4000,
    )  # fmt: skip
    values = cell_values(out.maps[0])
    torch.testing.assert_close(values[1], torch.tensor(HAND[1]), atol=1e-5, rtol=0)
    torch.testing.assert_close(values[0], torch.tensor(HAND[0]), atol=0.04, rtol=0)
    assert out.extras["gap"].abs().max() < 1e-9
    torch.testing.assert_close(out.extras["base_score"], torch.zeros(1, 2, dtype=torch.float64))


# ----------------------------------------------------------------------------- tiny CNN


@pytest.fixture(scope="module")
def game():
    """tiny_cnn (logits scaled up) on a 12 px image cut into a 3x3 grid; exact values."""
    net = tiny_cnn(num_classes=5, seed=0).eval()
    with torch.no_grad():
        net[-1].weight.mul_(30)
    x = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    labels = grid_labels(12, 12, 9)

    def value(z):
        with torch.no_grad():
            return net(x * z.float()[:, labels].unsqueeze(1))[:, [2]]

    return net, x, labels, exact_shapley(value, 9)[:, 0]


def segment_values(maps: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return torch.stack([maps[labels == k][0] for k in range(int(labels.max()) + 1)]).double()


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.corrcoef(torch.stack([a.double(), b.double()]))[0, 1].item()


def relative_error(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a - ref).abs().max() / (ref.max() - ref.min())).item()


@pytest.mark.parametrize(
    "method, samples, captum_name, extra",
    [
        ("shapley_sampling", 300, "ShapleyValueSampling", {}),
        ("kernel_shap", 1500, "KernelShap", {"paired": False}),  # Captum's sampling
        ("kernel_shap", 1500, "KernelShap", {"paired": True}),
    ],
)
def test_agrees_with_exact_values_and_captum(game, method, samples, captum_name, extra):
    import captum.attr

    net, x, labels, exact = game
    ours = cl.attribute(net, x, method, target=2, segments=labels, samples=samples, **extra)
    ours = segment_values(ours.maps[0, 0], labels)
    torch.manual_seed(123)  # Captum draws from the global RNG
    theirs = getattr(captum.attr, captum_name)(net).attribute(
        x, target=2, feature_mask=labels.expand(1, 3, 12, 12).contiguous(),
        n_samples=samples, perturbations_per_eval=64,
    )  # fmt: skip
    theirs = segment_values(theirs[0, 0], labels)
    # measured: Pearson with the exact values 0.999+ for both, ours vs Captum 0.999+
    assert pearson(ours, exact) >= 0.95 and pearson(theirs, exact) >= 0.95
    assert pearson(ours, theirs) >= 0.95
    assert relative_error(ours, exact) < 0.15
    # both efficient: the sum is f(x) - f(baseline), Captum's to about 1e-6 relative
    assert ours.sum().item() == pytest.approx(exact.sum().item(), rel=1e-5)
    assert theirs.sum().item() == pytest.approx(exact.sum().item(), rel=1e-3)


@pytest.mark.parametrize(
    "method, few, many", [("kernel_shap", 60, 960), ("shapley_sampling", 4, 64)]
)
def test_spread_across_seeds_shrinks_with_samples(game, method, few, many):
    net, x, labels, exact = game

    def spread(samples):
        runs = [
            segment_values(
                cl.attribute(
                    net, x, method, target=2, segments=labels, samples=samples, seed=s
                ).maps[0, 0],
                labels,
            )  # fmt: skip
            for s in range(4)
        ]
        return torch.stack(runs).std(0).mean().item()

    # 16x the samples: the standard deviation should drop by about 4x; ask for 2x
    assert spread(many) < spread(few) / 2


def test_shapley_sampling_batches_steps_and_is_deterministic(game):
    net, x, labels, _ = game
    model = LoadedModel.wrap(net)
    one = sv.shapley_sampling(model, x, 2, segments=labels, samples=5, batch_size=1)
    big = sv.shapley_sampling(model, x, 2, segments=labels, samples=5, batch_size=64)
    torch.testing.assert_close(one.maps, big.maps, atol=1e-5, rtol=1e-5)
    again = sv.shapley_sampling(model, x, 2, segments=labels, samples=5, batch_size=64)
    assert torch.equal(big.maps, again.maps)
    other = sv.shapley_sampling(model, x, 2, segments=labels, samples=5, seed=1)
    assert not torch.equal(big.maps, other.maps)


def test_kernel_shap_coalition_sizes_follow_the_shapley_kernel():
    d, samples = 6, 20000
    z = ks.shapley_kernel_coalitions(samples, d, torch.Generator().manual_seed(0))
    sizes = torch.bincount(z.sum(1), minlength=d + 1).double() / samples
    k = torch.arange(1, d, dtype=torch.float64)
    expected = (d - 1) / (k * (d - k))
    torch.testing.assert_close(sizes[1:d], expected / expected.sum(), atol=0.01, rtol=0)
    assert sizes[0] == 0 and sizes[d] == 0
    assert ks.shapley_kernel_coalitions(5, 1, torch.Generator()).shape == (0, 1)


def test_the_folded_copy_runs_and_scores_as_the_model_does(game):
    from torch import fx

    from cnnlens.attribution.segments import folded
    from cnnlens.core.batching import FastNet

    net, x, _, _ = game
    plain = FastNet.of(net, x)
    batch = torch.randn(6, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        fast = folded(plain, x, plain(x))
        assert isinstance(fast.net, fx.GraphModule)  # batch norm folded, clamps fused
        assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.net.modules())
        torch.testing.assert_close(fast(batch), net(batch), atol=1e-5, rtol=1e-5)
        # a copy whose logits disagree with the model's is not used
        assert folded(plain, x, plain(x) + 1.0) is plain


def test_paired_coalitions_lower_the_spread_across_seeds(game):
    net, x, labels, _ = game

    def spread(paired):
        runs = [
            segment_values(
                cl.attribute(
                    net,
                    x,
                    "kernel_shap",
                    target=2,
                    segments=labels,
                    samples=60,
                    paired=paired,
                    seed=s,
                ).maps[0, 0],
                labels,
            )  # fmt: skip
            for s in range(6)
        ]
        return torch.stack(runs).std(0).mean().item()

    assert spread(True) < spread(False)
