"""The layers of a model: listing them with output shapes, and picking default layers."""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import nn

from .errors import LayerError
from .hooks import attached, preserved

_POOLING = (
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.AvgPool2d,
    nn.MaxPool2d,
)


@dataclass(frozen=True)
class LayerInfo:
    """One module of a model: its dotted name, type and output shape for one input."""

    name: str
    type: str
    output_shape: tuple[int, ...] | None
    params: int

    def __str__(self) -> str:
        shape = "x".join(map(str, self.output_shape)) if self.output_shape else "-"
        return f"{self.name:40s} {self.type:24s} {shape}"


def trace_layers(net: nn.Module, input_size: tuple[int, int] = (224, 224)) -> list[LayerInfo]:
    """Every named module in completion order of one forward pass, with output shapes.

    Modules that do not run in the forward pass are listed last without a shape.
    """
    order: list[tuple[str, tuple[int, ...] | None]] = []
    named = [(n, m) for n, m in net.named_modules() if n]

    def make(name: str):
        def hook(module, args, output):
            shape = tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else None
            order.append((name, shape))

        return hook

    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    with attached((m, make(n)) for n, m in named), preserved(net), torch.no_grad():
        net(torch.zeros(1, 3, *input_size, device=device))
    modules = dict(named)
    seen: dict[str, tuple[int, ...] | None] = {}
    for name, shape in order:
        seen.setdefault(name, shape)
    infos = [
        LayerInfo(n, type(modules[n]).__name__, s, sum(p.numel() for p in modules[n].parameters()))
        for n, s in seen.items()
    ]
    for n, m in named:
        if n not in seen:
            infos.append(
                LayerInfo(n, type(m).__name__, None, sum(p.numel() for p in m.parameters()))
            )
    return infos


# model -> {input size: default layer name}; weak, so a freed model's entry goes with it.
_DEFAULT_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def default_layer(net: nn.Module, input_size: tuple[int, int] = (224, 224)) -> str:
    """The last feature map with spatial extent: the output of the last conv block.

    It is the last module to *finish* with a 4-D output larger than 1x1 that is
    not a pooling layer, so the outermost block wins over its last sub-layer
    (``layer4`` in a ResNet, ``bn2`` in timm's EfficientNet).
    """
    cached = _DEFAULT_CACHE.get(net, {})
    size = tuple(input_size)
    if size in cached and cached[size] in dict(net.named_modules()):
        return cached[size]
    modules = dict(net.named_modules())
    best = None
    for info in trace_layers(net, input_size):
        shape = info.output_shape
        if shape is None or len(shape) != 3 or shape[1] * shape[2] <= 1:
            continue
        if isinstance(modules[info.name], _POOLING):
            continue
        best = info.name
    if best is None:
        raise LayerError(
            f"{type(net).__name__} has no layer with a spatial feature map; pass layer= explicitly"
        )
    _DEFAULT_CACHE.setdefault(net, {})[size] = best
    return best


def last_linear(net: nn.Module) -> tuple[str, nn.Linear]:
    """The last ``nn.Linear`` registered in the model (the classifier of most CNNs)."""
    found = None
    for name, m in net.named_modules():
        if isinstance(m, nn.Linear):
            found = (name, m)
    if found is None:
        raise LayerError(f"{type(net).__name__} has no nn.Linear layer")
    return found
