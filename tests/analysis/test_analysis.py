"""Dataset analysis: receptive fields, the feature index (resume, bad files), neighbours,
top patches, 2-D maps and their pages."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torch import nn

from cnnlens import analysis as A
from cnnlens.core import progress
from cnnlens.core.geometry import kernel_of, same_padding, total_padding
from cnnlens.models.base import LoadedModel, Preprocess
from helpers import StopAfter, assert_unchanged, snapshot


# --------------------------------------------------------------------------- receptive fields
def test_analytic_field_hand_worked():
    # conv3 p1: (1, -1, 1); maxpool 2: (2, -1, 2); conv3 s2 d2: (4, -1, 2 + 2 * 4) = (4, -1, 10)
    net = nn.Sequential(
        nn.Conv2d(3, 2, 3, padding=1), nn.MaxPool2d(2), nn.Conv2d(2, 2, 3, stride=2, dilation=2)
    )
    rf = A.analytic_field(net, "2", (32, 32))
    assert rf.y == A.Field1D(4, -1, 10) and rf.x == rf.y
    assert rf.y.size == 12
    assert rf.box(1, 2) == (3, 7, 15, 19)
    assert rf.box(0, 0) == (0, 0, 11, 11)  # clipped to the input


def test_padding_solved_from_shapes_hand_worked():
    # k5 s2 on 9 -> 5 (TF "same"): total 4*2 + 4 + 1 - 9 = 4, declared 0 gives only 3
    same = kernel_of(nn.Conv2d(1, 1, 5, stride=2))
    assert same.left_padding((9, 9), (5, 5)) == (2, 2)
    assert same.paddings((9, 9), (5, 5)) == [((0, 4), (0, 4)), ((2, 2), (2, 2))]
    # k3 s2 on 224 -> 112: total 1, the smaller half first (TensorFlow)
    assert same_padding(total_padding(224, 112, 3, 2, 1)) == (0, 1)
    # declared padding that explains the shapes wins; "valid" drops the last pixel
    assert kernel_of(nn.MaxPool2d(3, 2, 1)).left_padding((8, 8), (4, 4)) == (1, 1)
    valid = kernel_of(nn.Conv2d(1, 1, 3, stride=2, padding="valid"))
    assert valid.padding is None and valid.left_padding((8, 8), (3, 3)) == (0, 0)
    assert valid.paddings((8, 8), (3, 3)) == [((-1, 0), (-1, 0))]
    assert kernel_of(nn.AvgPool2d(2)).d == (1, 1) and kernel_of(nn.ReLU()) is None


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.branch = nn.Sequential(nn.Conv2d(4, 4, 5, padding=2), nn.BatchNorm2d(4))
        self.pool = nn.AvgPool2d(3, stride=2, padding=1)
        self.head = nn.Conv2d(4, 3, 3, dilation=2, padding=2)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.branch(x)
        return self.head(self.pool(x))


@pytest.mark.parametrize("position", [(0, 0), (2, 3), (7, 7)])
def test_analytic_matches_gradient_on_residual_net(position):
    net = _Residual().eval()
    rf = A.analytic_field(net, "head", (32, 32))
    assert rf.method == "analytic"
    assert rf.box(*position) == A.gradient_field(net, "head", position, (32, 32))


def test_analytic_matches_gradient_on_bundled_model_with_same_padding(bundled):
    net = bundled.net
    before = snapshot(net)
    for layer in ("blocks.1", "blocks.2.0.conv_dw"):
        rf = A.analytic_field(net, layer)
        assert rf.box(3, 5) == A.gradient_field(net, layer, (3, 5), trials=1)
    assert_unchanged(before, net)


def test_unsupported_graph_falls_back_to_gradient():
    class Up(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 2, 3, stride=2, padding=1)
            self.b = nn.Conv2d(2, 2, 3, padding=1)

        def forward(self, x):
            return self.b(nn.functional.interpolate(self.a(x), scale_factor=2.0))

    net = Up().eval()
    with pytest.raises(A.UnsupportedGraph, match="interpolate"):
        A.analytic_field(net, "b", (16, 16))
    rf = A.receptive_field(net, "b", (16, 16))
    assert rf.method == "gradient"
    assert rf.box(8, 8) == A.gradient_field(net, "b", (8, 8), (16, 16))


# --------------------------------------------------------------------------- index
def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(4, 6, 3, stride=2, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 3),
    )


def _tiny(net=None):
    spec = Preprocess(crop=32, resize=None, mean=(0.5,) * 3, std=(0.5,) * 3)
    return LoadedModel(net or _net(), spec, ["a", "b", "c"], "tiny")


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "ds"
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(11):
        arr = rng.integers(0, 255, (40 + i, 48, 3), dtype=np.uint8)
        Image.fromarray(arr).save(root / ("sub" if i % 2 else ".") / f"img{i:02d}.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return root


def _arrays(index):
    out = {"status": np.array(index.status), "thumbs": np.array(index.thumbnails())}
    out.update(zip(("pidx", "pprob"), map(np.array, index.predictions())))
    for layer in index.layers:
        out[layer + "/f"] = np.array(index.features(layer))
        out[layer + "/m"], out[layer + "/a"] = map(np.array, index.max_activations(layer))
    return out


def test_index_values_and_bad_file(folder, tmp_path):
    model = _tiny()
    before = snapshot(model.net)
    idx = A.build_index(model, folder, tmp_path / "idx", ["0", "2"], batch_size=4, dtype="float32")
    assert_unchanged(before, model.net)
    assert len(idx) == 12 and len(idx.ok) == 11
    assert [f["path"].endswith("broken.jpg") for f in idx.failures] == [True]
    assert "not an image" in idx.failures[0]["reason"]
    assert idx.meta["layers"] == {"0": [4, 32, 32], "2": [6, 16, 16]}
    e = int(idx.ok[3])
    x = model.preprocess(Image.open(idx.paths[e]))
    with torch.no_grad():
        act = model.net[:3](x)  # ReLU is in place: "0" is recorded before it
        conv0 = model.net[0](x)
    np.testing.assert_allclose(idx.features("2")[e], act.mean((2, 3))[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(idx.features("0")[e], conv0.mean((2, 3))[0], rtol=1e-5, atol=1e-6)
    flat = act.flatten(2)[0]
    np.testing.assert_allclose(idx.max_activations("2")[0][e], flat.max(1).values, rtol=1e-5)
    np.testing.assert_array_equal(idx.max_activations("2")[1][e], flat.argmax(1).numpy())
    probs = torch.softmax(model.net(x), 1)[0]
    assert idx.predictions()[0][e, 0] == int(probs.argmax())


def test_resume_after_interruption_equals_one_run(folder, tmp_path):
    model = _tiny()
    whole = A.build_index(model, folder, tmp_path / "one", ["2"], batch_size=3, checkpoint_every=3)
    with pytest.raises(KeyboardInterrupt), progress.reporting(StopAfter(6)):
        A.build_index(model, folder, tmp_path / "two", ["2"], batch_size=3, checkpoint_every=3)
    state = json.loads((tmp_path / "two" / "state.json").read_text())
    assert state["done"] == 6
    partial = A.open_index(tmp_path / "two")
    assert not partial.complete and list(np.asarray(partial.status)[6:]) == [0] * 6
    resumed = A.build_index(model, folder, tmp_path / "two", ["2"], batch_size=3)
    assert resumed.complete and len(resumed.failures) == 1
    a, b = _arrays(whole), _arrays(resumed)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_index_refuses_other_model_or_layers(folder, tmp_path):
    A.build_index(_tiny(), folder, tmp_path / "idx", ["2"])
    with pytest.raises(A.IndexFolderError) as info:
        A.build_index(_tiny(), folder, tmp_path / "idx", ["0"])
    assert str(info.value) == (
        f"{tmp_path / 'idx'} holds an index of tiny at layers 2, not of tiny at 0; resume or "
        "--append with the same model and layers, or choose a new --out folder"
    )
    with pytest.raises(A.IndexFolderError, match="other images, layers or model; add new"):
        A.build_index(_tiny(), folder / "sub", tmp_path / "idx", ["2"])
    with pytest.raises(A.IndexFolderError, match="not a cnnlens index"):
        A.open_index(tmp_path)
    with pytest.raises(A.IndexFolderError, match="indexed layers: 2"):
        A.open_index(tmp_path / "idx").features("0")


def test_label_csv(folder, tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\nimg00.png,cat\nsub/img01.png,dog\n")
    idx = A.build_index(_tiny(), folder, tmp_path / "idx", ["2"], label_csv=csv)
    by_name = dict(zip([p.split("/")[-1] for p in idx.paths], idx.labels))
    assert by_name["img00.png"] == "cat" and by_name["img01.png"] == "dog"
    assert by_name["img02.png"] == ""


# --------------------------------------------------------------------------- neighbours
@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_chunked_search_is_exact(metric):
    rng = np.random.default_rng(1)
    data, q = rng.normal(size=(103, 7)).astype(np.float32), rng.normal(size=(4, 7))
    valid = np.ones(103, bool)
    valid[[5, 50]] = False
    nb = A.search(q, data, 6, metric, valid=valid, exclude=[None, 3, None, None], chunk=16)
    if metric == "cosine":
        dn = data / np.linalg.norm(data, axis=1, keepdims=True)
        d = 1 - (q / np.linalg.norm(q, axis=1, keepdims=True)) @ dn.T
    else:
        d = np.linalg.norm(q[:, None] - data[None], axis=2)
    d[:, ~valid] = np.inf
    d[1, 3] = np.inf
    np.testing.assert_array_equal(nb.indices, np.argsort(d, axis=1)[:, :6])
    np.testing.assert_allclose(nb.distances, np.sort(d, axis=1)[:, :6], rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def bundled():
    import cnnlens as cl

    return cl.load_model()


@pytest.fixture(scope="module")
def photo_index(bundled, tmp_path_factory):
    import cnnlens as cl

    root = tmp_path_factory.mktemp("photos")
    for name, img in cl.sample_images(["chelsea", "coffee", "astronaut", "rocket"]).items():
        img.save(root / f"{name}.png")
        img.transpose(Image.FLIP_LEFT_RIGHT).save(root / f"{name}_flip.png")
        w, h = img.size
        img.crop((w // 20, h // 20, w - w // 20, h - h // 20)).save(root / f"{name}_crop.png")
    return A.build_index(bundled, root, root / "index", ["blocks.3", "conv_head"], batch_size=6)


def test_neighbours_find_near_duplicates_first(photo_index):
    idx = photo_index
    names = [p.split("/")[-1][:-4] for p in idx.paths]
    for e, name in enumerate(names):
        if "_" in name:
            continue
        by_feat, by_pix = A.nearest(idx, e, "conv_head", k=3)
        found = {names[i] for i in by_feat.indices[0, :2]}
        assert found == {f"{name}_flip", f"{name}_crop"}, (name, found)
        assert e not in by_feat.indices[0]


def test_neighbours_of_a_new_image_file(photo_index, bundled, tmp_path):
    import cnnlens as cl

    img = cl.sample_images(["coffee"])["coffee"].resize((300, 200))
    img.save(tmp_path / "q.png")
    by_feat, _ = A.nearest(photo_index, tmp_path / "q.png", "conv_head", 2, model=bundled)
    assert {photo_index.paths[i].split("/")[-1] for i in by_feat.indices[0]} <= {
        "coffee.png", "coffee_flip.png", "coffee_crop.png"}  # fmt: skip
    with pytest.raises(ValueError, match="needs the model"):
        A.nearest(photo_index, tmp_path / "q.png", "conv_head")


# --------------------------------------------------------------------------- patches
def test_input_box_to_image_hand_worked():
    # 400x200 image, resize shorter side to 100 -> 200x100, centre crop 100 -> offset x 50
    box = A.input_box_to_image((10, 20, 30, 40), (400, 200), {"crop": 100, "resize": 100})
    assert box == (20, 140, 60, 180)
    assert A.input_box_to_image((0, 0, 16, 32), (64, 128), {"crop": 32, "resize": None}) == (
        0, 0, 64, 64)  # fmt: skip


def test_top_patches_find_the_bright_square(tmp_path):
    conv = nn.Conv2d(3, 1, 3, stride=2, padding=1, bias=False)
    nn.init.constant_(conv.weight, 1 / 27)
    net = nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model = LoadedModel(net, Preprocess(crop=32, resize=None, mean=(0,) * 3, std=(1,) * 3))
    root = tmp_path / "sq"
    root.mkdir()
    spots = {"a": (8, 40, 250), "b": (48, 16, 150), "c": (24, 24, 200), "d": (0, 0, 0)}
    for name, (x, y, v) in spots.items():
        img = Image.new("RGB", (64, 64))
        ImageDraw.Draw(img).rectangle([x, y, x + 11, y + 11], fill=(v, v, v))
        img.save(root / f"{name}.png")
    idx = A.build_index(model, root, tmp_path / "idx", ["0"], dtype="float32")
    assert idx.meta["receptive_fields"]["0"]["y"] == [2, -1, 1]
    patches = A.top_patches(idx, "0", 0, k=3)
    assert [p.path[-5] for p in patches] == ["a", "c", "b"]
    assert patches[0].value == pytest.approx(250 / 255, rel=1e-5)
    for p in patches:
        x, y, _ = spots[p.path[-5]]
        t, lft, b, r = p.image_box
        assert b - t == 6 and r - lft == 6  # 3 input pixels = 6 original pixels
        assert y <= t and b <= y + 12 and x <= lft and r <= x + 12
    page = A.write_patch_pages(idx, "0", [0], tmp_path / "out", k=2)
    assert "unit 0" in page.read_text() and (tmp_path / "out" / "patches-0-unit0.png").is_file()
    with pytest.raises(ValueError, match="units 0-0"):
        A.top_patches(idx, "0", 1)


# --------------------------------------------------------------------------- maps
def test_pca_shape_and_seed():
    x = np.random.default_rng(0).normal(size=(40, 12))
    a, b = A.embed(x, "pca", seed=3), A.embed(x, "pca", seed=3)
    assert a.shape == (40, 2) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="pca, tsne, umap"):
        A.embed(x, "mds")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["tsne", "umap"])
def test_tsne_umap_shape_and_seed(method):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (40, 10)), rng.normal(8, 1, (40, 10))])
    a, b = A.embed(x, method, seed=1), A.embed(x, method, seed=1)
    assert a.shape == (80, 2) and np.isfinite(a).all()
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    # the two clusters stay apart: between-centre distance beats the spread within
    gap = np.linalg.norm(a[:40].mean(0) - a[40:].mean(0))
    assert gap > 2 * max(a[:40].std(0).max(), a[40:].std(0).max())


def test_grid_assignment_hand_worked():
    pts = np.array([[0.0, 0.0], [1.0, 1.0], [0.05, 0.95], [0.5, 0.5]])
    grid = A.grid_assignment(pts, 2)
    # rows top to bottom (y high first); pairs nearest first: point 2 takes the top-left cell
    # (0.283 away); the 0.354 ties go by point number: 0 bottom-left, 1 top-right, and 3 the
    # one cell of its four left free
    assert grid.tolist() == [[2, 1], [0, 3]]
    far = A.grid_assignment(np.array([[0.0, 0.0], [1.0, 1.0], [0, 1.0]]), 4)
    assert (far == -1).sum() == 13


def test_map_page_escapes_and_embeds(tmp_path):
    coords = np.array([[0.0, 0.0], [1.0, 2.0], [3.0, 1.0]])
    thumbs = np.full((3, 8, 8, 3), 200, np.uint8)
    pic, _ = A.thumbnail_grid(coords, thumbs, 4, 8)
    page = A.write_map_page(tmp_path / "m.html", coords, ["<b>x</b>.png", "y", "z"],
                            ["cat", "dog", "cat"], "t<s>", pic)  # fmt: skip
    text = page.read_text()
    assert "<b>x" not in text and "&lt;b&gt;x" in text and "t&lt;s&gt;" in text
    assert text.count("<circle") == 3 and "data:image/png;base64," in text
    assert "http" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")


# --------------------------------------------------------------------------- Ray
@pytest.mark.slow
def test_ray_index_matches_local_run(folder, tmp_path):
    ray = pytest.importorskip("ray")
    model = _tiny()
    local = A.build_index(model, folder, tmp_path / "local", ["0", "2"], batch_size=4)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = A.build_index(model, folder, tmp_path / "ray", ["0", "2"], batch_size=4,
                               num_workers=2, checkpoint_every=5, ray_address="local")  # fmt: skip
    finally:
        ray.shutdown()
    assert remote.complete and [f["path"] for f in remote.failures] == [
        f["path"] for f in local.failures
    ]
    a, b = _arrays(local), _arrays(remote)
    for key in a:
        if key.endswith("/a") or key in ("status", "thumbs", "pidx"):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        else:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-3, atol=1e-3, err_msg=key)
