"""LRP composites: which rule each layer gets, named and assigned as zennit 0.5.1 does.

=============================  ==========================  ===========  ===========
composite                      first layer                 convolutions  Linear
=============================  ==========================  ===========  ===========
``epsilon_plus`` (default)     (as the others)             z-plus       epsilon
``epsilon_gamma_box``          z^B (first convolution)     gamma        epsilon
``epsilon_alpha2_beta1``       (as the others)             alpha2-beta1 epsilon
``epsilon_plus_flat``          flat (first conv / Linear)  z-plus       epsilon
``epsilon_alpha2_beta1_flat``  flat (first conv / Linear)  alpha2-beta1 epsilon
=============================  ==========================  ===========  ===========

In every composite average pooling (``nn.AvgPool*``, ``nn.AdaptiveAvgPool*``, and the
same as calls: ``F.avg_pool2d``, ``x.mean(...)``, resizing) and residual sums get the
norm rule (zennit's ``Norm`` on ``AvgPool`` and ``Sum``), activations and batch norms
pass relevance through (zennit's ``Pass``; batch norms are folded first), max pooling keeps
its gradient (relevance to the maximum). The *first layer* is the first convolution (z^B)
or convolution / Linear (flat) to run; zennit takes the first in module order, which is the
same for every sequentially written network. z^B's bounds are the normalised images of
pixel values 0 and 1 (``(0 - mean) / std`` and ``(1 - mean) / std`` per channel, from the
model's preprocessing), and its layer must read the network input itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ...core.errors import MethodError
from .rules import AlphaBeta, Epsilon, Flat, Gamma, Rule, ZBox, ZPlus


@dataclass(frozen=True)
class Composite:
    """Rules by layer kind. ``first``: the rule of the first layer of ``first_kinds``."""

    name: str
    conv: Callable[[dict], Rule]
    linear: Callable[[dict], Rule]
    first: Callable[[dict], Rule] | None = None
    first_kinds: tuple[str, ...] = ()
    summary: str = ""


def _eps(p):
    return Epsilon(p["epsilon"])


COMPOSITES = {
    c.name: c
    for c in (
        Composite(
            "epsilon_plus",
            lambda p: ZPlus(),
            _eps,
            summary="z-plus on convolutions, epsilon on Linear layers",
        ),
        Composite(
            "epsilon_gamma_box",
            lambda p: Gamma(p["gamma"]),
            _eps,
            lambda p: ZBox(p["low"], p["high"]),
            ("conv",),
            "z^B on the first convolution, gamma on the others, epsilon on Linear layers",
        ),
        Composite(
            "epsilon_alpha2_beta1",
            lambda p: AlphaBeta(2.0, 1.0),
            _eps,
            summary="alpha2-beta1 on convolutions, epsilon on Linear layers",
        ),
        Composite(
            "epsilon_plus_flat",
            lambda p: ZPlus(),
            _eps,
            lambda p: Flat(),
            ("conv", "linear"),
            "flat on the first layer, z-plus on convolutions, epsilon on Linear layers",
        ),
        Composite(
            "epsilon_alpha2_beta1_flat",
            lambda p: AlphaBeta(2.0, 1.0),
            _eps,
            lambda p: Flat(),
            ("conv", "linear"),
            "flat on the first layer, alpha2-beta1 on convolutions, epsilon on Linear layers",
        ),
    )
}


def box_bounds(mean, std, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalised images ``(1, C, 1, 1)`` of pixel values 0 and 1 (z^B's bounds)."""
    if len(mean) != x.shape[1] or len(std) != x.shape[1]:
        raise MethodError(
            f"the z^B rule bounds each input channel by the model's normalisation, but it has "
            f"{len(mean)} means for {x.shape[1]} input channels; choose another composite"
        )
    m, s = (torch.tensor(v, dtype=x.dtype, device=x.device).view(1, -1, 1, 1) for v in (mean, std))
    return (0 - m) / s, (1 - m) / s


@dataclass
class Assignment:
    """The rules of one call: by kind, and the first layer's once it is known."""

    composite: Composite
    params: dict
    first_taken: bool = False

    def rule_for(self, kind: str) -> tuple[Rule, bool]:
        """The rule for the next layer of ``kind`` (``"conv"`` / ``"linear"``) to run,
        and whether it is the composite's first-layer rule."""
        c = self.composite
        if c.first is not None and not self.first_taken and kind in c.first_kinds:
            self.first_taken = True
            return c.first(self.params), True
        return (c.conv if kind == "conv" else c.linear)(self.params), False


def composite_named(name: str) -> Composite:
    """The composite called ``name``.

    Raises:
        MethodError: unknown name; the message lists the composites.
    """
    if name not in COMPOSITES:
        raise MethodError(f"unknown LRP composite {name!r}; choose one of {', '.join(COMPOSITES)}")
    return COMPOSITES[name]


__all__ = ["COMPOSITES", "Assignment", "Composite", "box_bounds", "composite_named"]
