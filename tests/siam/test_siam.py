"""SIAM models: synthetic scenes, shapes, the exact decomposition (hand-checked),
checkpoints and resume, the CSV loader, the metrics and a small training run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnnlens.core.hooks import hook_count
from cnnlens.datasets import scenic as sc
from cnnlens.models.base import LoadedModel
from cnnlens.siam import (
    SiamConfig,
    SiamData,
    SiamModel,
    TrainSettings,
    attribute_pointing,
    extract_features,
    load_checkpoint,
    predict,
    r2_score,
    read_csv,
    render_explanation,
    save_checkpoint,
    train,
)
from cnnlens.siam.evaluate import effective_weights, weight_recovery
from cnnlens.siam.page import curve_png

K = 3


def _tiny_model(**cfg) -> SiamModel:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 1))
    config = SiamConfig(attributes=["a", "b", "c"], layer="2", size=16, **cfg)
    return SiamModel(config, LoadedModel.wrap(net))


def _features(n=40, c=5, seed=0) -> SiamData:
    g = torch.Generator().manual_seed(seed)
    attrs = (torch.rand(n, K, generator=g) > 0.5).float()
    feats = 0.5 * torch.randn(n, c, 8, 8, generator=g)
    for k in range(K):  # attribute k lights channel k in its own quarter of the map
        r, q = divmod(k, 2)
        feats[:, k, 4 * r : 4 * r + 4, 4 * q : 4 * q + 4] += 3.0 * attrs[:, k, None, None]
    target = attrs @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(n, generator=g)
    return SiamData(feats, attrs, target)


# ----------------------------------------------------------------------------- scenes


def test_scenes_are_deterministic_and_consistent():
    spec = sc.ScenicSpec(size=48)
    a, b = sc.sample(spec, "train", 3), sc.sample(spec, "train", 3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], sc.sample(spec, "test", 3)[0])
    data = sc.scenic(12, "val", spec)
    assert data.images.shape == (12, 48, 48, 3) and data.images.dtype == np.uint8
    masks = data.masks()
    assert masks.shape == (12, len(sc.ATTRIBUTES), 48, 48)
    np.testing.assert_allclose(masks.mean(axis=(2, 3)), data.areas, atol=1e-6)
    np.testing.assert_array_equal(data.present, data.areas >= spec.min_area)
    # The score is the known linear function of the areas, plus noise of std 0.1.
    clean = sc.INTERCEPT + data.areas @ np.array(sc.COEFFICIENTS, np.float32)
    assert np.abs(data.target - clean).max() < 5 * spec.noise
    assert np.abs(data.target - clean).max() > 0  # the noise is there
    # Clutter keeps the areas from always summing to one (identifiability).
    assert (data.areas.sum(1) < 0.999).any()


def test_folder_round_trip(tmp_path):
    spec = sc.ScenicSpec(size=32, seed=4)
    csv_path = sc.write_folder(tmp_path, {"train": 3, "test": 4}, spec)
    back, spec_back = sc.read_folder(tmp_path, "test")
    direct = sc.scenic(4, "test", spec)
    assert spec_back == spec
    np.testing.assert_array_equal(back.images, direct.images)
    np.testing.assert_array_equal(back.labels, direct.labels)
    np.testing.assert_allclose(back.target, direct.target, atol=1e-5)
    loaded = read_csv(csv_path, 32, target="scenicness", split="train")
    assert loaded.attributes == list(sc.ATTRIBUTES)
    assert loaded.data.inputs.shape == (3, 3, 32, 32)
    train_scenes = sc.scenic(3, "train", spec)
    np.testing.assert_array_equal(loaded.data.attributes.numpy(), train_scenes.present)


def test_csv_loader_unknown_cells_and_classes(tmp_path):
    for i in range(3):
        Image.new("RGB", (20, 10), (40 * i, 0, 0)).save(tmp_path / f"{i}.png")
    (tmp_path / "d.csv").write_text(
        "path,water,sky,label\n0.png,1,,lake\n1.png,0,0.5,\n2.png,,1,city\n"
    )
    got = read_csv(tmp_path / "d.csv", 8, target="label", task_kind="classification")
    a = got.data.attributes
    assert got.attributes == ["water", "sky"] and got.classes == ["city", "lake"]
    assert a[0, 0] == 1 and math.isnan(a[0, 1]) and a[1, 1] == 0.5 and math.isnan(a[2, 0])
    assert got.data.target.tolist() == [1, -1, 0]
    assert got.data.inputs.shape == (3, 3, 8, 8) and got.data.inputs.dtype == torch.uint8
    with pytest.raises(ValueError, match="no target column 'score'"):
        read_csv(tmp_path / "d.csv", 8, target="score")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):  # the label column taken as an attribute
        (tmp_path / "e.csv").write_text("path,water,y\n0.png,1,4.5\n")
        read_csv(tmp_path / "e.csv", 8, target=None)
    with pytest.raises(ValueError, match="path"):
        (tmp_path / "bad.csv").write_text("file,water\n0.png,1\n")
        read_csv(tmp_path / "bad.csv", 8)


# ----------------------------------------------------------------------------- model


@pytest.mark.parametrize(
    "cfg",
    [{}, {"pooling": "templates", "templates": 2, "grid": 2}, {"interactions": True}],
)
def test_shapes_and_exact_decomposition(cfg):
    model = _tiny_model(activation="softplus", **cfg)
    with torch.no_grad():  # non-trivial weights, so every term matters
        for p in model.head.parameters():
            p.copy_(torch.randn_like(p))
    x = torch.randn(4, 3, 16, 16)
    out = model(x)
    t = cfg.get("templates", 1)
    assert out.maps.shape == (4, K, 8, 8) and (out.maps >= 0).all()
    assert out.pooled.shape == (4, K, t) and out.output.shape == (4, 1)
    assert out.contributions.shape == (4, 1, K)
    expl = model.explain(x)
    assert expl.maps.shape == (4, K, 16, 16)
    total = expl.bias + expl.contributions.sum(-1)
    torch.testing.assert_close(total, expl.output, rtol=0, atol=1e-5)
    assert expl.error() <= 1e-5 * max(1.0, float(expl.output.abs().max()))


def test_decomposition_by_hand():
    """Identity 1x1 conv and ReLU: maps are the features, pooled values their means."""
    config = SiamConfig(attributes=["p", "q"], activation="relu", layer="0", size=4)
    model = SiamModel(config, LoadedModel.wrap(nn.Sequential(nn.Identity())), in_channels=2)
    with torch.no_grad():
        model.head.attr.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
        model.head.attr.bias.zero_()
        model.head.weight.copy_(torch.tensor([[[2.0], [-3.0]]]))
        model.head.bias.fill_(0.5)
    feats = torch.zeros(1, 2, 2, 2)
    feats[0, 0] = torch.tensor([[1.0, 2.0], [3.0, -6.0]])  # relu -> mean (1+2+3+0)/4 = 1.5
    feats[0, 1] = torch.tensor([[0.5, 0.5], [0.5, 0.5]])  # mean 0.5
    out = model.head(feats)
    torch.testing.assert_close(out.presence, torch.tensor([[1.5, 0.5]]))
    torch.testing.assert_close(out.contributions, torch.tensor([[[3.0, -1.5]]]))
    torch.testing.assert_close(out.output, torch.tensor([[0.5 + 3.0 - 1.5]]))
    # Interactions: + V_pq * g_p * g_q, split half and half between p and q.
    config.interactions = True
    model2 = SiamModel(config, LoadedModel.wrap(nn.Sequential(nn.Identity())), in_channels=2)
    model2.head.load_state_dict(model.head.state_dict(), strict=False)
    with torch.no_grad():
        model2.head.pair.zero_()
        model2.head.pair[0, 0, 1] = 4.0  # upper triangle is the parameter
    out2 = model2.head(feats)
    torch.testing.assert_close(out2.contributions, torch.tensor([[[3.0 + 1.5, -1.5 + 1.5]]]))
    torch.testing.assert_close(out2.output, torch.tensor([[2.0 + 4.0 * 1.5 * 0.5]]))


def test_border_zeroing_and_bad_settings():
    model = _tiny_model(border=1)
    maps = model.head.maps(torch.randn(2, 5, 8, 8))
    assert (maps[..., 0, :] == 0).all() and (maps[..., -1] == 0).all()
    assert (maps[..., 1:-1, 1:-1] > 0).all()
    with pytest.raises(ValueError, match="pooling"):
        _tiny_model(pooling="max")


def test_trunk_leaves_no_hooks_and_stops_early():
    model = _tiny_model()
    calls = []
    handle = model.trunk.net[2].register_forward_hook(lambda *a: calls.append(1))
    feats = model.trunk(torch.randn(1, 3, 16, 16))
    handle.remove()
    assert feats.shape == (1, 5, 8, 8) and calls == [1]
    assert not any(m._forward_hooks for m in model.trunk.net.modules())


def test_effective_weights_by_hand():
    """Templates pooling: a uniform map of 1 pools to mean(|tau_kt|), so W_eff = sum_t W_kt mean."""
    model = _tiny_model(pooling="templates", templates=2)
    with torch.no_grad():
        model.head.templates[:, 0] = 2.0
        model.head.templates[:, 1] = -0.5  # used as |tau| = 0.5
        model.head.weight.copy_(torch.tensor([[[1.0, 4.0], [-1.0, 2.0], [0.5, 0.0]]]))
    expected = torch.tensor([2.0 + 2.0, -2.0 + 1.0, 1.0])
    torch.testing.assert_close(model.head.effective_weights(0), expected)
    torch.testing.assert_close(effective_weights(model), expected)
    torch.testing.assert_close(model.explain(torch.randn(1, 3, 16, 16)).weights[0], expected)


def test_features_predict_and_explain_give_the_model_back_as_it_came():
    model = _tiny_model()
    model.train()
    model.trunk.net[0].eval()  # a mixed state must survive
    model.head.bias.requires_grad_(False)
    state = lambda: (  # noqa: E731
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        hook_count(model),
    )
    before = state()
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    feats = extract_features(model, images, batch_size=2)
    assert feats.shape == (3, 5, 8, 8) and state() == before
    assert predict(model, SiamData(images))["output"].shape == (3, 1) and state() == before
    model.explain(torch.randn(1, 3, 16, 16))
    assert state() == before
    with pytest.raises(RuntimeError):  # 4 channels into a 3-channel conv
        model.explain(torch.randn(1, 4, 16, 16))
    assert state() == before


# ----------------------------------------------------------------------------- training


def test_training_learns_and_alternates_sets():
    data = _features(120)
    attrs_only = SiamData(data.inputs[:60], data.attributes[:60], None)
    task_only = SiamData(data.inputs[60:], None, data.target[60:])
    model = _tiny_model()
    settings = TrainSettings(epochs=60, batch_size=20, lr=0.05, step=30)
    history = train(model, [attrs_only, task_only], settings)
    assert history[-1]["attributes"] < 0.6 * history[0]["attributes"]
    assert history[-1]["task"] < 0.6 * history[0]["task"]


def test_fine_tuning_trains_the_trunk_and_classification():
    g = torch.Generator().manual_seed(1)
    images = (torch.rand(24, 3, 16, 16, generator=g) * 255).to(torch.uint8)
    labels = (images.float().mean(dim=(1, 2, 3)) > 127).long()  # bright vs dark
    attrs = torch.stack([labels.float(), 1 - labels.float(), torch.full((24,), math.nan)], 1)
    model = _tiny_model(task="classification", outputs=["dark", "bright"])
    before = [p.clone() for p in model.trunk.parameters()]
    settings = TrainSettings(epochs=3, batch_size=8, freeze=False, trunk_lr=1e-2)
    history = train(model, SiamData(images, attrs, labels), settings)
    assert all(not torch.equal(a, b) for a, b in zip(before, model.trunk.parameters()))
    assert all(p.requires_grad for p in model.trunk.parameters())
    assert len(history) == 3 and history[-1]["task"] > 0
    expl = model.explain(torch.randn(2, 3, 16, 16))
    assert expl.contributions.shape == (2, 2, K) and expl.error() < 1e-5
    assert torch.equal(expl.explained, expl.output.argmax(1))
    with pytest.raises(ValueError, match="fine-tuning"):
        train(model, _features(8), settings)


def test_checkpoint_round_trip_and_resume(tmp_path):
    data = _features(40)
    settings = TrainSettings(epochs=4, batch_size=16, step=2)
    straight = _tiny_model(pooling="templates", templates=2, grid=2)
    train(straight, data, settings)

    ckpt = tmp_path / "m.pt"
    first = _tiny_model(pooling="templates", templates=2, grid=2)
    train(first, data, TrainSettings(epochs=2, batch_size=16, step=2), checkpoint=ckpt)
    resumed = _tiny_model(pooling="templates", templates=2, grid=2)
    history = train(resumed, data, settings, checkpoint=ckpt, resume=True)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    for (name, a), b in zip(straight.head.state_dict().items(), resumed.head.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)

    fresh = _tiny_model(pooling="templates", templates=2, grid=2)
    state = load_checkpoint(ckpt, fresh)
    assert state["config"] == resumed.config.to_dict() and state["epoch"] == 4
    x = torch.randn(3, 3, 16, 16)
    torch.testing.assert_close(fresh(x).output, resumed.eval()(x).output, rtol=0, atol=0)
    raw = torch.load(ckpt, weights_only=True)  # plain tensors and JSON-able values only
    assert set(raw) >= {"config", "head", "optimizer", "scheduler", "history"}
    save_checkpoint(tmp_path / "plain.pt", fresh)
    plain = load_checkpoint(
        tmp_path / "plain.pt", _tiny_model(pooling="templates", templates=2, grid=2)
    )
    assert plain["epoch"] == 0 and plain["optimizer"] is None
    torch.testing.assert_close(plain["model"](x).output, fresh(x).output, rtol=0, atol=0)
    with pytest.raises(ValueError, match="pooling"):
        load_checkpoint(tmp_path / "plain.pt", _tiny_model())


def test_curve_png(tmp_path):
    hist = [
        {"epoch": i + 1, "loss": 1.0 / (i + 1), "attributes": 0.5, "task": 0.2} for i in range(5)
    ]
    path = curve_png(hist, tmp_path / "c.png")
    img = Image.open(path)
    assert img.size == (640, 360) and len(np.unique(np.asarray(img).reshape(-1, 3), axis=0)) > 3


# ----------------------------------------------------------------------------- metrics, page


def test_metrics_by_hand():
    y = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert r2_score(y, y) == 1.0
    assert r2_score(y, torch.full((4,), 2.5)) == pytest.approx(0.0)
    signs, rho = weight_recovery([0.9, -2.0, 0.01], [1.0, -3.0, -0.05], noise=0.1)
    assert signs and rho == pytest.approx(1.0)
    signs, _ = weight_recovery([-0.9, -2.0, 0.01], [1.0, -3.0, -0.05], noise=0.1)
    assert not signs
    maps = torch.zeros(2, 2, 4, 4)
    maps[0, 0, 0, 0] = 1  # attribute 0 of image 0 peaks at (0, 0)
    maps[1, 0, 3, 3] = 1
    maps[:, 1] = torch.rand(2, 4, 4)
    masks = torch.zeros(2, 2, 40, 40, dtype=torch.bool)
    masks[:, 0, :10, :10] = True  # top-left quarter
    present = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # attribute 1 absent: not scored
    acc, pairs, per = attribute_pointing(maps, masks, present, tolerance=0, reference_size=None)
    assert pairs == 2 and acc == 0.5 and per[0] == 0.5 and math.isnan(per[1])


def test_page_is_self_contained_and_escaped():
    model = _tiny_model()
    model.config.attributes = ["<script>x</script>", "b", "c"]
    with torch.no_grad():
        model.head.weight.copy_(torch.tensor([[[3.0], [-1.0], [0.2]]]))
    expl = model.explain(torch.randn(1, 3, 16, 16))
    text = render_explanation(Image.new("RGB", (16, 16)), expl, settings={"ckpt": "<b>"})
    assert "<script>" not in text and "&lt;script&gt;" in text and "&lt;b&gt;" in text
    assert "http://" not in text and "https://" not in text and "data:image/png" in text
    assert "|difference|" in text and text.count("<figure>") >= 3


@pytest.mark.slow
def test_small_scenic_training_meets_scaled_down_acceptance():
    """400 scenes at 128 px, frozen bundled backbone: about 20 s on one CPU thread."""
    from cnnlens.siam import fit_scenic

    config = SiamConfig(attributes=list(sc.ATTRIBUTES), size=128)
    run = fit_scenic(400, 150, config=config, settings=TrainSettings(epochs=100))
    s = run.scores
    assert s.r2 >= 0.85, s.lines()
    assert s.auc >= 0.95, s.lines()
    assert s.pointing >= 0.9, s.lines()
    assert s.spearman >= 0.8, s.lines()
    for name, c in s.true_coefficients.items():  # the large effects keep their sign
        if abs(c) >= 1.0:
            assert np.sign(s.weights[name]) == np.sign(c), (name, s.weights)
    assert [h["epoch"] for h in run.history] == list(range(1, 101))
