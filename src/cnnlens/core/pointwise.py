"""Modules that act on each position of a feature map on its own.

Shared by the graph walkers that follow spatial geometry through a network
(receptive fields in :mod:`cnnlens.analysis.receptive`, projective fields in
:mod:`cnnlens.attribution.incremental`): such a module neither grows nor moves
a region. Batch norm belongs here only in eval mode (a per-channel affine map);
callers that may meet a training-mode batch norm check that themselves.
"""

from __future__ import annotations

from torch import nn

POINTWISE_MODULES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softplus,
)

__all__ = ["POINTWISE_MODULES"]
