"""Which layers count as shallow, middle and deep, and the stages of a network.

The seeds show dreams of shallow, middle and deep layers side by side: edges
and colours, then textures and patterns, then object parts. The bundled
EfficientNet-Lite0 has tuned presets; any other model gets them from its
*stages*: the last module (of depth at most two in the module tree, not a
pooling or no-op layer) to finish at each spatial resolution, found with one
traced forward pass.
"""

from __future__ import annotations

from torch import nn

from ..core.layouts import Reader, spatial_layers
from ..models.base import LoadedModel

#: Tuned presets per model name (``LoadedModel.name``).
PRESETS: dict[str, dict[str, str]] = {
    # blocks.1: 24 ch at 1/4 res (colours, edges); blocks.3: 80 ch at 1/16 (textures,
    # patterns); blocks.5: 192 ch at 1/32 (object parts).
    "efficientnet_lite0": {"shallow": "blocks.1", "middle": "blocks.3", "deep": "blocks.5"},
    "tf_efficientnet_lite0": {"shallow": "blocks.1", "middle": "blocks.3", "deep": "blocks.5"},
}
for _name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
    PRESETS[_name] = {"shallow": "layer1", "middle": "layer3", "deep": "layer4"}

LEVELS = ("shallow", "middle", "deep")

_SKIP = (
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.AvgPool2d,
    nn.MaxPool2d,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
)


def stages(model: LoadedModel | nn.Module, size: int | None = None) -> list[str]:
    """The stage outputs of a network, shallow to deep (one per spatial resolution).

    Args:
        model: a ``LoadedModel`` or module.
        size: input side for the traced pass (default: the model's crop size).

    Returns:
        Dotted layer names, e.g. ``["blocks.0", "blocks.1", "blocks.2", "blocks.4",
        "bn2"]`` for the bundled model, ``["relu", "layer1", ..., "layer4"]`` for a ResNet.
    """
    loaded = LoadedModel.wrap(model)
    side = size or loaded.preprocess_spec.crop
    modules = dict(loaded.net.named_modules())
    last: dict[tuple[int, int], str] = {}
    order: list[tuple[int, int]] = []
    shape = (3, side, side)
    reader = Reader(loaded.net, shape)
    # every layout counts (channels-last stages of a Swin, token blocks of a ViT)
    for name, lay in spatial_layers(loaded.net, shape, reader):
        if name.count(".") > 1 or isinstance(modules[name], _SKIP):
            continue
        out = reader.sites[reader.by_name[name]].out_shape
        res = lay.grid or (tuple(out[1:3]) if lay.kind == "nhwc" else tuple(out[2:]))
        if res not in last:
            order.append(res)
        last[res] = name
    if not order:
        raise ValueError(f"{type(loaded.net).__name__} has no layer with a spatial feature map")
    return [last[r] for r in order]


def preset_layer(model: LoadedModel | nn.Module, level: str) -> str:
    """The layer for ``level`` (``"shallow"``, ``"middle"`` or ``"deep"``).

    Tuned names for known models (:data:`PRESETS`); otherwise the second stage,
    the middle stage and the last stage.
    """
    if level not in LEVELS:
        raise ValueError(f"preset must be one of {', '.join(LEVELS)}, got {level!r}")
    loaded = LoadedModel.wrap(model)
    known = PRESETS.get(loaded.name)
    if known is not None and known[level] in dict(loaded.net.named_modules()):
        return known[level]
    found = stages(loaded)
    index = {"shallow": min(1, len(found) - 1), "middle": len(found) // 2, "deep": -1}[level]
    return found[index]
