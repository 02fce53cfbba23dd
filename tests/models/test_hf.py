"""Hugging Face ``transformers`` image classifiers: ``load_model("hf:DIR")``.

Every model is a tiny one built from a config with random weights and saved to a
temporary folder with its image-processor config; nothing is downloaded (a test
blocks sockets while loading to prove it).
"""

from __future__ import annotations

import json
import socket
import sys

import numpy as np
import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

import cnnlens as cl
from cnnlens.core.errors import CheckpointError, MissingExtraError, ModelError
from cnnlens.models import Preprocess
from cnnlens.models.hfprocessor import class_names_from, preprocess_from

transformers = pytest.importorskip(
    "transformers", reason="Hugging Face models need transformers (the hf extra)"
)

LABELS = ["tabby", "zebra", "kite", "canoe", "lemon"]


@pytest.fixture(scope="module", autouse=True)
def _one_cpu_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _configs():
    t = transformers
    tiny_vit = dict(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=5,
    )
    square = t.ViTImageProcessor(size={"height": 32, "width": 32})
    return {
        # ViT carries real class names; the others transformers' LABEL_i placeholders
        "vit": (
            t.ViTConfig(**tiny_vit, id2label=dict(enumerate(LABELS))),
            square,
        ),
        "deit": (
            t.DeiTConfig(**tiny_vit, architectures=["DeiTForImageClassificationWithTeacher"]),
            t.DeiTImageProcessor(
                size={"height": 40, "width": 40}, crop_size={"height": 32, "width": 32}
            ),
        ),
        "swin": (
            t.SwinConfig(
                image_size=32,
                patch_size=4,
                embed_dim=8,
                depths=[1, 1],
                num_heads=[1, 2],
                window_size=4,
                num_labels=5,
            ),
            square,
        ),
        "convnext": (
            t.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, num_labels=5),
            t.ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.8),
        ),
        "resnet": (
            t.ResNetConfig(
                embedding_size=8,
                hidden_sizes=[8, 16],
                depths=[1, 1],
                layer_type="basic",
                num_labels=5,
            ),
            t.ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.8),
        ),
    }


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """arch -> (folder, the transformers model saved there, in eval mode)."""
    out = {}
    for i, (arch, (config, processor)) in enumerate(_configs().items()):
        torch.manual_seed(i)
        model = transformers.AutoModelForImageClassification.from_config(config).eval()
        with torch.no_grad():  # a head far from zero, so maps are not degenerate
            for p in model.parameters():
                if p.dim() == 2 and p.shape[0] == 5:
                    p.normal_(0, 1)
        folder = tmp_path_factory.mktemp(arch)
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        out[arch] = (folder, model)
    return out


def _x(n=2, side=32, seed=0):
    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- loading


@pytest.mark.parametrize("arch", ["vit", "deit", "swin", "convnext", "resnet"])
def test_logits_equal_transformers_logits(saved, arch):
    folder, hf = saved[arch]
    model = cl.load_model(f"hf:{folder}")
    x = _x()
    with torch.no_grad():
        ours, theirs = model.net(x), hf(pixel_values=x).logits
    assert ours.shape == (2, 5)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    assert not model.net.training and model.name == f"hf:{folder.name}"


def test_plain_folder_and_config_file_and_no_weights_build_the_same_layers(saved):
    folder, hf = saved["vit"]
    plain = cl.load_model(str(folder))  # a folder with config.json needs no prefix
    torch.testing.assert_close(plain.net(_x()), hf(pixel_values=_x()).logits, rtol=0, atol=1e-6)
    random = cl.load_model(f"hf:{folder / 'config.json'}", weights="none")
    names = [n for n, _ in random.net.named_modules()]
    assert names == [n for n, _ in plain.net.named_modules()]
    # transformers' own names under `model.` (they differ between transformers releases)
    assert names == ["", *(f"model.{n}" if n else "model" for n, _ in hf.named_modules())]
    assert not torch.equal(random.net.model.classifier.weight, hf.classifier.weight)


def test_weights_file_loads_into_the_config_model_and_rebuilds_the_head(saved, tmp_path):
    folder, hf = saved["resnet"]
    same = tmp_path / "same.safetensors"
    safetensors.torch.save_file(hf.state_dict(), str(same))
    model = cl.load_model(f"hf:{folder}", weights=str(same))
    torch.testing.assert_close(model.net(_x()), hf(pixel_values=_x()).logits, rtol=0, atol=1e-6)
    state = {k: v.clone() for k, v in hf.state_dict().items()}
    state["classifier.1.weight"] = torch.randn(3, 16)
    state["classifier.1.bias"] = torch.zeros(3)
    three = tmp_path / "three.safetensors"
    safetensors.torch.save_file(state, str(three))
    model = cl.load_model(f"hf:{folder}", weights=str(three))
    assert model.net(_x()).shape == (2, 3)
    assert model.class_names == ["class_0", "class_1", "class_2"]
    other = tmp_path / "other.safetensors"
    safetensors.torch.save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(CheckpointError, match="does not fit the Hugging Face resnet model"):
        cl.load_model(f"hf:{folder}", weights=str(other))


def test_other_input_sizes_interpolate_position_embeddings(saved):
    model = cl.load_model(f"hf:{saved['vit'][0]}")
    assert model.net(_x(1, 48)).shape == (1, 5)


def test_loading_never_opens_a_socket(saved, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    folder = saved["swin"][0]
    assert cl.load_model(f"hf:{folder}").net(_x(1)).shape == (1, 5)
    assert cl.load_model(f"hf:{folder}", weights="none").net(_x(1)).shape == (1, 5)


# --------------------------------------------------------------------------- preprocessing


def test_preprocessing_read_from_processor_configs(saved):
    vit = cl.load_model(f"hf:{saved['vit'][0]}").preprocess_spec
    assert vit == Preprocess(crop=32, resize=None, mean=(0.5,) * 3, std=(0.5,) * 3)
    deit = cl.load_model(f"hf:{saved['deit'][0]}").preprocess_spec
    assert (deit.crop, deit.resize, deit.interpolation) == (32, 40, "bicubic")
    # ConvNeXt's rule below 384 px: shorter side to 32 / 0.8 = 40, centre crop 32
    convnext = cl.load_model(f"hf:{saved['convnext'][0]}").preprocess_spec
    assert (convnext.crop, convnext.resize) == (32, 40)


@pytest.mark.parametrize(
    "proc, crop, resize, interpolation",
    [
        ({"size": {"shortest_edge": 224}, "crop_pct": 0.875, "resample": 3}, 224, 256, "bicubic"),
        ({"size": {"shortest_edge": 384}, "crop_pct": 0.875}, 384, None, "bilinear"),
        (
            {"size": {"shortest_edge": 256}, "do_center_crop": True, "crop_size": 224},
            224,
            256,
            "bilinear",
        ),
        (
            {
                "image_processor_type": "LevitImageProcessor",
                "size": {"shortest_edge": 224},
                "do_center_crop": True,
                "crop_size": {"height": 224, "width": 224},
            },
            224,
            256,
            "bilinear",
        ),
        ({"size": 384, "resample": 0}, 384, None, "nearest"),  # old style: an int square
        ({"size": {"height": 64, "width": 64}, "resample": 1}, 64, None, "bicubic"),  # lanczos
    ],
)
def test_processor_geometry_rules(proc, crop, resize, interpolation):
    spec = preprocess_from(proc)
    assert (spec.crop, spec.resize, spec.interpolation) == (crop, resize, interpolation)


def test_rescale_and_normalise_fold_into_mean_and_std():
    # HF: p * 1 with mean 100, std 50 on 0..255 pixels == (p/255 - 100/255) / (50/255)
    spec = preprocess_from(
        {"size": 8, "do_rescale": False, "image_mean": [100, 110, 120], "image_std": 50}
    )
    assert spec.mean == pytest.approx((100 / 255, 110 / 255, 120 / 255))
    assert spec.std == pytest.approx((50 / 255,) * 3)
    plain = preprocess_from({"size": 8, "do_normalize": False})
    assert plain.mean == (0.0, 0.0, 0.0) and plain.std == (1.0, 1.0, 1.0)
    # no processor config: cnnlens's defaults at the config's image size
    assert preprocess_from(None, 32) == Preprocess(crop=32, resize=37)


def test_unreadable_sizes_are_refused_with_the_reason():
    with pytest.raises(ModelError, match="size 224x192 is not square"):
        preprocess_from({"size": {"height": 224, "width": 192}}, where="p.json")
    with pytest.raises(ModelError, match="neither height/width nor shortest_edge"):
        preprocess_from({"size": {"longest_edge": 512}})


def _hf_pixels(folder, img):
    """transformers' own processor on ``img``, PIL backend (the one cnnlens mirrors)."""
    auto = transformers.AutoImageProcessor
    if int(transformers.__version__.split(".")[0]) >= 5:
        proc = auto.from_pretrained(str(folder), backend="pil")
    else:
        proc = auto.from_pretrained(str(folder), use_fast=False)
    return proc(img, return_tensors="pt")["pixel_values"]


@pytest.mark.parametrize("arch", ["vit", "deit", "convnext"])
def test_pixels_equal_the_processors_on_a_square_photo(saved, arch):
    rng = np.random.default_rng(3)
    img = Image.fromarray(rng.integers(0, 256, (70, 70, 3), dtype=np.uint8))
    folder = saved[arch][0]
    ours = cl.load_model(f"hf:{folder}", weights="none").preprocess(img)
    torch.testing.assert_close(ours, _hf_pixels(folder, img), rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- class names


def test_class_names_from_id2label(saved):
    assert cl.load_model(f"hf:{saved['vit'][0]}").class_names == LABELS
    assert cl.load_model(f"hf:{saved['swin'][0]}").class_names == [f"class_{i}" for i in range(5)]
    imagenet = class_names_from({i: f"LABEL_{i}" for i in range(1000)}, 1000)
    assert imagenet[285] == "Egyptian cat"
    assert class_names_from({"0": "a", "2": "c"}, 3) == ["a", "class_1", "c"]


# --------------------------------------------------------------------------- methods


@pytest.mark.parametrize("arch", ["vit", "swin", "convnext", "resnet"])
def test_gradient_and_occlusion_give_finite_maps(saved, arch):
    model = cl.load_model(f"hf:{saved[arch][0]}")
    x = _x()
    for method, params in (("gradient", {}), ("occlusion", {"window": 8, "stride": 4})):
        maps = cl.attribute(model, x, method, target=1, **params).maps
        assert maps.shape == (2, 1, 32, 32)
        assert torch.isfinite(maps).all() and maps.std() > 0, method


@pytest.mark.parametrize(
    "arch, layer",
    [("resnet", "model.resnet.encoder.stages.1"), ("convnext", "model.convnext.encoder.stages.1")],
)
def test_gradcam_at_an_nchw_stage_equals_a_hand_computed_one(saved, arch, layer):
    folder, hf = saved[arch]
    model = cl.load_model(f"hf:{folder}")
    x = _x()
    got = cl.attribute(model, x, "gradcam", target=2, layer=layer).maps
    stage = hf.get_submodule(layer.removeprefix("model."))
    kept = []
    handle = stage.register_forward_hook(lambda m, a, out: kept.append(out))
    try:
        logits = hf(pixel_values=x).logits
    finally:
        handle.remove()
    (acts,) = kept
    assert acts.shape[1:] == (16, 4, 4)  # (N, C, h, w): stages end channels-first
    (grads,) = torch.autograd.grad(logits[:, 2].sum(), acts)
    cam = (grads.mean(dim=(2, 3), keepdim=True) * acts).sum(1, keepdim=True).clamp_min(0)
    want = F.interpolate(cam.detach(), size=(32, 32), mode="bilinear", align_corners=False)
    assert want.std() > 0
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- command line


def _cli():
    from cnnlens.cli import app

    return app, CliRunner()


def test_cli_layers_lists_transformers_names(saved):
    app, runner = _cli()
    folder, hf = saved["vit"]
    result = runner.invoke(app, ["layers", f"hf:{folder}"], env={"COLUMNS": "220"})
    assert result.exit_code == 0, result.output
    assert "at 32x32" in result.stdout
    layers = [n for n, m in hf.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(layers) > 10
    for name in layers:
        assert f"model.{name} " in result.stdout


def test_cli_explain_with_an_hf_model(saved, tmp_path):
    app, runner = _cli()
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (48, 48, 3), np.uint8)).save(photo)
    out = tmp_path / "run"
    args = ["explain", str(photo), "--model", f"hf:{saved['vit'][0]}", "--methods", "gradient"]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    (image,) = results["images"]
    assert image["predictions"][0]["label"] in LABELS
    assert np.load(out / "maps.npz")["maps/gradient"].shape == (1, 1, 32, 32)
    missing = runner.invoke(app, [*args[:3], f"hf:{tmp_path / 'nowhere'}", *args[4:]])
    assert missing.exit_code == 2
    assert "no such folder; cnnlens loads Hugging Face models from a local folder" in (
        missing.output
    )


# --------------------------------------------------------------------------- refusals


def test_folder_problems_are_one_line_errors(saved, tmp_path):
    with pytest.raises(ModelError, match=r"has no config.json; point hf: at a folder"):
        cl.load_model(f"hf:{tmp_path}")
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "vit", "image_size": 32, "patch_size": 8})
    )
    with pytest.raises(ModelError, match=r"has no weights file .*pass --weights none"):
        cl.load_model(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelError, match="no image classifier for model type 'bert'"):
        cl.load_model(str(tmp_path), weights="none")


def test_a_config_without_architectures_builds(tmp_path):
    # transformers itself fails on DeiT (two classifier classes) when `architectures` is absent
    config = {"model_type": "deit", "image_size": 32, "patch_size": 8, "hidden_size": 32}
    config |= {"num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
    (tmp_path / "config.json").write_text(json.dumps(config))
    model = cl.load_model(str(tmp_path), weights="none")
    assert model.net(_x(1)).shape == (1, 2) and model.class_names == ["class_0", "class_1"]


def test_weights_without_the_classifier_are_refused(tmp_path):
    config = transformers.ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
    )
    transformers.ViTModel(config, add_pooling_layer=False).save_pretrained(tmp_path)
    with pytest.raises(ModelError, match=r"lack 2 tensors of ViTForImageClassification"):
        cl.load_model(str(tmp_path))


def test_missing_transformers_names_the_extra(saved, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingExtraError) as err:
        cl.load_model(f"hf:{saved['vit'][0]}")
    assert str(err.value) == (
        "Hugging Face models needs transformers, which is not installed: pip install 'cnnlens[hf]'"
    )
