"""Tests of choosing between torchvision and timm (cnnlens.models.names), weights
that belong to the other library, the `cnnlens models` listing, label-count
warnings and class names of timm models.

Everything is built with random weights; checkpoints are written to ``tmp_path``.
"""

from __future__ import annotations

import warnings

import pytest
import timm
import torch
import torchvision
from torch import nn

import cnnlens as cl
from cnnlens.models import LabelsWarning, describe_sources
from cnnlens.models.names import ModelName, resolve

MOBILE = "mobilenetv3_small_050"  # timm only


def _state(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _same(net: nn.Module, state: dict) -> bool:
    own = net.state_dict()
    return set(own) == set(state) and all(torch.equal(own[k], state[k]) for k in state)


# --------------------------------------------------------------------------- resolve


@pytest.mark.parametrize(
    ("name", "source", "arch", "tag", "canonical"),
    [
        ("resnet18", "torchvision", "resnet18", None, "resnet18"),
        ("torchvision/resnet18", "torchvision", "resnet18", None, "resnet18"),
        ("timm/resnet18", "timm", "resnet18", None, "timm/resnet18"),
        ("TIMM/resnet18", "timm", "resnet18", None, "timm/resnet18"),
        ("resnet18.tv_in1k", "timm", "resnet18", "tv_in1k", "resnet18.tv_in1k"),
        ("timm/resnet18.tv_in1k", "timm", "resnet18", "tv_in1k", "resnet18.tv_in1k"),
        ("mobilenetv3_small_050", "timm", MOBILE, None, MOBILE),
        (f"timm/{MOBILE}", "timm", MOBILE, None, MOBILE),
        ("vit_b_16", "torchvision", "vit_b_16", None, "vit_b_16"),
    ],
)
def test_resolve(name, source, arch, tag, canonical):
    spec = resolve(name)
    assert spec == ModelName(source, arch, tag)
    assert spec.canonical == canonical
    assert resolve(canonical) == spec  # the canonical name means the same model


@pytest.mark.parametrize("name", ["resnet50", "convnext_tiny", "efficientnet_b0"])
def test_names_both_libraries_have_mean_torchvision(name):
    assert resolve(name).source == "torchvision"
    assert resolve(f"timm/{name}").source == "timm"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "torchvision/mobilenetv3_small_050",
            "torchvision has no model 'mobilenetv3_small_050'. Did you mean mobilenet_v3_small,"
            " mobilenet_v3_large, mobilenet_v2? timm has it: use timm/mobilenetv3_small_050.",
        ),
        (
            "timm/vit_b_16",
            "timm has no model 'vit_b_16'. Did you mean repvit_m1_1, shvit_s1? torchvision "
            "has it: use torchvision/vit_b_16.",
        ),
        (
            "torchvision/resnet18.tv_in1k",
            "'torchvision/resnet18.tv_in1k': pretrained tags like 'tv_in1k' are timm's; use "
            "timm/resnet18.tv_in1k (or torchvision/resnet18 with --weights)",
        ),
        (
            "resnet18.bogus",
            "timm has no pretrained tag 'bogus' for resnet18; it has a1_in1k, a2_in1k, a3_in1k,"
            " fb_ssl_yfcc100m_ft_in1k, fb_swsl_ig1b_ft_in1k, gluon_in1k, ... "
            "(`cnnlens models 'resnet18.*'`)",
        ),
    ],
)
def test_wrong_library_or_tag_says_what_to_write(name, message):
    with pytest.raises(cl.ModelError) as info:
        cl.load_model(name, weights="none")
    assert str(info.value) == message


# --------------------------------------------------------------------------- loading


def test_prefix_picks_the_library():
    tv = cl.load_model("resnet18", weights="none")
    tm = cl.load_model("timm/resnet18", weights="none")
    explicit = cl.load_model("torchvision/resnet18", weights="none")
    assert type(tv.net) is torchvision.models.ResNet and tv.name == "resnet18"
    assert type(explicit.net) is torchvision.models.ResNet and explicit.name == "resnet18"
    assert type(tm.net) is timm.models.ResNet and tm.name == "timm/resnet18"
    # Each library's own preprocessing: torchvision 256/224 bilinear, timm crop_pct 0.95 bicubic.
    assert (tv.preprocess_spec.resize, tv.preprocess_spec.interpolation) == (256, "bilinear")
    assert (tm.preprocess_spec.resize, tm.preprocess_spec.interpolation) == (235, "bicubic")


def test_pretrained_tag_with_weights_none_is_the_arch_with_the_tags_preprocessing():
    plain = cl.load_model("timm/resnet18", weights="none")
    tagged = cl.load_model("resnet18.tv_in1k", weights="none")
    assert type(tagged.net) is timm.models.ResNet
    assert tagged.name == "resnet18.tv_in1k"
    # tv_in1k: torchvision's recipe, crop_pct 0.875 (224 / 0.875 = 256), bilinear.
    assert (tagged.preprocess_spec.resize, tagged.preprocess_spec.interpolation) == (
        256,
        "bilinear",
    )
    assert set(tagged.net.state_dict()) == set(plain.net.state_dict())
    assert tagged.class_names[285] == "Egyptian cat"


@pytest.fixture(scope="module")
def effnet_states(tmp_path_factory):
    """efficientnet_b0 weights from each library: same name, different key layouts."""
    folder = tmp_path_factory.mktemp("effnet")
    torch.manual_seed(0)
    tm, tv = folder / "timm.pth", folder / "tv.pth"
    tm_state = _state(timm.create_model("efficientnet_b0", num_classes=10))
    tv_state = _state(torchvision.models.efficientnet_b0(weights=None))
    torch.save(tm_state, tm)
    torch.save(tv_state, tv)
    return tm, tm_state, tv, tv_state


def test_timm_weights_given_to_torchvision_name_say_use_timm(effnet_states):
    tm, tm_state, _, _ = effnet_states
    want = (
        f"{tm}: these weights are for timm's efficientnet_b0, not torchvision's; use "
        "--model timm/efficientnet_b0 (Python: load_model('timm/efficientnet_b0', ...))"
    )
    for name in ("efficientnet_b0", "torchvision/efficientnet_b0"):
        with pytest.raises(cl.CheckpointError) as info:
            cl.load_model(name, weights=tm)
        assert str(info.value) == want
    # The advice works: the 10-class timm head is rebuilt and every tensor loads.
    model = cl.load_model("timm/efficientnet_b0", weights=tm)
    assert _same(model.net, tm_state)
    assert model.name == "timm/efficientnet_b0"
    assert model.class_names == [f"class_{i}" for i in range(10)]


def test_torchvision_weights_given_to_timm_name_say_use_torchvision(effnet_states):
    _, _, tv, tv_state = effnet_states
    want = (
        f"{tv}: these weights are for torchvision's efficientnet_b0, not timm's; use "
        "--model efficientnet_b0 (Python: load_model('efficientnet_b0', ...))"
    )
    for name in ("timm/efficientnet_b0", "efficientnet_b0.ra_in1k"):
        with pytest.raises(cl.CheckpointError) as info:
            cl.load_model(name, weights=tv)
        assert str(info.value) == want
    assert _same(cl.load_model("efficientnet_b0", weights=tv).net, tv_state)


def test_weights_of_no_known_layout_list_the_keys(tmp_path):
    torch.manual_seed(1)
    path = tmp_path / "mobilenet.pth"
    torch.save(torchvision.models.mobilenet_v3_small(weights=None).state_dict(), path)
    with pytest.raises(cl.CheckpointError) as info:
        cl.load_model("timm/efficientnet_b0", weights=path)
    msg = str(info.value)
    assert msg.startswith(f"{path} does not fit timm's efficientnet_b0: ")
    assert msg.endswith(
        "Check that the model name is the architecture the weights were saved from."
    )
    assert "missing" in msg and "unexpected" in msg and "these weights are for" not in msg


# --------------------------------------------------------------------------- listing


def test_listing_shows_timm_copies_of_shared_names_with_prefix():
    listing = describe_sources("resnet18*")
    groups = dict(listing.groups)
    assert list(groups) == ["bundled", "torchvision", "timm", "timm pretrained tags"]
    assert groups["bundled"] == []
    assert groups["torchvision"] == ["resnet18"]
    assert groups["timm"] == ["timm/resnet18", "resnet18d"]
    assert "resnet18.tv_in1k" in groups["timm pretrained tags"]
    assert all(n.startswith(("resnet18.", "resnet18d.")) for n in groups["timm pretrained tags"])
    assert listing.notes[0] == (
        "resnet18 is in both torchvision and timm: the plain name loads torchvision's; "
        "write timm/resnet18 for timm's (torchvision/resnet18 also works)."
    )
    first_tag = groups["timm pretrained tags"][0]
    assert listing.notes[1] == (
        f"A timm name with a pretrained tag ({first_tag}) loads timm's architecture with "
        "that tag's preprocessing and class count; --weights default downloads its "
        "weights, --weights none leaves them random."
    )
    # Every listed name loads the model it is listed under.
    assert resolve(groups["timm"][0]).source == "timm"
    assert resolve(groups["torchvision"][0]).source == "torchvision"


def test_listing_of_all_and_of_timm_prefix():
    everything = dict(describe_sources().groups)
    assert everything["bundled"] == ["efficientnet_lite0"]
    assert "resnet50" in everything["torchvision"]
    assert "timm/resnet50" in everything["timm"] and "resnet50" not in everything["timm"]
    assert "mobilenetv3_small_050" in everything["timm"]
    shared = set(everything["torchvision"]) & {n.removeprefix("timm/") for n in everything["timm"]}
    assert {"resnet50", "convnext_tiny", "efficientnet_b0"} <= shared
    notes = describe_sources().notes
    assert notes[0].startswith(f"{len(shared)} of these names are in both torchvision and timm (")
    only_timm = dict(describe_sources("timm/mobilenetv3_small_05*").groups)
    assert only_timm["torchvision"] == []
    assert only_timm["timm"] == ["mobilenetv3_small_050"]
    assert only_timm["timm pretrained tags"] == ["mobilenetv3_small_050.lamb_in1k"]
    assert len(describe_sources("timm/mobilenetv3_small_05*").notes) == 1  # no shared names


# --------------------------------------------------------------------------- labels


def test_labels_shorter_than_the_head_warn(tmp_path):
    path = tmp_path / "three.txt"
    path.write_text("cat\ndog\nbird\n", encoding="utf-8")
    want = (
        f"labels file {path} has 3 names but the model has 1000 outputs: outputs 3 to 999 "
        "get generic names (class_3, ...); check that the labels match the model's classes"
    )
    with pytest.warns(LabelsWarning) as record:
        model = cl.load_model("resnet18", weights="none", labels=path)
    assert [str(w.message) for w in record] == [want]
    assert record[0].filename == __file__  # points at the caller's line
    assert model.class_names == ["cat", "dog", "bird"]


def test_labels_longer_than_the_head_warn(tmp_path):
    torch.manual_seed(2)
    path = tmp_path / "four.pth"
    torch.save(torchvision.models.resnet18(weights=None, num_classes=4).state_dict(), path)
    names = ["a", "b", "c", "d", "e", "f"]
    with pytest.warns(LabelsWarning, match=r"^labels has 6 names but the model has 4 outputs: "):
        model = cl.load_model("resnet18", weights=path, labels=names)
    assert model.class_names == names


def test_labels_matching_the_head_do_not_warn(tmp_path):
    torch.manual_seed(3)
    path = tmp_path / "four.pth"
    torch.save(torchvision.models.resnet18(weights=None, num_classes=4).state_dict(), path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LabelsWarning)
        model = cl.load_model("resnet18", weights=path, labels=["a", "b", "c", "d"])
    assert model.label(3) == "d"


# --------------------------------------------------------------------------- class names


def test_timm_models_get_imagenet_names():
    for name in ("timm/resnet18", "mobilenetv3_small_050"):
        model = cl.load_model(name, weights="none")
        assert len(model.class_names) == 1000
        assert model.class_names[285] == "Egyptian cat"
        assert model.class_names[967] == "espresso"


def test_vit_that_cannot_run_at_64px_still_gets_imagenet_names():
    model = cl.load_model("vit_tiny_patch16_224", weights="none")
    assert len(model.class_names) == 1000 and model.class_names[0] == "tench"


def test_imagenet_21k_tag_gets_timm_names():
    model = cl.load_model("vit_tiny_patch16_224.augreg_in21k", weights="none")
    assert len(model.class_names) == 21843
    info = timm.data.ImageNetInfo("imagenet-21k-goog")
    want = "animal, animate being, beast, brute, creature, fauna"
    assert model.class_names[5] == info.index_to_description(5) == want


class _Needs224(nn.Module):
    """A classifier that only accepts 224x224 input (like a ViT)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 1000)

    def forward(self, x):
        assert x.shape[-2:] == (224, 224), "224 px only"
        return self.fc(x.mean(dim=(2, 3)))


def test_whole_model_that_needs_its_own_size_gets_names(tmp_path):
    path = tmp_path / "needs224.pt"
    torch.save(_Needs224(), path)
    model = cl.load_model(str(path), trust_checkpoint=True)
    assert model.class_names[285] == "Egyptian cat"
