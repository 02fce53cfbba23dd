"""SIAM's head: attribute maps, pooling and the linear combination, and its maths.

Marcos, Lobry & Tuia, "Semantically Interpretable Activation Maps: what-where-how
explanations within CNNs" (ICCV workshops 2019, arXiv 1909.08442). A backbone
gives features ``F`` (``C x h x w``); a 1x1 convolution and a non-negative
activation turn them into ``K`` attribute maps

    A_k(u) = sigma(v_k . F(u) + c_k) >= 0,

each the presence of a predefined attribute at location ``u`` (optionally zeroed
on a border of ``border`` cells, where padding makes features unreliable). Each
map is pooled to a few numbers ``P_kt``: global average pooling (``T = 1``,
``P_k = mean_u A_k(u)``) or ``T`` learned non-negative spatial templates on a fixed
``G x G`` grid (``P_kt = mean_g tau_kt(g) * avgpool_G(A_k)(g)``, an L1 penalty keeps
the templates sparse). The output is one linear combination

    y_o = b_o + sum_k sum_t W_okt P_kt  [+ sum_{k<l} V_okl g_k g_l]

(the bracket is the optional pairwise-interaction variant, on the average-pooled
``g_k = mean_u A_k(u)``). So the prediction decomposes exactly into per-attribute
contributions ``y_o = b_o + sum_k r_ok`` with
``r_ok = sum_t W_okt P_kt + 1/2 sum_{l != k} V_okl g_k g_l``:
what (the attribute), where (its map) and how (its weight).

Image-level attribute labels train the maps through ``g_k``: the presence logit is
``s_k (g_k - m_k)`` with a learned scale ``s_k > 0`` and offset ``m_k``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class SiamConfig:
    """Everything needed to rebuild a SIAM model (JSON-able; saved in checkpoints).

    Attributes:
        attributes: attribute names (``K`` of them).
        outputs: output names; one for regression, one per class for classification.
        task: ``"regression"`` or ``"classification"``.
        backbone: a :func:`~cnnlens.load_model` name.
        layer: the trunk layer whose output feeds the attribute maps.
        size: input side in pixels.
        pooling: ``"gap"`` or ``"templates"``.
        templates: templates per attribute (``pooling="templates"``).
        grid: template grid side.
        interactions: add the pairwise attribute-interaction terms.
        border: map cells zeroed on each side (0: none).
        activation: ``"sigmoid"``, ``"softplus"`` or ``"relu"`` (all non-negative).
    """

    attributes: list[str]
    outputs: list[str] = field(default_factory=lambda: ["score"])
    task: str = "regression"
    backbone: str = "efficientnet_lite0"
    layer: str = "blocks.4"
    size: int = 160
    pooling: str = "gap"
    templates: int = 1
    grid: int = 4
    interactions: bool = False
    border: int = 0
    activation: str = "sigmoid"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SiamOutput:
    """One forward pass of the head.

    Attributes:
        output: ``(N, O)`` predictions (logits for classification).
        maps: ``(N, K, h, w)`` non-negative attribute maps.
        pooled: ``(N, K, T)`` pooled values entering the linear layer.
        presence: ``(N, K)`` average-pooled maps ``g_k`` (presence scores).
        presence_logits: ``(N, K)`` logits of attribute presence.
        contributions: ``(N, O, K)``; ``output = bias + contributions.sum(-1)``.
    """

    output: torch.Tensor
    maps: torch.Tensor
    pooled: torch.Tensor
    presence: torch.Tensor
    presence_logits: torch.Tensor
    contributions: torch.Tensor


class SiamHead(nn.Module):
    """Attribute maps, pooling and the linear combination (see the module docstring)."""

    def __init__(self, in_channels: int, config: SiamConfig):
        super().__init__()
        k, o = len(config.attributes), len(config.outputs)
        if config.pooling not in ("gap", "templates"):
            raise ValueError(f"pooling must be 'gap' or 'templates', got {config.pooling!r}")
        if config.activation not in ("sigmoid", "softplus", "relu"):
            raise ValueError(f"activation must be sigmoid, softplus or relu: {config.activation!r}")
        self.config = config
        self.attr = nn.Conv2d(in_channels, k, 1)
        t = config.templates if config.pooling == "templates" else 1
        if config.pooling == "templates":
            g = config.grid
            self.templates = nn.Parameter(torch.ones(k, t, g, g))
        self.weight = nn.Parameter(torch.zeros(o, k, t))
        self.bias = nn.Parameter(torch.zeros(o))
        self.pair = nn.Parameter(torch.zeros(o, k, k)) if config.interactions else None
        self.presence_scale = nn.Parameter(torch.full((k,), 2.0))  # softplus -> about 2.1
        self.presence_offset = nn.Parameter(torch.full((k,), 0.05))

    def maps(self, feats: torch.Tensor) -> torch.Tensor:
        """``(N, C, h, w)`` features -> ``(N, K, h, w)`` non-negative attribute maps."""
        z = self.attr(feats)
        act = self.config.activation
        a = (
            torch.sigmoid(z)
            if act == "sigmoid"
            else F.softplus(z)
            if act == "softplus"
            else z.relu()
        )
        b = self.config.border
        if b > 0:
            keep = torch.zeros_like(a[:1, :1])
            keep[..., b:-b, b:-b] = 1.0
            a = a * keep
        return a

    def template_values(self) -> torch.Tensor:
        """``(K, T, G, G)`` non-negative templates (absolute values of the parameters)."""
        return self.templates.abs()

    def effective_weights(self, output: int = 0) -> torch.Tensor:
        """``(K,)`` change of output ``output`` per unit of a uniform attribute map.

        ``W_ok`` with global average pooling; ``sum_t W_okt mean_g tau_kt(g)`` with
        templates (a uniform map pools to its value times the template's mean).
        """
        w = self.weight[output].detach()
        if self.config.pooling == "templates":
            return (w * self.template_values().detach().mean(dim=(2, 3))).sum(-1)
        return w[:, 0]

    def forward(self, feats: torch.Tensor) -> SiamOutput:
        a = self.maps(feats)
        g = a.mean(dim=(2, 3))  # (N, K)
        if self.config.pooling == "templates":
            grid = F.adaptive_avg_pool2d(a, self.config.grid)  # (N, K, G, G)
            pooled = (grid[:, :, None] * self.template_values()[None]).mean(dim=(3, 4))
        else:
            pooled = g[..., None]
        contrib = torch.einsum("okt,nkt->nok", self.weight, pooled)
        if self.pair is not None:
            v = torch.triu(self.pair, diagonal=1)
            v = v + v.transpose(1, 2)  # symmetric, zero diagonal: V_kl for k != l
            contrib = contrib + 0.5 * torch.einsum("okl,nk,nl->nok", v, g, g)
        output = self.bias + contrib.sum(-1)
        # s_k = 20 softplus(.) > 0: g_k is an area-like fraction, so a presence decision
        # needs a steep logit (about 42 per unit of g at initialisation).
        logits = F.softplus(self.presence_scale) * 20.0 * (g - self.presence_offset)
        return SiamOutput(output, a, pooled, g, logits, contrib)


__all__ = ["SiamConfig", "SiamHead", "SiamOutput"]
