"""The CAM family on transformers and on heads with an operation before the pooling.

Random weights (no downloads), eval mode, fixed seeds; zero-initialised heads get
random weights so that maps are not all zero. The acceptance check compares our
Grad-CAM with pytorch-grad-cam, run with the ``reshape_transform`` its docs give
for ViT and for Swin, at the same layer and target.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torchvision
from torch import nn

import cnnlens as cl
from cnnlens.core.layers import default_layer

timm = pytest.importorskip("timm")


def _randomise_head(net: nn.Module, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    for name, m in net.named_modules():
        if isinstance(m, nn.Linear) and name.split(".")[-1] == "head":
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 0.02)
    return net.eval()


def _tv(name: str) -> nn.Module:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _randomise_head(getattr(torchvision.models, name)())


def _timm(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return _randomise_head(timm.create_model(name, pretrained=False, **kwargs))


def _image(size: int = 224, seed: int = 1) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])


# pytorch-grad-cam's documented reshape_transform functions (docs: "How it works with
# Vision Transformers" and the Swin example): drop the class token, put 14x14 patches
# channels first; reshape Swin's 7x7 tokens to a grid, channels first. torchvision's Swin
# already gives (N, 7, 7, C), on which the same reshape is a permute.
def vit_reshape(tensor, height=14, width=14):
    result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
    return result.transpose(2, 3).transpose(1, 2)


def swin_reshape(tensor, height=7, width=7):
    result = tensor.reshape(tensor.size(0), height, width, tensor.size(-1))
    return result.transpose(2, 3).transpose(1, 2)


CASES = {
    "vit_b_16": ("encoder.layers.encoder_layer_11.ln_1", "tokens (1 prefix + 14x14 grid)"),
    "swin_t": ("features", "NHWC (channels last)"),
}


@pytest.mark.slow
@pytest.mark.parametrize("arch", list(CASES))
def test_gradcam_equals_pytorch_grad_cam_on_transformers(arch):
    grad_cam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    net, x, target = _tv(arch), _image(), 3
    layer, layout = CASES[arch]
    e = cl.attribute(net, x, "gradcam", target=target)
    assert e.extras == {"layer": layer, "layout": layout}  # the default layer
    module = dict(net.named_modules())[layer]
    reshape = vit_reshape if arch == "vit_b_16" else swin_reshape
    inputs = x.clone().requires_grad_(True)
    with (
        cl.preserved(net),
        grad_cam.GradCAM(model=net, target_layers=[module], reshape_transform=reshape) as cam,
    ):
        theirs = torch.from_numpy(cam(input_tensor=inputs, targets=[ClassifierOutputTarget(3)]))
    # Theirs: ReLU at 14x14 / 7x7, min-max, cv2.resize to 224, min-max; ours upsampled the
    # same way (half-pixel bilinear), then min-max. Measured: max difference 6e-7 / 4e-7.
    ours = e.normalized()[:, 0]
    assert theirs.std() > 0.05  # a real map
    assert pearson(ours, theirs) >= 0.999
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    if arch == "swin_t":  # the check can fail: channels-last read as channels-first
        wrong = cl.attribute(net, x, "gradcam", target=target, layer=layer, layout="nchw")
        assert pearson(wrong.normalized()[:, 0], theirs) < 0.9


@pytest.mark.slow
def test_default_layers_of_transformers_and_the_attention_bug():
    # Before: timm's ViT defaulted to blocks.11.attn.k_norm, (N, heads, tokens, head dim).
    vit = _timm("vit_tiny_patch16_224")
    assert default_layer(vit) == "blocks.11.norm1"
    with pytest.raises(cl.MethodError) as err:
        cl.attribute(vit, _image(), "gradcam", target=0, layer="blocks.11.attn.k_norm")
    msg = str(err.value)
    assert "(N, 3, 197, 64) comes from inside attention module 'blocks.11.attn'" in msg
    assert "Layers that read as maps: blocks.11.norm1" in msg
    deit = _timm("deit_tiny_distilled_patch16_224")  # class + distillation token
    e = cl.attribute(deit, _image(), "layercam", target=0)
    assert e.extras == {"layer": "blocks.11.norm1", "layout": "tokens (2 prefix + 14x14 grid)"}
    assert e.maps.std() > 0
    assert default_layer(_timm("swin_tiny_patch4_window7_224")) == "layers"
    assert default_layer(_tv("swin_t")) == "features"
    assert default_layer(_timm("convnext_nano")) == "stages"


def test_cam_on_densenet_follows_its_functional_relu():
    net, x = _tv("densenet121"), _image(64)
    e = cl.attribute(net, x, "cam", target=[[5, 7]])
    assert e.extras["layer"] == "features" and e.extras["pooled"] == "features -> relu"
    with torch.no_grad():
        logits = net(x)
    bias = net.classifier.bias[[5, 7]]
    # 64 px gives a 2x2 map; bilinear upsampling to 64x64 keeps its mean exactly.
    torch.testing.assert_close(
        e.maps[0].mean((1, 2)) + bias, logits[0, [5, 7]], atol=1e-4, rtol=1e-4
    )
    grad = cl.attribute(net, x, "gradcam", target=5)  # Grad-CAM at the same default layer
    assert grad.extras["layer"] == "features" and grad.maps.amax() > 0


def test_cam_on_swin_reads_the_normed_channels_last_map_the_pooling_takes():
    net, x = _tv("swin_t"), _image(224)
    e = cl.attribute(net, x, "cam", target=2)
    assert e.extras["pooled"] == "features -> layer_norm -> permute"
    assert e.extras["layout"] == "NHWC (channels last)"
    with torch.no_grad():
        logit = net(x)[0, 2]
    torch.testing.assert_close(e.maps[0, 0].mean() + net.head.bias[2], logit, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "arch, why",
    [
        ("vit_tiny_patch16_224", "feeding the last linear layer 'head' directly"),
        ("convnext_nano", "feeding the last linear layer 'head.fc' directly"),
    ],
)
def test_cam_keeps_refusing_heads_it_cannot_decompose(arch, why):
    # A ViT classifies its class token; timm's ConvNeXt normalises after pooling.
    net = _timm(arch, img_size=64) if arch.startswith("vit") else _timm(arch)
    with pytest.raises(cl.MethodError) as err:
        cl.attribute(net, _image(64), "cam", target=0)
    assert why in str(err.value) and "method='gradcam'" in str(err.value)
