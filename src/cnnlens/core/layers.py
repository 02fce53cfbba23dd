"""The layers of a model: listing them with output shapes, and picking default layers."""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import nn

from .errors import LayerError
from .hooks import attached, preserved
from .layouts import spatial_layers
from .sites import Traced, probe, remember, trace


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
    """The layer that layer-based methods explain at by default.

    Candidates are the modules whose output reads as a spatial map with more than one
    position (:func:`cnnlens.core.layouts.spatial_layers`: NCHW, channels-last or tokens
    on a grid), leaving out pooling layers and attention modules with everything inside
    them. Norms, identities, dropouts and permutes at the very end of that list are
    dropped when they read the previous candidate's output (their map is their input's:
    a Swin's last stage, not its final norm); one that reads a tensor no candidate
    outputs stays (Hugging Face Swin's final norm). Of the rest, the default is the last
    to *finish* whose positions receive gradient from the model's output, so the
    outermost block wins over its last sub-layer (``layer4`` in a ResNet, ``bn2`` in
    timm's EfficientNet). A ViT that classifies from its class token reads its patch
    tokens only through the last block's attention: everything after that block's first
    norm has zero gradient at the patches, and the default is that norm
    (``blocks.11.norm1``, what pytorch-grad-cam recommends). The gradient check uses one
    pass of a fixed random image; when no candidate gets gradient (a zero-initialised
    head), the input of the last linear layer stands in for the output, and failing that
    the last candidate wins.
    """
    cached = _DEFAULT_CACHE.get(net, {})
    size = tuple(input_size)
    if size in cached and cached[size] in dict(net.named_modules()):
        return cached[size]
    shape = (3, *size)
    with preserved(net), torch.enable_grad():
        traced = trace(net, probe(net, shape).requires_grad_(True), keep=True)
        remember(net, shape, traced.sites)
        tails = {s.name for s in traced.sites if s.tail}
        found = spatial_layers(net, shape)
        while found and found[-1][0] in tails:
            if len(found) > 1 and not _fed_by(traced, *found[-2:]):
                break
            found.pop()
        if not found:
            raise LayerError(
                f"{type(net).__name__} has no layer with a spatial feature map; "
                "pass layer= explicitly"
            )
        best = _last_with_gradient(net, traced, found)
    _DEFAULT_CACHE.setdefault(net, {})[size] = best
    return best


def _fed_by(traced: Traced, before: tuple, tail: tuple) -> bool:
    """Whether the trailing norm/identity ``tail`` reads the output of the candidate
    ``before`` itself. When it does not (Hugging Face Swin: the blocks return tuples and
    add their residuals in code, so the candidate before the final norm is an MLP branch)
    the tail is the last layer that sees the whole feature map, and stays."""
    out = traced.outputs.get(before[0])
    return out is not None and traced.inputs.get(tail[0]) is out


def _output_tensor(out) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(out, list | tuple):
        return next((o for o in out if isinstance(o, torch.Tensor)), None)
    return None


def _last_with_gradient(net: nn.Module, traced: Traced, found: list) -> str:
    """The last of ``found`` whose spatial positions get gradient from the output.

    Candidates are checked from the end in growing groups (1, 16, 256, ...), so a
    CNN's check costs a backward pass through its head only.
    """
    outs = [traced.outputs.get(name) for name, _ in found]
    usable = [i for i, o in enumerate(outs) if isinstance(o, torch.Tensor) and o.requires_grad]
    refs = [_output_tensor(traced.result)]
    try:
        refs.append(traced.inputs.get(last_linear(net)[0]))
    except LayerError:
        pass
    gen = torch.Generator().manual_seed(0)
    for ref in refs:
        if not isinstance(ref, torch.Tensor) or not ref.requires_grad or not usable:
            continue
        score = (ref * torch.randn(ref.shape, generator=gen).to(ref)).sum()
        end, size = len(usable), 1
        while end > 0:
            group = usable[max(0, end - size) : end]
            try:
                grads = torch.autograd.grad(
                    score, [outs[i] for i in group], allow_unused=True, retain_graph=True
                )
            except RuntimeError:  # a graph autograd cannot walk: keep the plain rule
                return found[-1][0]
            for i, g in reversed(list(zip(group, grads))):
                if g is not None and bool(found[i][1].to_spatial(g).ne(0).any()):
                    return found[i][0]
            end, size = end - size, size * 16
    return found[-1][0]


def last_linear(net: nn.Module) -> tuple[str, nn.Linear]:
    """The last ``nn.Linear`` registered in the model (the classifier of most CNNs)."""
    found = None
    for name, m in net.named_modules():
        if isinstance(m, nn.Linear):
            found = (name, m)
    if found is None:
        raise LayerError(f"{type(net).__name__} has no nn.Linear layer")
    return found
