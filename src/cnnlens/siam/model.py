"""SIAM models: a backbone trunk cut at a layer, feeding the attribute-map head.

Marcos, Lobry & Tuia, "Semantically Interpretable Activation Maps: what-where-how
explanations within CNNs" (ICCV workshops 2019, arXiv 1909.08442). :class:`Trunk`
runs the backbone up to ``config.layer`` (features ``F``, ``C x h x w``);
:class:`~cnnlens.siam.head.SiamHead` turns them into ``K`` non-negative attribute
maps and combines their pooled values linearly, so

    y_o = b_o + sum_k r_ok

exactly (the maths is in :mod:`cnnlens.siam.head`; the decomposition in
:mod:`cnnlens.siam.explain`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.hooks import StopForward, capture, preserved, stop_after
from ..core.names import resolve_layer
from .explain import SiamExplanation, explain
from .head import SiamConfig, SiamHead, SiamOutput


class Trunk(nn.Module):
    """The backbone up to ``layer``: ``forward(x) -> (N, C, h, w)`` features.

    The layer's output is recorded with :func:`~cnnlens.core.hooks.capture` and the pass
    stops right after it (:func:`~cnnlens.core.hooks.stop_after`); both hooks live for
    one call.
    """

    def __init__(self, net: nn.Module, layer: str):
        super().__init__()
        self.net = net
        self.layer = layer
        self.name, self.module = resolve_layer(net, layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with capture(self.net, [self.module]) as record, stop_after(self.net, [self.module]):
            try:
                self.net(x)
            except StopForward:
                pass
        if self.name not in record.activations:
            raise ValueError(f"layer {self.layer!r} did not run in the forward pass")
        return record.activations[self.name]


class SiamModel(nn.Module):
    """Backbone trunk + :class:`SiamHead`, with the backbone's preprocessing.

    ``forward(x)`` takes normalised images ``(N, 3, S, S)`` and returns the head's
    :class:`SiamOutput`; ``head(features)`` does the same from cached trunk features.
    """

    def __init__(self, config: SiamConfig, loaded=None, in_channels: int | None = None):
        super().__init__()
        from ..models import load_model

        self.config = config
        loaded = loaded if loaded is not None else load_model(config.backbone)
        self.preprocess_spec = loaded.preprocess_spec
        self.trunk = Trunk(loaded.net, config.layer)
        if in_channels is None:
            with torch.no_grad(), preserved(loaded.net, freeze=False):
                probe = torch.zeros(1, 3, config.size, config.size)
                in_channels = self.trunk(probe.to(next(loaded.net.parameters()).device)).shape[1]
        self.head = SiamHead(in_channels, config)

    def normalize(self, rgb: torch.Tensor) -> torch.Tensor:
        """``(N, 3, S, S)`` RGB in [0, 1] -> the backbone's input."""
        return self.preprocess_spec.normalize(rgb)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)

    def forward(self, x: torch.Tensor) -> SiamOutput:
        return self.head(self.trunk(x))

    def explain(self, x: torch.Tensor, output: int | None = None) -> SiamExplanation:
        """Per-attribute contributions, pooled values and maps: :func:`cnnlens.siam.explain`."""
        return explain(self, x, output=output)


def build(config: SiamConfig, loaded=None) -> SiamModel:
    """A fresh :class:`SiamModel` (backbone from :func:`~cnnlens.load_model`)."""
    return SiamModel(config, loaded)


__all__ = ["SiamConfig", "SiamHead", "SiamModel", "SiamOutput", "Trunk", "build"]
