"""LRP rules: how one linear layer hands the relevance of its outputs to its inputs.

A layer computes ``z = op(x, W, b)`` (a Linear or a convolution, batch norm already folded
in, see :mod:`.canonize`). Each rule below turns the relevance ``R`` of ``z`` into the
relevance of ``x``; ``vjp_W(s)`` is the transposed map ``W^T s`` (the gradient of
``op(., W)`` against ``s``) and ``stab(z) = z + eps * sign(z)`` with ``sign(0) = +1``:

* **epsilon** (Bach et al. 2015): ``R_x = x * vjp_W(R / stab(z))``; ``eps -> 0`` is LRP-0.
* **z-plus** (alpha1-beta0; Montavon et al. 2017): positive contributions only,
  ``z+ = op(x+, W+, b+) + op(x-, W-)``, ``R_x = x+ vjp_W+(s) + x- vjp_W-(s)``,
  ``s = R / stab(z+)``.
* **alpha-beta** (Bach et al. 2015), ``alpha - beta = 1``: positive and negative
  contributions normalised apart, ``alpha * (their z-plus share) - beta * (the mirror
  share through z- = op(x+, W-, b-) + op(x-, W+))``.
* **gamma** (Montavon et al. 2019, generalised to signed inputs as Andeol et al. 2021):
  where ``z > 0`` the weights ``W + gamma W+`` (on ``x+``) and ``W + gamma W-`` (on
  ``x-``), where ``z < 0`` the mirror pair; each normalised by its own modified output.
* **flat** (Lapuschkin et al. 2019): every input of a unit gets the same share,
  ``R_x = vjp_1(R / stab(op(1, 1)))``.
* **w-square** (Montavon et al. 2017): ``R_x = vjp_{W^2}(R / stab(op(1, W^2, b^2)))``.
* **z^B** (box; Montavon et al. 2017) for inputs bounded by ``low <= x <= high``:
  ``z = op(x, W, b) - op(low, W+, b+) - op(high, W-, b-)``,
  ``R_x = x vjp_W(s) - low vjp_W+(s) - high vjp_W-(s)``, ``s = R / stab(z)``.
* **norm** (pools, residual sums: parameter-free linear maps with non-negative weights):
  ``R_x = x * vjp(R / stab(op(x)))``.

The stabiliser is ``epsilon`` for the epsilon rule and 1e-6 for every other rule, and
biases enter the denominators as zennit 0.5.1 puts them (z-plus, alpha-beta and gamma
add the positive or negative part of the bias to the matching denominator; flat drops it;
w-square squares it; z^B's cancels). A part that is exactly zero (``x-`` after a ReLU) is
skipped: it would add exact zeros. Every rule computes its modified outputs and their
transposes in one autograd call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Op = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]
STABILIZER = 1e-6


@dataclass
class Layer:
    """A linear layer as the rules see it: ``op(x, weight, bias)``, batch norm folded in."""

    op: Op
    weight: torch.Tensor
    bias: torch.Tensor | None


def stabilize(z: torch.Tensor, eps: float) -> torch.Tensor:
    """``z + eps * sign(z)``, with the sign of 0 taken as +1 (zennit's convention)."""
    return torch.where(z >= 0, z + eps, z - eps)


def _total(terms):
    """The sum of a non-empty sequence of tensors (no ``0 +`` copy, unlike ``sum``)."""
    it = iter(terms)
    out = next(it)
    for t in it:
        out = out + t
    return out


def _pos(t):
    return None if t is None else t.clamp(min=0)


def _neg(t):
    return None if t is None else t.clamp(max=0)


def _grads(outs, grads, inputs):
    """``sum_k vjp(outs[k], grads[k])`` with respect to each of ``inputs``."""
    return torch.autograd.grad(outs, inputs, grads)


def _split(x: torch.Tensor):
    """``x+`` and ``x-`` as new leaves, ``x-`` None when it is zero everywhere (then ``x+``
    is ``x`` itself, uncopied)."""
    if x.numel() == 0 or float(x.min()) >= 0:
        return x.detach().requires_grad_(True), None
    return x.clamp(min=0).requires_grad_(True), x.clamp(max=0).requires_grad_(True)


class Rule:
    """A rule: ``rule(layer, x, R) -> R_x`` (same shape as ``x``)."""

    name = "rule"

    def __call__(self, layer: Layer, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            return self.relevance(layer, x.detach(), r).detach()

    def relevance(self, layer: Layer, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.name


class Epsilon(Rule):
    """``R_x = x * W^T (R / stab(z))`` (LRP-epsilon; LRP-0 at ``epsilon=0``)."""

    def __init__(self, epsilon: float = 1e-6):
        self.epsilon = epsilon
        self.name = f"epsilon({epsilon:g})"

    def relevance(self, layer, x, r):
        xx = x.requires_grad_(True)
        z = layer.op(xx, layer.weight, layer.bias)
        (g,) = _grads(z, r / stabilize(z.detach(), self.epsilon), xx)
        return x * g


class ZPlus(Rule):
    """Positive contributions only (alpha1-beta0)."""

    name = "zplus"

    def relevance(self, layer, x, r):
        w, b = layer.weight, layer.bias
        xp, xn = _split(x)
        outs, ins = [layer.op(xp, _pos(w), _pos(b))], [xp]
        if xn is not None:
            outs.append(layer.op(xn, _neg(w), None))
            ins.append(xn)
        s = r / stabilize(_total(o.detach() for o in outs), STABILIZER)
        gs = _grads(outs, [s] * len(outs), ins)
        return _total(i.detach() * g for i, g in zip(ins, gs))


class AlphaBeta(Rule):
    """``alpha * positive share - beta * negative share``, ``alpha - beta = 1``."""

    def __init__(self, alpha: float = 2.0, beta: float = 1.0):
        if alpha < 0 or beta < 0 or alpha - beta != 1:
            raise ValueError(f"alpha-beta needs alpha, beta >= 0 and alpha - beta = 1, got "
                             f"alpha={alpha}, beta={beta}")  # fmt: skip
        self.alpha, self.beta = alpha, beta
        self.name = f"alpha{alpha:g}_beta{beta:g}"

    def relevance(self, layer, x, r):
        w, b, op = layer.weight, layer.bias, layer.op
        wp, wn = _pos(w), _neg(w)
        xp, xn = _split(x)  # leaves of the positive share
        yp, yn = _split(x)  # separate leaves for the negative share
        pos = [(xp, op(xp, wp, _pos(b)))]
        neg = [(yp, op(yp, wn, _neg(b)))]
        if xn is not None:
            pos.append((xn, op(xn, wn, None)))
            neg.append((yn, op(yn, wp, None)))
        sp = r / stabilize(_total(o.detach() for _, o in pos), STABILIZER)
        sn = r / stabilize(_total(o.detach() for _, o in neg), STABILIZER)
        outs = [o for _, o in pos + neg]
        ins = [i for i, _ in pos + neg]
        gs = _grads(outs, [sp] * len(pos) + [sn] * len(neg), ins)
        k = len(pos)
        share_p = _total(i.detach() * g for i, g in zip(ins[:k], gs[:k]))
        share_n = _total(i.detach() * g for i, g in zip(ins[k:], gs[k:]))
        return self.alpha * share_p - self.beta * share_n


class Gamma(Rule):
    """Positive (where ``z > 0``) or negative (where ``z < 0``) weights boosted by ``gamma``."""

    def __init__(self, gamma: float = 0.25):
        self.gamma = gamma
        self.name = f"gamma({gamma:g})"

    def relevance(self, layer, x, r):
        w, b, op, gm = layer.weight, layer.bias, layer.op, self.gamma
        z = op(x, w, b)
        up = (w + gm * _pos(w), None if b is None else b + gm * _pos(b))
        down = (w + gm * _neg(w), None if b is None else b + gm * _neg(b))
        xp, xn = _split(x)
        pos = [(xp, op(xp, *up))]  # where z > 0: boost positive contributions
        neg = [(xp, op(xp, *down))]  # where z < 0: boost negative contributions
        if xn is not None:
            pos.append((xn, op(xn, down[0], None)))
            neg.append((xn, op(xn, up[0], None)))
        sp = (z > 0) * r / stabilize(_total(o.detach() for _, o in pos), STABILIZER)
        sn = (z < 0) * r / stabilize(_total(o.detach() for _, o in neg), STABILIZER)
        outs = [o for _, o in pos + neg]
        ins = [xp] if xn is None else [xp, xn]  # each leaf collects both shares
        gs = _grads(outs, [sp] * len(pos) + [sn] * len(neg), ins)
        return _total(i.detach() * g for i, g in zip(ins, gs))


class Flat(Rule):
    """Every input in a unit's receptive field gets an equal share (weights and inputs 1)."""

    name = "flat"

    def relevance(self, layer, x, r):
        ones = torch.ones_like(x).requires_grad_(True)
        z = layer.op(ones, torch.ones_like(layer.weight), None)
        (g,) = _grads(z, r / stabilize(z.detach(), STABILIZER), ones)
        return g


class WSquare(Rule):
    """Shares by squared weights, ignoring the input (bias squared into the denominator)."""

    name = "wsquare"

    def relevance(self, layer, x, r):
        ones = torch.ones_like(x).requires_grad_(True)
        b = None if layer.bias is None else layer.bias**2
        z = layer.op(ones, layer.weight**2, b)
        (g,) = _grads(z, r / stabilize(z.detach(), STABILIZER), ones)
        return g


class ZBox(Rule):
    """z^B for inputs in ``[low, high]`` (broadcast to the input, e.g. ``(1, 3, 1, 1)``)."""

    name = "zbox"

    def __init__(self, low: torch.Tensor, high: torch.Tensor):
        self.low, self.high = low, high

    def relevance(self, layer, x, r):
        w, b, op = layer.weight, layer.bias, layer.op
        lo = self.low.to(x).expand_as(x).clone().requires_grad_(True)
        hi = self.high.to(x).expand_as(x).clone().requires_grad_(True)
        xx = x.requires_grad_(True)
        outs = [op(xx, w, b), op(lo, _pos(w), _pos(b)), op(hi, _neg(w), _neg(b))]
        z = outs[0].detach() - (outs[1].detach() + outs[2].detach())
        s = r / stabilize(z, STABILIZER)
        gx, gl, gh = _grads(outs, [s, s, s], [xx, lo, hi])
        return x * gx - (lo.detach() * gl + hi.detach() * gh)


def norm_rule(op: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, r: torch.Tensor):
    """The norm rule for a parameter-free linear map ``op`` (pooling, resizing):
    ``R_x = x * vjp(R / stab(op(x)))``."""
    with torch.enable_grad():
        xx = x.detach().requires_grad_(True)
        z = op(xx)
        (g,) = _grads(z, r / stabilize(z.detach(), STABILIZER), xx)
    return x.detach() * g


__all__ = [
    "STABILIZER",
    "AlphaBeta",
    "Epsilon",
    "Flat",
    "Gamma",
    "Layer",
    "Rule",
    "WSquare",
    "ZBox",
    "ZPlus",
    "norm_rule",
    "stabilize",
]
