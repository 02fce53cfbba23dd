"""Meaningful perturbation: the operators Φ, the regularisers, the deletion / preservation
games (cnnlens.perturbation.operators and .game) and the mask result both mask-learning
methods return (cnnlens.core.masks)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import cnnlens as cl
from cnnlens.core.masks import MaskResult
from cnnlens.core.tensors import gaussian_blur, to_scores
from cnnlens.perturbation import operators as ops
from helpers import tiny_cnn

# ----------------------------------------------------------------------------- operators


def _x(n=2, size=32, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", ops.PERTURBATIONS)
@pytest.mark.parametrize("levels", [2, 6])
def test_mask_one_is_identity_and_mask_zero_is_fully_perturbed(kind, levels):
    x = _x()
    phi = ops.Perturbation(x, kind, levels=levels, seed=3)
    ones, zeros = torch.ones(2, 1, 32, 32), torch.zeros(2, 1, 32, 32)
    assert torch.equal(phi(ones), x)
    assert torch.equal(phi(zeros), phi.fully_perturbed())
    base = phi.fully_perturbed()
    if kind == "blur":
        torch.testing.assert_close(base, gaussian_blur(x, 10.0))
    elif kind == "constant":
        torch.testing.assert_close(base, x.mean((2, 3), keepdim=True).expand_as(x))
    else:  # i.i.d. Gaussian, mean 0, sd noise_std; drawn from the seed
        assert abs(float(base.mean())) < 0.05 and abs(float(base.std()) - 1) < 0.05
        assert torch.equal(base, ops.Perturbation(x, kind, seed=3).fully_perturbed())
        assert not torch.equal(base, ops.Perturbation(x, kind, seed=4).fully_perturbed())


def test_partial_masks_blend_or_blur_per_pixel():
    x = _x(1)
    half = torch.full((1, 1, 32, 32), 0.5)
    # two levels: a blend of the image and its sigma0 blur
    blend = ops.Perturbation(x, "blur", levels=2)(half)
    torch.testing.assert_close(blend, 0.5 * x + 0.5 * gaussian_blur(x, 10.0))
    # five levels: m = 0.5 -> t = 2 -> exactly the level with sigma = 5
    per_pixel = ops.Perturbation(x, "blur", levels=5)(half)
    torch.testing.assert_close(per_pixel, gaussian_blur(x, 5.0))
    # between levels: linear interpolation of the two neighbours (t = 1.5 -> sigma 2.5 and 5)
    m = torch.full((1, 1, 32, 32), 0.625)
    want = 0.5 * gaussian_blur(x, 2.5) + 0.5 * gaussian_blur(x, 5.0)
    torch.testing.assert_close(ops.Perturbation(x, "blur", levels=5)(m), want)
    # constant / noise: m x + (1 - m) base
    phi = ops.Perturbation(x, "constant")
    torch.testing.assert_close(phi(half), 0.5 * x + 0.5 * phi.fully_perturbed())


def test_blur_is_differentiable_in_the_mask():
    x = _x(1)
    m = torch.full((1, 1, 32, 32), 0.3, requires_grad=True)
    ops.Perturbation(x, "blur", levels=2)(m).sum().backward()
    # d/dm [m x + (1 - m) b] = x - b, summed over channels
    want = (x - gaussian_blur(x, 10.0)).sum(1, keepdim=True)
    torch.testing.assert_close(m.grad, want)


@pytest.mark.parametrize("kind", ops.PERTURBATIONS)
def test_rows_gives_the_operator_of_a_subset(kind):
    x = _x(3)
    phi = ops.Perturbation(x, kind, levels=4, seed=1)
    m = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    idx = torch.tensor([2, 0, 2, 1])  # repeats allowed: one row per mask
    got = phi.rows(idx)(m, (1, 2))
    for k, i in enumerate(idx.tolist()):
        full = torch.ones(3, 1, 32, 32)
        full[i] = m[k]
        torch.testing.assert_close(got[k], phi(full, (1, 2))[i])
    torch.testing.assert_close(phi.rows(slice(1, 3))(m[:2]), phi(torch.cat([m[:1], m[:2]]))[1:])


def test_shift_moves_content_and_replicates_the_border():
    t = torch.arange(9.0).view(1, 1, 3, 3)
    want = torch.tensor([[0.0, 1, 2], [0, 1, 2], [3, 4, 5]]).view(1, 1, 3, 3)
    assert torch.equal(ops.shift_image(t, 1, 0), want)
    want = torch.tensor([[0.0, 0, 1], [3, 3, 4], [6, 6, 7]]).view(1, 1, 3, 3)
    assert torch.equal(ops.shift_image(t, 0, 1), want)
    assert torch.equal(ops.shift_image(t, 0, 0), t)
    with pytest.raises(ValueError, match="larger"):
        ops.shift_image(t, 3, 0)


def test_l1_and_tv_on_a_3x3_mask_by_hand():
    m = torch.tensor([[0.0, 1.0, 0.5], [1.0, 0.0, 1.0], [0.0, 0.0, 1.0]]).view(1, 1, 3, 3)
    assert float(ops.l1(m)) == pytest.approx(4.5)
    assert float(ops.l1(1 - m)) == pytest.approx(4.5)
    # horizontal |differences|: row 0: 1, 0.5; row 1: 1, 1; row 2: 0, 1
    # vertical: col 0: 1, 1; col 1: 1, 0; col 2: 0.5, 0
    # beta = 3: 1 + 0.125 + 1 + 1 + 0 + 1 + 1 + 1 + 1 + 0 + 0.125 + 0 = 7.25
    assert float(ops.tv(m, 3.0)) == pytest.approx(7.25)
    # beta = 2: the 0.5 steps count 0.25 each
    assert float(ops.tv(m, 2.0)) == pytest.approx(7.5)
    assert ops.tv(torch.ones(2, 1, 4, 4)).tolist() == [0.0, 0.0]


def test_upsampled_mask_and_discs():
    low = torch.zeros(1, 1, 4, 4)
    up = ops.upsample_mask(low, (32, 32), sigma=2.0)
    assert up.shape == (1, 1, 32, 32) and float(up.abs().max()) == 0
    ones = ops.upsample_mask(torch.ones(1, 1, 4, 4), (32, 32), sigma=2.0)
    torch.testing.assert_close(ones, torch.ones_like(ones))
    discs = ops.circle_masks(torch.tensor([0, 2]), (5, 5))
    assert discs[0, 0].sum() == 24  # radius 0: only the centre pixel deleted
    assert discs[1, 0, 2, 2] == 0 and discs[1, 0, 0, 0] == 1  # corner is 2.83 px away
    box = ops.box_mask((1, 2, 3, 4), (5, 6))
    assert box.shape == (1, 1, 5, 6) and int((box == 0).sum()) == 4
    with pytest.raises(ValueError, match="box"):
        ops.box_mask((3, 0, 3, 2), (5, 5))


def test_operator_errors():
    with pytest.raises(ValueError, match="perturbation must be"):
        ops.Perturbation(_x(), "erase")
    phi = ops.Perturbation(_x(), "blur")
    with pytest.raises(ValueError, match="mask must be"):
        phi(torch.ones(1, 1, 32, 32))
    with pytest.raises(ValueError, match="images are"):
        phi(torch.ones(2, 1, 16, 16))


# ----------------------------------------------------------------------------- the games

SQUARE = (8, 24, 36, 52)  # rows 8..23, columns 36..51 of a 64 x 64 image


class SquareTexture(nn.Module):
    """Class 0's logit is the texture energy inside a known square; class 1's is constant.

    Blurring the square removes its energy (and the evidence); nothing outside matters.
    """

    def forward(self, x):
        r0, r1, c0, c1 = SQUARE
        energy = x[:, :, r0:r1, c0:c1].pow(2).mean((1, 2, 3))
        return torch.stack([8 * (energy - 0.5), torch.zeros_like(energy)], dim=1)


def _square_mask():
    m = torch.zeros(64, 64, dtype=torch.bool)
    r0, r1, c0, c1 = SQUARE
    m[r0:r1, c0:c1] = True
    return m


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum()) / float((a | b).sum())


SMALL = {"mask_scale": 4, "mask_sigma": 1.0, "iterations": 300}


def test_deletion_mask_covers_the_square_and_little_else():
    x = _x(1, 64, seed=5)
    e = cl.attribute(SquareTexture(), x, "perturbation", target=0, **SMALL)
    region = e.maps[0, 0] > 0.5
    square = _square_mask()
    assert _iou(region, square) >= 0.5, _iou(region, square)
    assert float((region & ~square).sum()) < 0.5 * float(square.sum())
    assert float(e.extras["score"][0, 0]) < 0.1 < 0.9 < float(e.extras["score_before"][0, 0])
    assert e.extras["area"][0, 0] == pytest.approx(float(e.maps.mean()))
    torch.testing.assert_close(e.maps, 1 - e.extras["mask"])
    curve = e.extras["curve"]
    assert curve["loss"].shape == (1, 1, 300) and curve["loss"][0, 0, -1] < curve["loss"][0, 0, 0]
    # the final mask's edit is in the extras and scores what "score" says
    edited = e.extras["perturbed"][:, 0]
    with torch.no_grad():
        p = torch.softmax(SquareTexture()(edited), 1)[0, 0]
    assert float(p) == pytest.approx(float(e.extras["score"][0, 0]), abs=1e-5)


def test_preservation_mask_keeps_the_square():
    x = _x(1, 64, seed=5)
    e = cl.attribute(SquareTexture(), x, "perturbation", target=0, game="preserve", **SMALL)
    region, square = e.maps[0, 0] > 0.5, _square_mask()
    # the kept region holds the square with a margin (jitter moves the square by up to 3 px;
    # measured: 551 px kept around the 256 px square, every square pixel among them)
    assert float((region & square).sum()) >= 0.9 * float(square.sum())
    assert float(region.sum()) <= 3 * float(square.sum())
    torch.testing.assert_close(e.maps, e.extras["mask"])
    assert float(e.extras["score"][0, 0]) > 0.5


def test_circle_initialisation_is_the_smallest_suppressing_disc():
    # the square's far corner from the centre (31.5, 31.5) is (8, 51): 30.5 px away, so a
    # centred disc must reach about that far before blurring deletes the evidence
    x = _x(1, 64, seed=5)
    e = cl.attribute(SquareTexture(), x, "perturbation", target=0, iterations=0, mask_sigma=1.5)
    radius = float(e.extras["initial_radius"][0, 0])  # in pixels (cells of 8 px)
    assert 16 <= radius <= 40
    start = e.extras["mask"][0, 0]
    assert float(start[31, 31]) < 0.05  # the centre starts deleted
    e0 = cl.attribute(SquareTexture(), x, "perturbation", target=0, iterations=0, init=1.0)
    assert float(e0.maps.abs().max()) == 0.0


@pytest.mark.parametrize("game", ["delete", "preserve"])
def test_circle_bisection_finds_the_radius_a_scan_from_the_centre_finds(game):
    net, x = SquareTexture(), _x(3, 64, seed=5)
    e = cl.attribute(net, x, "perturbation", target=0, iterations=0, game=game,
                     mask_scale=4, mask_sigma=1.5)  # fmt: skip
    phi = ops.Perturbation(x, "blur", sigma=10.0, levels=2, seed=0)
    radii = torch.arange(13)  # 16 x 16 mask cells: radius 12 covers the image
    discs = ops.circle_masks(radii, (16, 16), 0.0 if game == "delete" else 1.0)
    discs = ops.upsample_mask(discs, (64, 64), 1.5).clamp(0, 1)
    want = []
    with torch.no_grad():
        p0 = net(x).softmax(1)[:, 0]
        pb = net(phi.fully_perturbed()).softmax(1)[:, 0]
        for i in range(3):
            for k in radii.tolist():
                p = net(phi.rows(torch.tensor([i]))(discs[k : k + 1])).softmax(1)[0, 0]
                norm = float((p - pb[i]) / (p0[i] - pb[i]))
                if (norm <= 0.01) if game == "delete" else (norm >= 0.99):
                    break
            want.append(4.0 * k)  # pixels: 4 per mask cell
    # measured: delete 28, 28, 32 px; preserve 32 px for all three
    assert e.extras["initial_radius"][:, 0].tolist() == want
    assert 0 < min(want) and max(want) < 48  # neither the empty disc nor the whole image


def test_a_mask_tensor_warm_starts_the_game():
    x = _x(1, 64, seed=5)
    start = torch.ones(1, 1, 64, 64)
    start[..., 8:24, 40:56] = 0.0  # delete the square's neighbourhood to begin with
    e = cl.attribute(SquareTexture(), x, "perturbation", target=0, iterations=0, init=start,
                     mask_sigma=1.0)  # fmt: skip
    sal = e.maps[0, 0]
    assert float(sal[16, 48]) > 0.95 and float(sal[48, 16]) < 0.05
    flat = cl.attribute(SquareTexture(), x, "perturbation", target=0, iterations=0,
                        init=torch.full((1, 64, 64), 0.25))  # fmt: skip
    torch.testing.assert_close(flat.maps, torch.full_like(flat.maps, 0.75))
    with pytest.raises(ValueError, match="init tensor"):
        cl.attribute(SquareTexture(), x, "perturbation", target=0, init=torch.ones(2, 1, 64, 64))


def test_several_targets_batch_and_joint_masks():
    net, x = tiny_cnn(), _x(2, 32)
    common = {"iterations": 20, "mask_scale": 4, "mask_sigma": 1.0}
    both = cl.attribute(net, x, "perturbation", target=[[1, 3], [0, 4]], **common)
    one = cl.attribute(net, x[1:], "perturbation", target=[[4]], **common)
    torch.testing.assert_close(both.maps[1, 1], one.maps[0, 0], atol=1e-5, rtol=1e-4)
    again = cl.attribute(net, x, "perturbation", target=[[1, 3], [0, 4]], batch_size=1, **common)
    torch.testing.assert_close(both.maps, again.maps, atol=1e-5, rtol=1e-4)
    joint = cl.attribute(net, x, "perturbation", target="top2", joint=True, **common)
    assert joint.maps.shape == (2, 2, 32, 32)
    assert torch.equal(joint.maps[:, 0], joint.maps[:, 1])


def test_ramp_schedule_scales_the_step():
    from cnnlens.perturbation.game import step_scale

    # 90 iterations: 10 at 1x, 10 at 2x, 10 at 4x, 40 at 8x, 10 at 3x, 10 at 1x
    scales = [step_scale("ramp", it, 90) for it in range(90)]
    assert scales == [1.0] * 10 + [2.0] * 10 + [4.0] * 10 + [8.0] * 40 + [3.0] * 10 + [1.0] * 10
    assert {step_scale("constant", it, 90) for it in range(90)} == {1.0}
    # the first ninth runs at the base step, so both schedules agree there exactly
    x = _x(1, 64, seed=5)
    kw = {"target": 0, "mask_scale": 4, "mask_sigma": 1.0}
    a = cl.attribute(SquareTexture(), x, "perturbation", iterations=90, schedule="ramp", **kw)
    b = cl.attribute(SquareTexture(), x, "perturbation", iterations=90, **kw)
    torch.testing.assert_close(
        a.extras["curve"]["loss"][..., :10], b.extras["curve"]["loss"][..., :10]
    )
    assert not torch.equal(a.maps, b.maps)
    # and the ramp still finds the square in 90 iterations
    region, square = a.maps[0, 0] > 0.5, _square_mask()
    assert _iou(region, square) >= 0.5


@pytest.mark.parametrize("kind", ["constant", "noise"])
def test_other_perturbations_edit_with_their_own_base_image(kind):
    # the deletion game from a known start (keep everything), five steps, on the logit
    # of the square's texture energy (4 here: logit 8 * (4 - 0.5) nominally)
    net, x = SquareTexture(), 2 * _x(1, 64, seed=5)
    kw = {"target": 0, "perturbation": kind, "iterations": 5, "mask_scale": 4,
          "mask_sigma": 1.0, "init": 1.0, "score": "logit"}  # fmt: skip
    r = MaskResult.of(cl.attribute(net, x, "perturbation", seed=0, **kw))
    # the fully perturbed image by hand: the mean colour, or N(0, 1) noise drawn from the seed
    if kind == "constant":
        base = x.mean((2, 3), keepdim=True).expand_as(x)
    else:
        base = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(r.score_before, net(x)[:, :1])
        torch.testing.assert_close(r.score_perturbed, net(base)[:, :1])
        # the edit is m x + (1 - m) base with the learned mask, and scores what it says
        m = r.mask[0, 0, 0]
        torch.testing.assert_close(r.edited[0, 0, 0], m * x[0] + (1 - m) * base[0])
        torch.testing.assert_close(r.score[0, 0, 0], net(r.edited[0, 0])[0, 0])
    # five steps delete the square, keep the far corner and lower the score
    # (measured: mask <= 0.53 on the square, logit 24.6 -> 3.4 constant, 5.8 noise)
    r0, r1, c0, c1 = SQUARE
    assert float(m[r0:r1, c0:c1].max()) < 0.6 and float(m[60, 4]) > 0.999
    assert float(r.score[0, 0, 0]) < 0.3 * float(r.score_before[0, 0])
    assert r.curves["loss"].shape == (1, 1, 1, 5)
    # the same call gives the same masks; another seed another jitter (and other noise)
    again = MaskResult.of(cl.attribute(net, x, "perturbation", seed=0, **kw))
    assert torch.equal(again.mask, r.mask) and torch.equal(again.edited, r.edited)
    other = MaskResult.of(cl.attribute(net, x, "perturbation", seed=1, **kw))
    assert not torch.equal(other.mask, r.mask)
    if kind == "noise":
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            torch.testing.assert_close(other.score_perturbed, net(noise)[:, :1])
        assert float(other.score_perturbed) != float(r.score_perturbed)
    else:
        assert torch.equal(other.score_perturbed, r.score_perturbed)


def test_registered_as_meaningful_perturbation_with_the_old_name_as_alias():
    info = cl.get_method("perturbation")
    assert info is cl.get_method("meaningful_perturbation")
    assert info.name == "meaningful_perturbation" and info.family == "perturbation"
    names = [m.name for m in cl.list_methods()]
    assert "meaningful_perturbation" in names and "perturbation" not in names
    x, kw = _x(1, 32), {"target": 1, "iterations": 2, "mask_scale": 4}
    old = cl.attribute(tiny_cnn(), x, "perturbation", **kw)
    new = cl.attribute(tiny_cnn(), x, "meaningful_perturbation", **kw)
    assert old.method == "perturbation" and new.method == "meaningful_perturbation"
    assert torch.equal(old.maps, new.maps) and old.params == new.params


def test_both_mask_methods_return_one_structure():
    net, x, target = tiny_cnn().eval(), _x(2, 32, seed=1), [[1, 3], [0, 4]]
    game = cl.attribute(net, x, "perturbation", target=target, iterations=4, mask_scale=4)
    ext = cl.attribute(net, x, "extremal", target=target, areas=(0.1, 0.3), iterations=4)
    gone = cl.attribute(net, x, "extremal", target=target, variant="delete", iterations=4)
    phi = ops.Perturbation(x, "blur")  # both methods' default operator
    for e, a, score in ((game, 1, "prob"), (ext, 2, "logit"), (gone, 1, "logit")):
        r = MaskResult.of(e)
        assert e.extras["mask_result"] is r and r.shape == (2, 2, a)
        assert r.mask.shape == (2, 2, a, 32, 32) and r.edited.shape == (2, 2, a, 3, 32, 32)
        assert r.score.shape == r.area.shape == (2, 2, a)
        assert r.score_before.shape == r.score_perturbed.shape == (2, 2)
        assert {tuple(c.shape) for c in r.curves.values()} == {(2, 2, a, 4)}
        assert 0 <= float(r.mask.min()) <= float(r.mask.max()) <= 1
        with torch.no_grad():
            for j in range(2):
                for k in range(a):  # the edit is Φ(x; m) and scores what the model says
                    edited = phi(r.mask[:, j, k].unsqueeze(1))
                    torch.testing.assert_close(r.edited[:, j, k], edited)
                    want = to_scores(net(edited), score).gather(1, e.targets[:, j : j + 1])
                    torch.testing.assert_close(r.score[:, j, k], want[:, 0])
        # area: the deleted fraction for deletion games, the kept one for preservation
        kept = r.mask.mean((3, 4))
        torch.testing.assert_close(r.area, 1 - kept if r.game == "delete" else kept)
    assert MaskResult.of(game).areas is None and MaskResult.of(ext).areas == [0.1, 0.3]
    assert set(MaskResult.of(game).curves) == {"loss", "area", "score"}
    assert set(MaskResult.of(ext).curves) == {"score", "area", "regulariser"}
    # the keys of earlier versions read the same tensors
    assert torch.equal(game.extras["mask"], MaskResult.of(game).mask[:, :, 0])
    assert torch.equal(ext.extras["masks"], MaskResult.of(ext).mask)
    torch.testing.assert_close(gone.extras["masks"], 1 - MaskResult.of(gone).mask)  # m: deleted
    with pytest.raises(ValueError, match="carries no learned mask"):
        MaskResult.of(cl.attribute(net, x, "gradient"))


def test_mask_results_of_consecutive_batches_join():
    net, x, kw = tiny_cnn(), _x(3, 32, seed=2), {"target": 1, "iterations": 3, "mask_scale": 4}
    parts = [MaskResult.of(cl.attribute(net, x[i : i + 1], "perturbation", **kw)) for i in range(3)]
    joined = MaskResult.cat(parts)
    assert joined.shape == (3, 1, 1) and joined.curves["loss"].shape == (3, 1, 1, 3)
    assert torch.equal(joined.mask[1], parts[1].mask[0])
    assert torch.equal(joined.score_perturbed[2], parts[2].score_perturbed[0])
    with pytest.raises(ValueError, match="one method and setting"):
        MaskResult.cat([parts[0], MaskResult.of(cl.attribute(net, x[:1], "extremal", target=1))])


@pytest.mark.parametrize(
    "params",
    [
        {"game": "keep"},
        {"perturbation": "erase"},
        {"iterations": -1},
        {"mask_scale": 0},
        {"jitter": 0},
        {"learning_rate": 0},
        {"init": "square"},
        {"init": 1.5},
        {"score": "odds"},
        {"schedule": "cosine"},
    ],
)
def test_bad_parameters_raise(params):
    with pytest.raises(ValueError):
        cl.attribute(tiny_cnn(), _x(1, 32), "perturbation", target=1, **params)


# ----------------------------------------------------------------------------- bundled model


@pytest.mark.slow
def test_deletion_mask_on_coffee():
    model = cl.load_model()
    x = model.preprocess(cl.sample_images(["coffee"])["coffee"])
    espresso = 967
    e = cl.attribute(model, x, "perturbation", target=espresso)
    sal = e.maps[0, 0]
    region = sal / sal.max() > 0.5
    with torch.no_grad():
        phi = ops.Perturbation(x, "blur")
        p0 = torch.softmax(model.net(x), 1)[0, espresso]
        p = torch.softmax(model.net(phi((~region).float().view(1, 1, 224, 224))), 1)[0, espresso]
    # Measured on CPU (2 cores): region 8.5% of the image, p 0.902 -> 0.061 after blurring
    # just that region; the soft mask itself leaves p = 0.074 (from the default 300 steps).
    assert float(region.float().mean()) < 0.15
    assert float(p) < 0.5 * float(p0)
