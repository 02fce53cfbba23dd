"""Adding images to a feature index (``append=True``), refusals, the pixel limit, listing errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnnlens import analysis as A
from cnnlens.analysis import append as appending
from cnnlens.core import progress
from cnnlens.core.errors import ImageError
from cnnlens.io import NoImagesError
from cnnlens.models.base import LoadedModel, Preprocess
from helpers import StopAfter


def _model(seed: int = 0, name: str = "tiny") -> LoadedModel:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 3),
    )
    spec = Preprocess(crop=32, resize=None, mean=(0.5,) * 3, std=(0.5,) * 3)
    return LoadedModel(net, spec, ["a", "b", "c"], name)


@pytest.fixture
def photos(tmp_path):
    """p0.png .. p6.png (width 36, heights 30 .. 36) and a broken p7.jpg."""
    root = tmp_path / "ds"
    root.mkdir()
    rng = np.random.default_rng(3)
    for i in range(7):
        arr = rng.integers(0, 255, (30 + i, 36, 3), dtype=np.uint8)
        Image.fromarray(arr).save(root / f"p{i}.png")
    (root / "p7.jpg").write_bytes(b"not a jpeg")
    return root


def _arrays(index) -> dict[str, np.ndarray]:
    out = {"status": np.array(index.status), "thumbs": np.array(index.thumbnails())}
    out.update(zip(("pidx", "pprob"), map(np.array, index.predictions())))
    for layer in index.layers:
        out[layer + "/f"] = np.array(index.features(layer))
        out[layer + "/m"], out[layer + "/a"] = map(np.array, index.max_activations(layer))
    return out


def _assert_same(a, b) -> None:
    assert a.paths == b.paths and a.labels == b.labels
    x, y = _arrays(a), _arrays(b)
    assert sorted(x) == sorted(y)
    for key in x:
        np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def test_append_adds_only_new_images_and_equals_one_run(photos, tmp_path):
    files = sorted(photos.iterdir())  # p0.png .. p6.png, p7.jpg
    first = [files[4], files[1], files[7]]
    added = [f for f in files if f not in first]  # the folder's order
    model = _model()
    kw = {"batch_size": 1, "dtype": "float32"}
    A.build_index(model, first, tmp_path / "grown", ["0", "2"], **kw)
    grown = A.build_index(model, photos, tmp_path / "grown", append=True, **kw)  # its layers
    assert grown.paths == [str(f) for f in first + added]
    assert grown.complete and [f["path"] for f in grown.failures] == [str(files[7])]
    _assert_same(grown, A.build_index(model, first + added, tmp_path / "once", ["0", "2"], **kw))
    # nothing new: the index is left as it was
    before = (tmp_path / "grown" / "images.json").read_text()
    again = A.build_index(model, photos, tmp_path / "grown", append=True)
    assert len(again) == 8 and (tmp_path / "grown" / "images.json").read_text() == before


def test_append_labels_new_images_from_the_csv(photos, tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\np0.png,x\np5.png,y\n")
    root = tmp_path / "idx"
    A.build_index(_model(), [photos / "p0.png", photos / "p1.png"], root, ["2"])
    assert A.open_index(root).labels is None
    grown = A.build_index(_model(), photos, root, label_csv=csv, append=True)
    by_name = {p.split("/")[-1]: v for p, v in zip(grown.paths, grown.labels)}
    # p0 was indexed before, without labels: it keeps the empty one
    assert by_name == {"p0.png": "", "p1.png": "", "p2.png": "", "p3.png": "", "p4.png": "",
                       "p5.png": "y", "p6.png": "", "p7.jpg": ""}  # fmt: skip


def test_append_stopped_before_recording_paths_leaves_a_valid_index(photos, tmp_path, monkeypatch):
    model = _model()
    files = sorted(photos.iterdir())
    root = tmp_path / "idx"
    A.build_index(model, files[:3], root, ["2"], batch_size=1)

    def crash(path, data):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(appending, "write_json_atomic", crash)
        with pytest.raises(KeyboardInterrupt):
            A.build_index(model, photos, root, append=True)
    assert np.load(root / "layers" / "2" / "features.npy").shape == (8, 6)  # grown
    old = A.open_index(root)
    assert len(old) == 3 and old.complete and old.features("2").shape == (3, 6)
    grown = A.build_index(model, photos, root, append=True, batch_size=1)
    _assert_same(grown, A.build_index(model, files, tmp_path / "once", ["2"], batch_size=1))


def test_interrupted_append_continues_on_the_next_append(photos, tmp_path):
    model = _model()
    files = sorted(photos.iterdir())
    root = tmp_path / "idx"
    A.build_index(model, files[:2], root, ["2"], batch_size=1)
    with pytest.raises(KeyboardInterrupt), progress.reporting(StopAfter(3)):
        A.build_index(model, photos, root, append=True, batch_size=1, checkpoint_every=1)
    state = json.loads((root / "state.json").read_text())
    assert state["done"] == 5 and len(A.open_index(root)) == 8  # 2 + 3 of the 6 new
    grown = A.build_index(model, photos, root, append=True, batch_size=1)
    assert grown.complete
    _assert_same(grown, A.build_index(model, files, tmp_path / "once", ["2"], batch_size=1))


def test_append_refuses_another_model_other_weights_or_layers(photos, tmp_path):
    root = tmp_path / "idx"
    A.build_index(_model(), [photos / "p0.png"], root, ["2"])
    tail = "; resume or --append with the same model and layers, or choose a new --out folder"
    cases = [
        (_model(), ["0"], f"{root} holds an index of tiny at layers 2, not of tiny at 0{tail}"),
        (_model(name="other"), None, f"{root} holds an index of tiny at layers 2, not of other "
                                     f"at 2{tail}"),
        (_model(seed=1), None, f"{root} holds an index of tiny at layers 2, not of tiny with "
                               f"other weights at 2{tail}"),
    ]  # fmt: skip
    for model, layers, message in cases:
        with pytest.raises(A.IndexFolderError) as info:
            A.build_index(model, photos, root, layers, append=True)
        assert str(info.value) == message
    assert len(A.open_index(root)) == 1


def test_missing_file_or_empty_folder_is_refused_before_anything_is_written(photos, tmp_path):
    missing = photos / "nope.png"
    with pytest.raises(ImageError) as info:
        A.build_index(_model(), [photos / "p0.png", missing], tmp_path / "a")
    assert str(info.value) == f"{missing}: no such file or directory"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NoImagesError, match=f"^no images found in {empty} "):
        A.build_index(_model(), empty, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_pixel_limit_refuses_large_images_and_is_recorded(photos, tmp_path):
    root = tmp_path / "idx"
    idx = A.build_index(_model(), photos, root, ["2"], max_pixels=1200)
    reasons = {f["path"].split("/")[-1]: f["reason"] for f in idx.failures}
    # p4 is 36 wide, 34 high: 1224 pixels; p5 1260, p6 1296; p3 (1188) is under the limit
    assert sorted(reasons) == ["p4.png", "p5.png", "p6.png", "p7.jpg"]
    assert reasons["p4.png"].startswith(
        "image is 36x34 = 1,224 pixels, more than the limit of 1,200 (possible decompression"
    )
    assert idx.max_pixels == 1200 and len(idx.ok) == 4
    # a later run with a larger limit records the larger one (for reloading the images)
    assert A.build_index(_model(), photos, root, ["2"], max_pixels=5000).max_pixels == 5000
    assert A.build_index(_model(), photos, root, ["2"], max_pixels=100).max_pixels == 5000
