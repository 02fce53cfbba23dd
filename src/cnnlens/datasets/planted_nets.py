"""The architectures trained on planted evidence: a small CNN, a small ViT, a small ConvNeXt.

The CNN is the reference model the trust metrics were built on. The ViT and the
ConvNeXt exist so that transformer methods and token / channels-last layouts
are graded where the truth is known (no pretrained ViT weights are available
offline). Both are torchvision's own classes at a small size, so every code path
a user's torchvision model takes is the one graded here.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

ARCHS = ("cnn", "vit", "convnext")
# Per-architecture width and peak learning rate when the caller gives none.
DEFAULTS = {
    "cnn": {"width": 16, "lr": 4e-3},
    "vit": {"width": 64, "lr": 1e-3},
    "convnext": {"width": 32, "lr": 1e-3},
}


def check_arch(arch: str) -> str:
    if arch not in ARCHS:
        raise ValueError(f"unknown planted architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    return arch


def _block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            bn=nn.BatchNorm2d(c_out),
            relu=nn.ReLU(),
        )
    )


def planted_cnn(n_classes: int, width: int = 16) -> nn.Sequential:
    """The planted-evidence CNN: ``block1..block4``, ``gap``, ``flatten``, ``fc``.

    Four conv-BN-ReLU blocks (one stride-2 stem, one 2x2 pool), so the last
    feature map is a quarter of the input side, then global average pooling and a
    linear layer (CAM applies). ``block4`` is what Grad-CAM's default lookup picks.
    """
    w = width
    return nn.Sequential(
        OrderedDict(
            block1=_block(3, w, stride=2),
            block2=_block(w, 2 * w),
            pool=nn.MaxPool2d(2),
            block3=_block(2 * w, 4 * w),
            block4=_block(4 * w, 4 * w),
            gap=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            fc=nn.Linear(4 * w, n_classes),
        )
    )


def planted_vit(n_classes: int, size: int, width: int = 64, depth: int = 4) -> nn.Module:
    """torchvision's ``VisionTransformer``: 8-pixel patches, ``depth`` blocks of ``width``
    dimensions and ``width // 16`` heads, classifying from the class token.

    The patches are embedded by a convolutional stem (three stride-2 3x3 convolutions,
    torchvision's ``conv_stem_configs``; Xiao et al. 2021) rather than one 8x8
    projection: at a few thousand training images a plain patch projection reaches
    only 67 % test accuracy after 10 epochs here, too weak a model to grade maps on.
    """
    from torchvision.models.vision_transformer import ConvStemConfig, VisionTransformer

    stem = [ConvStemConfig(c, 3, 2) for c in (width // 4, width // 2, width)]

    if size % 8:
        raise ValueError(f"the planted ViT needs an image side divisible by 8, got {size}")
    return VisionTransformer(
        image_size=size,
        patch_size=8,
        num_layers=depth,
        num_heads=max(1, width // 16),
        hidden_dim=width,
        mlp_dim=2 * width,
        num_classes=n_classes,
        conv_stem_configs=stem,
    )


def planted_convnext(n_classes: int, width: int = 32) -> nn.Module:
    """torchvision's ``ConvNeXt`` with two stages (``width`` then ``2 * width`` channels,
    two blocks each): a 4-pixel patchify stem, so the last map is an eighth of the side."""
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    stages = [CNBlockConfig(width, 2 * width, 2), CNBlockConfig(2 * width, None, 2)]
    return ConvNeXt(stages, stochastic_depth_prob=0.0, num_classes=n_classes)


def build(arch: str, n_classes: int, size: int, width: int | None) -> nn.Module:
    """The untrained network of ``arch`` (``width=None``: that architecture's default)."""
    check_arch(arch)
    if arch == "vit":
        return planted_vit(n_classes, size, **({"width": width} if width else {}))
    if arch == "convnext":
        return planted_convnext(n_classes, **({"width": width} if width else {}))
    return planted_cnn(n_classes, width or 16)
