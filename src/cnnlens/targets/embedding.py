"""Embedding similarity: why is this image close to a reference image?

``EmbeddingSimilarity(reference, layer)`` explains, per image, the cosine similarity

    s(x) = <e(x), e(r)> / (|e(x)| |e(r)|)

of the image's embedding ``e(x)`` to the reference's ``e(r)``. The embedding is the input
of the model's last ``nn.Linear`` (the penultimate features) by default, or a named
layer's output pooled the way the dataset index stores it (:func:`pooled`: the mean over
positions of an ``(N, C, H, W)`` map, anything else flattened), so a map made for a pair
from ``cnnlens neighbours`` explains the very similarity the index ranked them by (its
cosine metric). The reference's embedding is computed once per call, without gradients.
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.errors import MethodError, TargetError
from ..core.hooks import attached
from ..core.layers import last_linear
from ..core.names import resolve_layer
from .base import Target


def pooled(a: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` -> mean over positions ``(N, C)``; any other shape -> ``(N, -1)``."""
    return a.flatten(2).mean(2) if a.dim() == 4 else a.flatten(1)


def embed(net: nn.Module, x: torch.Tensor, layer: str | None = None) -> torch.Tensor:
    """``(N, D)`` embeddings of ``x``: the last ``nn.Linear``'s input, or ``layer`` pooled.

    Raises:
        LayerError: no such layer (or no ``nn.Linear`` for the default).
        MethodError: the layer did not run in the forward pass.
    """
    name, module = last_linear(net) if layer is None else resolve_layer(net, layer)
    got: dict[str, torch.Tensor] = {}

    def keep_input(m, args):
        got["a"] = args[0]

    def keep_output(m, args, out):
        got["a"] = out

    hook = (module, keep_input, "forward_pre") if layer is None else (module, keep_output)
    with attached([hook]):
        net(x)
    if not isinstance(got.get("a"), torch.Tensor):
        raise MethodError(f"layer {name!r} gave no tensor in the forward pass to embed")
    return pooled(got["a"])


class EmbeddingSimilarity(Target):
    """Cosine similarity of each image's embedding to a reference's (module docstring).

    Args:
        reference: an image preprocessed like the inputs, ``(3, H, W)`` or ``(1, 3, H, W)``;
            or an embedding, ``(D,)`` or ``(1, D)`` (e.g. a row of a dataset index).
        layer: None for the input of the last ``nn.Linear``; else a dotted layer name
            whose output is pooled (:func:`pooled`).
        name: how the reference is named in listings and reports.
    """

    def __init__(self, reference: torch.Tensor, layer: str | None = None, *, name: str = ""):
        if not isinstance(reference, torch.Tensor) or reference.dim() not in (1, 2, 3, 4):
            raise TargetError("EmbeddingSimilarity needs a reference image or embedding tensor")
        image = reference.dim() >= 3
        if (image and reference.dim() == 4 and reference.shape[0] != 1) or (
            reference.dim() == 2 and reference.shape[0] != 1
        ):
            raise TargetError(
                f"EmbeddingSimilarity takes one reference, got shape {tuple(reference.shape)}"
            )
        self.reference = reference.detach()
        self.is_image = image
        self.layer = layer
        self.name = name or "the reference"
        self.embedding: torch.Tensor | None = None if image else self.reference.reshape(1, -1)

    def key(self):
        return ("embedding", self.layer)

    def features(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.embedding is None:
            self.prepare(net, x)
        return embed(net, x, self.layer)

    def prepare(self, net: nn.Module, x: torch.Tensor) -> None:
        ref = self.reference
        if self.is_image:
            ref = ref.reshape(1, *ref.shape[-3:]).to(device=x.device, dtype=x.dtype)
            with torch.no_grad():
                self.embedding = embed(net, ref, self.layer)
        else:
            self.embedding = ref.reshape(1, -1).to(device=x.device)

    def score(self, features: torch.Tensor) -> torch.Tensor:
        ref = self.embedding
        if ref is None:
            raise MethodError("EmbeddingSimilarity needs prepare(net, x) before score()")
        if ref.shape[1] != features.shape[1]:
            raise MethodError(
                f"the reference's embedding has {ref.shape[1]} values and the image's "
                f"{features.shape[1]}: a reference embedding must come from the same layer"
            )
        e = features.float()
        r = ref.to(e)
        sim = (e @ r.T).squeeze(1) / (e.norm(dim=1) * r.norm()).clamp_min(1e-12)
        return sim.to(features.dtype)

    def describe(self) -> str:
        at = "last linear layer's input" if self.layer is None else f"pooled {self.layer}"
        return f"similarity to {self.name} ({at})"
