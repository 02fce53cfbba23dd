"""Tests of cnnlens.models: the bundled model, torchvision/timm by name, local
checkpoints (and their safety), label files and preprocessing.

Nothing here downloads weights: torchvision and timm architectures are built with
``weights="none"`` and every checkpoint is written to ``tmp_path`` first.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import safetensors.torch
import timm
import torch
import torchvision
from PIL import Image
from torch import nn

import cnnlens as cl
from cnnlens.models import (
    BUNDLED,
    LabelsWarning,
    LoadedModel,
    Preprocess,
    imagenet_classes,
    read_labels,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module", autouse=True)
def _one_cpu_thread():
    """Small CPU forward passes are many times slower with intra-op threads fighting
    other processes for the cores; one thread keeps this file fast. Restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _resnet18_state(seed: int = 0, num_classes: int = 1000) -> dict[str, torch.Tensor]:
    """A randomly initialised torchvision resnet18 state dict with two marked entries."""
    torch.manual_seed(seed)
    net = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    # Values no initialiser produces, so a match proves the file was really loaded.
    state["conv1.weight"][0, 0, 0, 0] = 123.25
    state["fc.bias"][:] = torch.arange(num_classes, dtype=torch.float32) / 7.0
    return state


def _assert_same_state(net: nn.Module, state: dict[str, torch.Tensor]) -> None:
    own = net.state_dict()
    assert set(own) == set(state)
    for key, value in state.items():
        assert torch.equal(own[key].cpu(), value), key


class _TouchOnUnpickle:
    """Unpickling this object creates ``marker``: a stand-in for malicious code."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


class _FailsOnUnpickle:
    """Unpickling this object raises ValueError (from ``int("not a number")``)."""

    def __reduce__(self):
        return (int, ("not a number",))


def _striped_image() -> Image.Image:
    """600x300 RGB: ten 60-px vertical stripes with red = 20*i + 10, green 200
    except a 12-row black band at the top, blue 100."""
    arr = np.zeros((300, 600, 3), dtype=np.uint8)
    for i in range(10):
        arr[:, 60 * i : 60 * (i + 1), 0] = 20 * i + 10
    arr[:, :, 1] = 200
    arr[:12, :, 1] = 0
    arr[:, :, 2] = 100
    return Image.fromarray(arr)


# --------------------------------------------------------------------------- bundled model


@pytest.fixture(scope="module")
def bundled() -> LoadedModel:
    return cl.load_model()


@pytest.fixture(scope="module")
def bundled_prediction(bundled):
    images = cl.sample_images(["chelsea", "coffee"])
    x = bundled.preprocess([images["chelsea"], images["coffee"]])
    return x, bundled.predict(x, top_k=5)


def test_bundled_model_predicts_sample_photos(bundled_prediction):
    x, pred = bundled_prediction
    assert x.shape == (2, 3, 224, 224)
    assert pred.indices.shape == (2, 5) and pred.probs.shape == (2, 5)
    assert pred.indices[0, 0].item() == 285
    assert pred.labels[0][0] == "Egyptian cat"
    assert pred.probs[0, 0].item() > 0.5
    assert pred.indices[1, 0].item() == 967
    assert pred.labels[1][0] == "espresso"
    assert pred.probs[1, 0].item() > 0.5
    # Measured with torch 2.14 / timm 1.0 / scikit-image 0.26: 0.7936 and 0.9024.
    assert pred.probs[0, 0].item() == pytest.approx(0.794, abs=0.02)
    assert pred.probs[1, 0].item() == pytest.approx(0.902, abs=0.02)
    # Runners-up for the cat are the other cats (tiger cat 282, tabby 281).
    assert pred.indices[0, 1:3].tolist() == [282, 281]
    # Top-k probabilities are sorted and sum to at most one.
    assert torch.all(pred.probs[:, :-1] >= pred.probs[:, 1:])
    assert torch.all(pred.probs.sum(dim=1) <= 1.0 + 1e-6)
    as_list = pred.to_list()
    assert as_list[1][0]["index"] == 967 and as_list[1][0]["label"] == "espresso"
    assert as_list[1][0]["prob"] == pytest.approx(pred.probs[1, 0].item())


def test_bundled_model_metadata(bundled):
    spec = bundled.preprocess_spec
    assert spec.crop == 224
    assert spec.resize is None
    assert spec.mean == (0.5, 0.5, 0.5)
    assert spec.std == (0.5, 0.5, 0.5)
    assert bundled.name == BUNDLED == "efficientnet_lite0"
    assert len(bundled.class_names) == 1000
    assert bundled.class_names[285] == "Egyptian cat"
    assert bundled.class_names[967] == "espresso"
    assert bundled.label(285) == "Egyptian cat"
    assert bundled.label(1000) == "class_1000"
    assert bundled.net.training is False
    assert all(not m.training for m in bundled.net.modules())
    assert bundled.device == torch.device("cpu")


def test_predict_restores_training_mode_and_grad_flags(bundled, bundled_prediction):
    x, pred = bundled_prediction
    net = bundled.net
    net.train()
    try:
        again = bundled.predict(x[:1], top_k=1)
        assert net.training is True  # restored
        assert all(p.requires_grad for p in net.parameters())
    finally:
        net.eval()
    # The prediction itself ran in eval mode: same answer as before.
    assert again.indices[0, 0].item() == pred.indices[0, 0].item()
    assert again.probs[0, 0].item() == pytest.approx(pred.probs[0, 0].item(), abs=1e-5)


def test_bundled_alias_and_random_weights():
    model = cl.load_model("bundled", weights="none")
    assert model.name == BUNDLED
    assert model.preprocess_spec.resize is None
    assert model.net.training is False
    assert isinstance(model.net, timm.models.EfficientNet)


def test_list_models():
    models = cl.list_models()
    assert models["bundled"] == [BUNDLED]
    assert "resnet18" in models["torchvision"]
    assert "mobilenetv3_small_050" in models["timm"]
    assert "mobilenetv3_small_050" not in models["torchvision"]


# --------------------------------------------------------------------------- by name


def test_torchvision_by_name_without_weights():
    model = cl.load_model("resnet18", weights="none")
    assert isinstance(model.net, torchvision.models.ResNet)
    assert model.name == "resnet18"
    spec = model.preprocess_spec
    assert (spec.crop, spec.resize) == (224, 256)
    assert spec.mean == pytest.approx(IMAGENET_MEAN)
    assert spec.std == pytest.approx(IMAGENET_STD)
    assert spec.interpolation == "bilinear"
    assert len(model.class_names) == 1000
    assert model.class_names[285] == "Egyptian cat"
    assert model.net.training is False
    out = model.net(torch.zeros(1, 3, 64, 64))
    assert out.shape == (1, 1000)


def test_weights_none_accepts_python_none_and_any_case():
    for weights in (None, "NONE"):
        model = cl.load_model("resnet18", weights=weights)
        assert model.net.fc.out_features == 1000


def test_timm_by_name_without_weights():
    model = cl.load_model("mobilenetv3_small_050", weights="none")
    assert isinstance(model.net, timm.models.MobileNetV3)
    spec = model.preprocess_spec
    assert (spec.crop, spec.resize) == (224, 256)  # crop_pct 0.875
    assert spec.mean == pytest.approx(IMAGENET_MEAN)
    assert spec.std == pytest.approx(IMAGENET_STD)
    assert spec.interpolation == "bicubic"
    assert len(model.class_names) == 1000
    assert model.net(torch.zeros(1, 3, 64, 64)).shape == (1, 1000)


def test_timm_by_name_uses_model_specific_metadata():
    # timm's tiny test model: 160 px input, crop_pct 0.95, mean = std = 0.5, bilinear.
    model = cl.load_model("test_resnet", weights="none")
    spec = model.preprocess_spec
    assert spec.crop == 160
    assert spec.resize == 168
    assert spec.mean == pytest.approx((0.5, 0.5, 0.5))
    assert spec.std == pytest.approx((0.5, 0.5, 0.5))
    assert spec.interpolation == "bilinear"
    img = Image.new("RGB", (320, 200), (10, 20, 30))
    x = model.preprocess(img)
    assert x.shape == (1, 3, 160, 160)
    assert model.predict(x, top_k=3).indices.shape == (1, 3)


def test_timm_resize_matches_timm_eval_transform():
    model = cl.load_model("efficientvit_b0", weights="none")
    cfg = timm.data.resolve_data_config({}, model=model.net)
    transform = timm.data.create_transform(**cfg)
    resize = next(t for t in transform.transforms if type(t).__name__ == "Resize")
    expected = resize.size if isinstance(resize.size, int) else resize.size[0]
    assert expected == 235
    assert model.preprocess_spec.resize == expected


@pytest.mark.parametrize("typo", ["resnt50", "resnet5O"])
def test_unknown_name_suggests_close_names(typo):
    with pytest.raises(cl.ModelError) as info:
        cl.load_model(typo, weights="none")
    msg = str(info.value)
    assert repr(typo) in msg
    assert "Did you mean" in msg
    assert "resnet50" in msg
    assert isinstance(info.value, ValueError)  # ModelError is also a ValueError


def test_unknown_name_far_from_everything_has_no_suggestion():
    with pytest.raises(cl.ModelError) as info:
        cl.load_model("qqqqqqqqqqqqqqqq", weights="none")
    assert "Did you mean" not in str(info.value)
    assert "efficientnet_lite0" in str(info.value)


def test_suggestions_are_unique():
    with pytest.raises(cl.ModelError) as info:
        cl.load_model("resnt50", weights="none")
    hint = str(info.value).split("Did you mean ", 1)[1].split("?", 1)[0]
    names = hint.split(", ")
    assert len(names) == len(set(names)), names


# --------------------------------------------------------------------------- local weights


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".safetensors"])
def test_local_state_dict_loads_exactly(tmp_path, suffix):
    state = _resnet18_state(seed=1)
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        # save_file refuses shared or non-contiguous storage: give each tensor its own.
        safetensors.torch.save_file({k: v.contiguous().clone() for k, v in state.items()}, path)
    else:
        torch.save(state, path)
    model = cl.load_model("resnet18", weights=path)
    _assert_same_state(model.net, state)
    assert model.net.conv1.weight[0, 0, 0, 0].item() == 123.25
    assert model.net.training is False
    if suffix == ".pth":  # also as a str path
        again = cl.load_model("resnet18", weights=str(path))
        _assert_same_state(again.net, state)


def test_wrapped_and_dataparallel_checkpoints_load(tmp_path):
    state = _resnet18_state(seed=2)
    prefixed = {f"module.{k}": v for k, v in state.items()}
    cases = {
        "wrapped.pth": {"state_dict": state, "epoch": 3},
        "dp.pth": prefixed,
        "wrapped_dp.pth": {"state_dict": prefixed},
        "model_state.pth": {"model_state_dict": state, "optimizer": {"lr": 0.1}},
    }
    for filename, obj in cases.items():
        path = tmp_path / filename
        torch.save(obj, path)
        model = cl.load_model("resnet18", weights=path)
        _assert_same_state(model.net, state)


def test_checkpoint_with_other_head_size_rebuilds_the_head(tmp_path):
    state = _resnet18_state(seed=3, num_classes=10)
    path = tmp_path / "ten.pth"
    torch.save(state, path)
    model = cl.load_model("resnet18", weights=path)
    assert model.net.fc.out_features == 10
    _assert_same_state(model.net, state)
    assert model.class_names == [f"class_{i}" for i in range(10)]
    x = torch.zeros(2, 3, 64, 64)
    assert model.net(x).shape == (2, 10)
    pred = model.predict(x, top_k=20)  # k is capped at the number of classes
    assert pred.indices.shape == (2, 10)
    assert pred.labels[0][0].startswith("class_")
    assert pred.probs.sum(dim=1) == pytest.approx(torch.ones(2), abs=1e-5)


def test_timm_checkpoint_with_other_head_size_rebuilds_the_head(tmp_path):
    torch.manual_seed(4)
    net = timm.create_model("mobilenetv3_small_050", num_classes=7)
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    path = tmp_path / "seven.pt"
    torch.save(state, path)
    model = cl.load_model("mobilenetv3_small_050", weights=path)
    _assert_same_state(model.net, state)
    assert model.class_names == [f"class_{i}" for i in range(7)]
    assert model.net(torch.zeros(1, 3, 64, 64)).shape == (1, 7)


def test_wrong_architecture_names_missing_and_unexpected_keys(tmp_path):
    torch.manual_seed(5)
    other = torchvision.models.mobilenet_v3_small(weights=None)
    path = tmp_path / "mobilenet.pth"
    torch.save(other.state_dict(), path)
    with pytest.raises(cl.CheckpointError) as info:
        cl.load_model("resnet18", weights=path)
    msg = str(info.value)
    assert str(path) in msg
    assert "missing" in msg and "unexpected" in msg
    assert "conv1.weight" in msg  # a resnet18 key the file lacks
    assert "features.0.0.weight" in msg  # a mobilenet key resnet18 lacks


def test_wrong_head_shape_without_rebuild_is_refused(tmp_path):
    # The bundled model is never rebuilt: a 10-class checkpoint is a shape error.
    net = timm.create_model("tf_efficientnet_lite0", num_classes=10)
    path = tmp_path / "lite_ten.pth"
    torch.save(net.state_dict(), path)
    with pytest.raises(cl.CheckpointError) as info:
        cl.load_model(BUNDLED, weights=path)
    msg = str(info.value)
    assert "wrong shape" in msg
    assert "classifier.weight" in msg


def test_state_dict_passed_as_name_says_to_use_weights(tmp_path):
    path = tmp_path / "plain.pth"
    torch.save(_resnet18_state(), path)
    with pytest.raises(cl.ModelError) as info:
        cl.load_model(str(path))
    assert "holds weights, not a model" in str(info.value)


# --------------------------------------------------------------------------- checkpoint safety


@pytest.fixture()
def whole_model_file(tmp_path):
    torch.manual_seed(6)
    net = torchvision.models.resnet18(weights=None).eval()
    path = tmp_path / "whole.pt"
    torch.save(net, path)
    return net, path


def test_pickled_whole_model_is_refused_without_trust(whole_model_file):
    _, path = whole_model_file
    with pytest.raises(cl.CheckpointError) as info:
        cl.load_model("resnet18", weights=path)
    assert "trust_checkpoint" in str(info.value)
    with pytest.raises(cl.CheckpointError) as info:
        cl.load_model(str(path))
    assert "trust_checkpoint" in str(info.value)
    with pytest.raises(cl.CheckpointError):
        cl.load_model(path)  # a Path as name, too


def test_pickled_whole_model_loads_with_trust(whole_model_file):
    original, path = whole_model_file
    model = cl.load_model(str(path), trust_checkpoint=True)
    assert isinstance(model.net, torchvision.models.ResNet)
    assert model.name == "whole"
    assert model.preprocess_spec == Preprocess()
    assert len(model.class_names) == 1000
    assert model.net.training is False
    _assert_same_state(model.net, original.state_dict())
    torch.manual_seed(7)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(model.net(x), original(x))
    assert torch.equal(model.predict(x).indices, LoadedModel.wrap(original).predict(x).indices)
    # As weights for the matching architecture, with trust, it gives the same parameters.
    as_weights = cl.load_model("resnet18", weights=path, trust_checkpoint=True)
    _assert_same_state(as_weights.net, original.state_dict())


@pytest.mark.parametrize("as_name", [False, True], ids=["as_weights", "as_name"])
def test_malicious_pickle_does_not_run_without_trust(tmp_path, as_name):
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "payload": _TouchOnUnpickle(marker)}, path)
    assert not marker.exists()
    with pytest.raises(cl.CheckpointError) as info:
        if as_name:
            cl.load_model(str(path))
        else:
            cl.load_model("resnet18", weights=path)
    assert "trust_checkpoint" in str(info.value)
    assert not marker.exists()


def test_malicious_pickle_fixture_really_runs_code_when_trusted(tmp_path):
    """Positive control for the test above: the payload works when unpickled."""
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pth"
    torch.save({"payload": _TouchOnUnpickle(marker)}, path)
    with pytest.raises(cl.CheckpointError):  # not a state dict of tensors
        cl.load_model("resnet18", weights=path, trust_checkpoint=True)
    assert marker.exists()


def test_missing_checkpoint_file(tmp_path):
    path = tmp_path / "nothing_here.pth"
    with pytest.raises(cl.CheckpointError) as info:
        cl.load_model("resnet18", weights=path)
    assert "no such file" in str(info.value)
    with pytest.raises(cl.CheckpointError):
        cl.load_model(str(path))


@pytest.mark.parametrize("trust", [False, True])
def test_text_file_named_pth_is_refused(tmp_path, trust):
    path = tmp_path / "notes.pth"
    path.write_text("these are not weights\n", encoding="utf-8")
    with pytest.raises(cl.CheckpointError) as info:
        cl.load_model("resnet18", weights=path, trust_checkpoint=trust)
    assert str(path) in str(info.value)


def test_garbage_safetensors_is_refused(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x00\x01 not a safetensors header")
    with pytest.raises(cl.CheckpointError) as info:
        cl.load_model("resnet18", weights=path)
    assert "safetensors" in str(info.value)


def test_trusted_checkpoint_that_fails_to_unpickle_raises_checkpoint_error(tmp_path):
    path = tmp_path / "fails.pth"
    torch.save({"payload": _FailsOnUnpickle()}, path)
    with pytest.raises(cl.CheckpointError):
        cl.load_model("resnet18", weights=path, trust_checkpoint=True)


# --------------------------------------------------------------------------- labels


def test_labels_from_text_file(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("cat\n\n  dog  \nbird\n", encoding="utf-8")
    with pytest.warns(LabelsWarning, match="has 3 names but the model has 1000 outputs"):
        model = cl.load_model("resnet18", weights="none", labels=path)
    assert model.class_names == ["cat", "dog", "bird"]
    assert model.label(1) == "dog"
    assert model.label(3) == "class_3"  # beyond the file: generic name
    with pytest.warns(LabelsWarning):
        again = cl.load_model("resnet18", weights="none", labels=str(path))
    assert again.class_names[2] == "bird"


def test_labels_from_json_list_and_dict(tmp_path):
    as_list = tmp_path / "labels.json"
    as_list.write_text(json.dumps(["zero", "one", 2]), encoding="utf-8")
    with pytest.warns(LabelsWarning, match="has 3 names"):
        model = cl.load_model("resnet18", weights="none", labels=as_list)
    assert model.class_names == ["zero", "one", "2"]
    as_dict = tmp_path / "index.json"
    as_dict.write_text(json.dumps({"10": "k", "1": "b", "0": "a", "2": "c"}), encoding="utf-8")
    # Keys are class indices: "10" lands at index 10, gaps get generic names.
    expected = ["a", "b", "c"] + [f"class_{i}" for i in range(3, 10)] + ["k"]
    assert read_labels(as_dict) == expected
    with pytest.warns(LabelsWarning, match="has 11 names"):
        model = cl.load_model("resnet18", weights="none", labels=as_dict)
    assert model.class_names == expected


def test_labels_from_python_list_used_by_predict():
    names = [f"thing {i}" for i in range(1000)]
    model = cl.load_model("resnet18", weights="none", labels=names)
    assert model.class_names == names
    assert model.class_names is not names  # copied
    pred = model.predict(torch.zeros(1, 3, 64, 64), top_k=2)
    assert pred.labels[0] == [f"thing {i}" for i in pred.indices[0].tolist()]


def test_missing_labels_file(tmp_path):
    path = tmp_path / "no_labels.txt"
    with pytest.raises(cl.ModelError) as info:
        cl.load_model("resnet18", weights="none", labels=path)
    assert "no_labels.txt" in str(info.value)


def test_malformed_json_labels_raise_model_error(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('["cat", ', encoding="utf-8")
    with pytest.raises(cl.ModelError, match="broken.json"):
        cl.load_model("resnet18", weights="none", labels=path)


def test_json_index_dict_with_gaps_keeps_indices(tmp_path):
    path = tmp_path / "sparse.json"
    path.write_text(json.dumps({"0": "a", "5": "f"}), encoding="utf-8")
    with pytest.warns(LabelsWarning, match="has 6 names"):
        model = cl.load_model("resnet18", weights="none", labels=path)
    assert model.label(0) == "a"
    assert model.label(5) == "f"


def test_imagenet_classes():
    names = imagenet_classes()
    assert len(names) == 1000
    assert names[0] == "tench" and names[285] == "Egyptian cat" and names[967] == "espresso"


# --------------------------------------------------------------------------- wrap


def test_wrap_module_gets_imagenet_defaults():
    net = nn.Sequential(nn.Flatten(), nn.LazyLinear(3))
    model = LoadedModel.wrap(net)
    assert model.net is net
    assert model.name == "Sequential"
    spec = model.preprocess_spec
    assert (spec.crop, spec.resize) == (224, 256)
    assert spec.mean == IMAGENET_MEAN and spec.std == IMAGENET_STD
    assert spec.interpolation == "bilinear"
    assert model.class_names == []
    assert model.label(2) == "class_2"
    assert LoadedModel.wrap(model) is model  # already loaded: returned as is


@pytest.mark.parametrize("thing", [None, "resnet18", torch.zeros(3), lambda x: x])
def test_wrap_rejects_non_modules(thing):
    with pytest.raises(TypeError, match="expected a LoadedModel or nn.Module"):
        LoadedModel.wrap(thing)


# --------------------------------------------------------------------------- preprocessing


def test_resize_and_centre_crop_of_a_wide_image():
    # 600x300 -> shorter side 256 -> 512x256 -> centre crop 224 at left 144, top 16.
    # Crop column c samples original x ~ (144 + c + 0.5) * 600/512 - 0.5:
    # c=0 -> 169 (stripe 2, red 50), c=100 -> 286 (stripe 4, red 90),
    # c=223 -> 430 (stripe 7, red 150). Row 0 samples y ~ 19: below the black band.
    model = LoadedModel.wrap(nn.Identity())
    img = _striped_image()
    geo = model.preprocess_spec.geometry(img)
    assert geo.size == (224, 224)
    x = model.preprocess(img)
    assert x.shape == (1, 3, 224, 224)
    pixels = (model.display_images(x)[0] * 255).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(pixels[:, 0, 0], 50, atol=1)
    np.testing.assert_allclose(pixels[:, 100, 0], 90, atol=1)
    np.testing.assert_allclose(pixels[:, 223, 0], 150, atol=1)
    np.testing.assert_allclose(pixels[..., 1], 200, atol=1)  # top band cropped away
    np.testing.assert_allclose(pixels[..., 2], 100, atol=1)
    # Normalisation with ImageNet statistics.
    expected_red = (50 / 255 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
    assert x[0, 0, 112, 0].item() == pytest.approx(expected_red, abs=1e-5)


def test_resize_none_squashes_the_whole_image():
    # Whole 600x300 image to 224x224: column c samples x ~ (c + 0.5) * 600/224 - 0.5,
    # so the outer stripes survive and the black top band stays in row 0.
    spec = Preprocess(crop=224, resize=None, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    geo = np.asarray(spec.geometry(_striped_image()), dtype=np.float64)
    assert geo.shape == (224, 224, 3)
    np.testing.assert_allclose(geo[100:, 0, 0], 10, atol=1)  # stripe 0
    np.testing.assert_allclose(geo[100:, 223, 0], 190, atol=1)  # stripe 9
    np.testing.assert_allclose(geo[0, :, 1], 0, atol=1)  # the black band
    np.testing.assert_allclose(geo[100, :, 1], 200, atol=1)
    x = spec.to_tensor(spec.geometry(_striped_image()))
    assert x[0, 150, 0].item() == pytest.approx(10 / 255 * 2 - 1, abs=1e-5)


def test_small_and_tall_images_still_give_the_crop_size():
    spec = Preprocess()
    assert spec.geometry(Image.new("RGB", (50, 80))).size == (224, 224)
    assert spec.geometry(Image.new("RGB", (300, 1000))).size == (224, 224)
    assert spec.geometry(Image.new("L", (400, 300))).mode == "RGB"


def test_denormalize_round_trips_pixels():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(23, 37, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    for spec in (Preprocess(), Preprocess(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))):
        x = spec.to_tensor(img)
        assert x.shape == (3, 23, 37)
        back = spec.denormalize(x.unsqueeze(0))
        assert back.shape == (1, 3, 23, 37)
        restored = back[0].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(restored, arr / 255.0, atol=1 / 255)
        # A 3-D tensor broadcasts to a batch of one.
        assert spec.denormalize(x).shape == (1, 3, 23, 37)


def test_unknown_or_missing_devices_are_refused_in_one_line():
    from cnnlens.models.loader import check_device

    with pytest.raises(cl.ModelError, match=r"unknown device 'tpu'; use cpu, cuda or cuda:N"):
        check_device("tpu")
    assert check_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(cl.ModelError, match="no usable CUDA GPU; use cpu"):
            cl.load_model("resnet18", "none", device="cuda")
    else:
        count = torch.cuda.device_count()
        with pytest.raises(cl.ModelError, match=f"has {count} CUDA GPU"):
            check_device(f"cuda:{count}")


def test_loaded_model_repr_is_one_short_line():
    from helpers import tiny_cnn

    m = cl.LoadedModel.wrap(tiny_cnn())
    m.class_names = [f"class {i}" for i in range(1000)]
    want = "LoadedModel(name='Sequential', net=Sequential, classes=1000, input=224px, device=cpu)"
    assert repr(m) == want


def test_untrained_googlenet_prints_no_future_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        model = cl.load_model("googlenet", weights="none")
    assert len(model.class_names) == 1000
