"""The architectures of the support matrix, built offline with random weights.

Each :class:`Arch` names a torchvision, timm or Hugging Face ``transformers``
classifier (or the bundled EfficientNet-Lite0) and the smallest square input it
takes cheaply: CNNs at 64 px (a 2 x 2 last stage at stride 32), ViTs built for a
64 px ``img_size`` (4 x 4 patches of 16 px), LeViT at 128 px (its last stage is
2 x 2 there), the Hugging Face models from small configs at 64 px through
``load_model("hf:DIR", weights="none")``. :func:`build` makes one with seeded random
weights that do not make every map degenerate: parameters libraries initialise at
zero and that matter (:data:`ZERO_INITIALISED`) get random values, and batch norms
get running statistics measured on the image (:func:`_calibrate_batch_norms`). It
returns a :class:`LoadedModel` and its input, scikit-image's ``chelsea`` photo.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..models.base import LoadedModel, Preprocess


@dataclass(frozen=True)
class Arch:
    """One row of the support matrix.

    Attributes:
        name: as cnnlens spells it (``"swin_t"``, ``"timm/convnext_nano"``, ``"hf/vit"``).
        library: ``"torchvision"``, ``"timm"``, ``"transformers"`` or ``"bundled"``.
        size: input side in pixels.
        make: builds the ``nn.Module`` (random weights, no download).
        slow: left out of the quick test run (marked ``slow`` there).
    """

    name: str
    library: str
    size: int
    make: Callable[[], nn.Module]
    slow: bool = False


def _tv(name: str, **kwargs) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        from torchvision.models import get_model

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # GoogLeNet's initialisation FutureWarning
            return get_model(name, weights=None, **kwargs)

    return make


def _timm(name: str, **kwargs) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        import timm

        return timm.create_model(name, pretrained=False, **kwargs)

    return make


# transformers configs: small (a few blocks, narrow), at 64 px
_HF = {
    "vit": (
        "ViTConfig",
        dict(image_size=64, patch_size=8, hidden_size=64, num_hidden_layers=4,
             num_attention_heads=4, intermediate_size=128),
    ),
    "deit": (
        "DeiTConfig",
        dict(image_size=64, patch_size=8, hidden_size=64, num_hidden_layers=4,
             num_attention_heads=4, intermediate_size=128,
             architectures=["DeiTForImageClassificationWithTeacher"]),
    ),
    "swin": (
        "SwinConfig",
        dict(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 2],
             num_heads=[1, 2, 4], window_size=4),
    ),
    "convnext": (
        "ConvNextConfig",
        dict(hidden_sizes=[16, 32, 64], depths=[1, 1, 2], num_stages=3),
    ),
    "resnet": (
        "ResNetConfig",
        dict(embedding_size=16, hidden_sizes=[16, 32, 64], depths=[1, 1, 1],
             layer_type="basic"),
    ),
}  # fmt: skip


def _hf(kind: str) -> Callable[[], nn.Module]:
    """Through ``load_model("hf:DIR", weights="none")``: the path users take."""

    def make() -> nn.Module:
        import transformers

        from ..models.loader import load_model

        cls, kwargs = _HF[kind]
        config = getattr(transformers, cls)(num_labels=10, **kwargs)
        with tempfile.TemporaryDirectory() as folder:
            config.save_pretrained(folder)
            processor = {"do_resize": True, "size": {"height": 64, "width": 64}}
            (Path(folder) / "preprocessor_config.json").write_text(json.dumps(processor))
            return load_model(f"hf:{folder}", weights="none").net

    return make


def _bundled() -> nn.Module:
    from ..models.loader import load_model

    return load_model("efficientnet_lite0", weights="none").net


ARCHS: tuple[Arch, ...] = (
    Arch("swin_t", "torchvision", 64, _tv("swin_t")),
    Arch("vit_b_16", "torchvision", 64, _tv("vit_b_16", image_size=64)),
    Arch("efficientnet_b0", "torchvision", 64, _tv("efficientnet_b0")),
    Arch("googlenet", "torchvision", 64, _tv("googlenet", aux_logits=False, init_weights=True)),
    Arch("densenet121", "torchvision", 64, _tv("densenet121")),
    Arch("mobilenet_v3_small", "torchvision", 64, _tv("mobilenet_v3_small")),
    Arch("regnet_y_400mf", "torchvision", 64, _tv("regnet_y_400mf")),
    Arch("squeezenet1_1", "torchvision", 64, _tv("squeezenet1_1")),
    Arch("resnet18", "torchvision", 64, _tv("resnet18")),
    Arch("convnext_tiny", "torchvision", 64, _tv("convnext_tiny")),
    Arch("timm/vit_tiny_patch16_224", "timm", 64, _timm("vit_tiny_patch16_224", img_size=64)),
    Arch("timm/deit_tiny_patch16_224", "timm", 64, _timm("deit_tiny_patch16_224", img_size=64)),
    Arch("timm/convnext_nano", "timm", 64, _timm("convnext_nano")),
    Arch("timm/levit_128s", "timm", 128, _timm("levit_128s", img_size=128)),
    Arch("timm/mobilevitv2_050", "timm", 64, _timm("mobilevitv2_050")),
    Arch("timm/efficientnet_b0", "timm", 64, _timm("efficientnet_b0")),
    Arch("timm/resnet18", "timm", 64, _timm("resnet18")),
    Arch("hf/vit", "transformers", 64, _hf("vit")),
    Arch("hf/deit", "transformers", 64, _hf("deit")),
    Arch("hf/swin", "transformers", 64, _hf("swin")),
    Arch("hf/convnext", "transformers", 64, _hf("convnext")),
    Arch("hf/resnet", "transformers", 64, _hf("resnet")),
    Arch("efficientnet_lite0", "bundled", 64, _bundled),
)


def arch(name: str) -> Arch:
    """The matrix row called ``name``."""
    for a in ARCHS:
        if a.name == name:
            return a
    raise KeyError(f"no architecture {name!r} in the support matrix")


#: Parameters that libraries initialise at zero and that make a random model degenerate,
#: with the spread they get instead: a zero ``nn.Linear`` weight ("linear": torchvision's
#: ViT head) gives zero gradients everywhere; LeViT's zero attention biases (timm) make
#: its attention blind to position, and its last stage's tokens agree to 1e-5, so every
#: map there is noise.
ZERO_INITIALISED = {"linear": 0.02, "attention_biases": 1.0}


def _randomise_zero_initialised(net: nn.Module, gen: torch.Generator) -> None:
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.dim() < 2 or p.any():
                continue
            owner = net.get_submodule(name.rpartition(".")[0]) if "." in name else net
            if isinstance(owner, nn.Linear) and name.endswith("weight"):
                std = ZERO_INITIALISED["linear"]
            else:
                std = ZERO_INITIALISED.get(name.rpartition(".")[2])
            if std is not None:
                p.copy_(torch.randn(p.shape, generator=gen) * std)


def _calibrate_batch_norms(net: nn.Module, x: torch.Tensor, gen: torch.Generator) -> None:
    """Running statistics of every batch norm measured on ``x`` and noisy copies of it.

    With the initial statistics (mean 0, variance 1) a randomly initialised deep net's
    activations shrink block after block: torchvision's EfficientNet-B0 gives logits
    that differ by 1e-14 between any two images, so no perturbation of the input moves
    its output. Measured statistics keep every block's output at unit scale, as
    training would; the weights stay random.
    """
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    batch = torch.cat([x, x + torch.randn((7, *x.shape[1:]), generator=gen)])
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the passes
    net.train()
    try:
        with torch.no_grad():
            for _ in range(2):
                net(batch)
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
        net.eval()


def image(size: int, spec: Preprocess | None = None) -> torch.Tensor:
    """scikit-image's ``chelsea`` as a ``(1, 3, size, size)`` input (ImageNet normalisation)."""
    from PIL import Image
    from skimage import data

    spec = spec or Preprocess(crop=size, resize=None)
    return spec.to_tensor(spec.geometry(Image.fromarray(data.chelsea()))).unsqueeze(0)


def build(a: Arch, seed: int = 0) -> tuple[LoadedModel, torch.Tensor]:
    """``(model, x)``: ``a`` with seeded random weights and calibrated batch norms, in
    eval mode, and one image (:func:`image` at ``a.size``)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = a.make().eval()
    _randomise_zero_initialised(net, gen)
    spec = Preprocess(crop=a.size, resize=None)
    x = image(a.size, spec)
    _calibrate_batch_norms(net, x, gen)
    return LoadedModel(net=net, preprocess_spec=spec, class_names=[], name=a.name), x
