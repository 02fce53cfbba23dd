"""The ViT and ConvNeXt trained on planted evidence: built, cached apart, reloaded.

Their quality (pointing >= 0.9) is measured by ``benchmarks/planted_architectures.py``
(minutes of training); here only the wiring, on a few images and one epoch.
"""

from __future__ import annotations

import pytest
import torch

import cnnlens as cl
from cnnlens.core.layers import default_layer
from cnnlens.datasets import PlantedSpec, train_planted
from cnnlens.datasets import trainer as trainer_module
from cnnlens.datasets.planted_nets import build

SPEC = PlantedSpec(size=32, n_classes=3)
RUN = dict(epochs=1, n_train=32, batch_size=16, progress=False)


@pytest.mark.parametrize("arch", ["vit", "convnext"])
def test_each_architecture_is_cached_under_its_own_name_and_reloads(arch, tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLENS_CACHE", str(tmp_path))
    first = train_planted(SPEC, arch=arch, **RUN)
    assert first.name == f"planted-{arch}" and first.class_names == SPEC.classes
    (path,) = (tmp_path / "planted").glob("*.safetensors")
    assert path.name.startswith(f"planted-{arch}-{SPEC.key()}-clean-")

    def no_training(*args, **kwargs):
        raise AssertionError("the second call must load the cache, not train")

    monkeypatch.setattr(trainer_module, "_fit", no_training)
    second = train_planted(SPEC, arch=arch, **RUN)
    for (k, v), w in zip(first.net.state_dict().items(), second.net.state_dict().values()):
        assert torch.equal(v, w), k
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(second.net(x), first.net(x))


def test_the_cnn_keeps_its_cache_names_and_unknown_architectures_are_refused():
    settings = trainer_module._settings(SPEC, None, 8, 4000, 32, 4e-3, 16, 0, "cnn")
    assert "arch" not in settings  # caches written before the other architectures stay valid
    assert trainer_module.cache_path(settings).name.startswith("planted-cnn-")
    with pytest.raises(ValueError, match="choose one of cnn, vit, convnext"):
        train_planted(SPEC, arch="resnet", **RUN)


def test_layer_methods_read_the_vit_tokens_and_the_convnext_map():
    vit = build("vit", 3, 32, None).eval()
    torch.nn.init.normal_(vit.heads.head.weight)  # torchvision starts the head at zero
    assert default_layer(vit, (32, 32)) == "encoder.layers.encoder_layer_3.ln_1"
    e = cl.attribute(vit, torch.rand(1, 3, 32, 32), "gradcam", target=0)
    assert e.extras["layout"] == "tokens (1 prefix + 4x4 grid)" and e.maps.shape == (1, 1, 32, 32)
    for method in ("attention_rollout", "transformer_relevance"):
        assert cl.attribute(vit, torch.rand(1, 3, 32, 32), method, target=0).maps.std() > 0
    convnext = build("convnext", 3, 32, None).eval()
    e = cl.attribute(convnext, torch.rand(1, 3, 32, 32), "gradcam", target=1)
    assert e.extras["layer"] == "features" and e.extras["layout"] == "NCHW"
