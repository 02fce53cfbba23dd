"""Objectives for activation maximisation, and their algebra.

Activation maximisation (Erhan et al. 2009, "Visualizing higher-layer features
of a deep network"; Simonyan et al. 2014; Olah et al. 2017, "Feature
visualization", Distill) looks for an input image ``x*`` that maximises a
scalar function of the network's activations,

    x* = argmax_x  f(a(x)) - sum_k lambda_k R_k(x),

where ``a(x)`` are the activations of one or more layers and ``R_k`` are
regularisers on the image (see :mod:`.regularizers`).

An :class:`Objective` is ``f``: a function from the activations of a batch to
one score per image, ``(B,)``, plus a readable description and the set of
layers it reads. Objectives are *maximised*. They compose with ``+``, ``-``,
unary ``-``, and multiplication or division by a number, and the description
follows (``channel('blocks.3', 7) - 0.5 * deepdream('blocks.2')``); ``sum()``
of a list of objectives works too.

The building blocks, for an activation ``A`` of shape ``(B, C, H, W)`` (or
``(B, C)`` for a fully connected layer, treated as ``H = W = 1``):

* ``channel(layer, c)``: ``mean_{h,w} A[b, c, h, w]`` — what a feature map detects.
* ``neuron(layer, c, x, y)``: ``A[b, c, y, x]`` — one unit, one position
  (the centre by default).
* ``deepdream(layer)``: ``mean_{c,h,w} A[b, c, h, w]^2`` — Mordvintsev et al.
  2015: amplify whatever the layer already sees.
* ``class_logit(k)`` / ``class_prob(k)``: the pre-softmax score ``z_k`` or the
  softmax probability ``p_k`` of the network output (layer ``"logits"``).
* ``direction(layer, v)``: ``mean_{h,w} <A[b, :, h, w], v / |v|>`` — a direction
  in channel space rather than a single basis vector.
* ``diversity(layer)``: minus the mean cosine similarity between the flattened
  Gram matrices ``G_b = A_b A_b^T / (HW)`` of an image and of the other images
  rendered for the same objective: pushes a group of images apart in style.

A string ``"layer:channel"`` is shorthand for ``channel(layer, channel)``, and
``"logits:k"`` for ``class_logit(k)`` (see :func:`as_objective`).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from .algebra import LOGITS, Activations, Check, Objective

__all__ = [
    "LOGITS",
    "Activations",
    "Objective",
    "as_objective",
    "channel",
    "class_logit",
    "class_prob",
    "deepdream",
    "direction",
    "diversity",
    "layer_objective",
    "neuron",
]


# --------------------------------------------------------------------------- helpers


def _as4d(a: torch.Tensor) -> torch.Tensor:
    """``(B, C)`` -> ``(B, C, 1, 1)``; ``(B, C, H, W)`` unchanged."""
    if a.dim() == 2:
        return a[:, :, None, None]
    if a.dim() != 4:
        raise ValueError(f"expected an activation of shape (B, C, H, W) or (B, C), got {a.shape}")
    return a


def _channels(shapes: Mapping[str, torch.Size], layer: str) -> int:
    shape = shapes[layer]
    if len(shape) not in (1, 3):
        raise ValueError(
            f"layer {layer!r} outputs shape {tuple(shape)} per image; channel objectives need "
            "(C, H, W) or (C,)"
        )
    return int(shape[0])


def _plural(what: str) -> str:
    """``"channel"`` -> ``"channels"``, ``"class"`` -> ``"classes"``."""
    return what + ("es" if what.endswith(("s", "x", "ch", "sh")) else "s")


def _channel_check(layer: str, index: int, what: str = "channel") -> Check:
    def check(shapes):
        n = _channels(shapes, layer)
        if not 0 <= index < n:
            name = "the output" if layer == LOGITS else f"layer {layer!r}"
            raise ValueError(
                f"{what} {index} is out of range: {name} has {n} ({_plural(what)} 0-{n - 1})"
            )

    return check


def _index(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------- objectives


def channel(layer: str, index: int) -> Objective:
    """Mean activation of one channel over all positions: ``mean_{h,w} A[:, c, h, w]``."""
    index = _index(index, "channel")
    return Objective(
        lambda acts: _as4d(acts[layer])[:, index].mean(dim=(1, 2)),
        f"channel({layer!r}, {index})",
        [layer],
        _channel_check(layer, index),
    )


def neuron(layer: str, index: int, x: int | None = None, y: int | None = None) -> Objective:
    """One unit at one position, ``A[:, c, y, x]``; ``x``/``y`` default to the map's centre.

    Positions are in the layer's own grid and refer to the transformed image the
    network sees; with the default transforms (padding, jitter) the centre is the
    meaningful choice.
    """
    index = _index(index, "channel")

    def fn(acts):
        a = _as4d(acts[layer])
        h, w = a.shape[-2:]
        yy = h // 2 if y is None else y
        xx = w // 2 if x is None else x
        if not (0 <= yy < h and 0 <= xx < w):
            raise ValueError(
                f"neuron position x={xx}, y={yy} lies outside layer {layer!r}'s {w}x{h} map"
            )
        return a[:, index, yy, xx]

    where = "" if x is None and y is None else f", x={x}, y={y}"
    return Objective(
        fn, f"neuron({layer!r}, {index}{where})", [layer], _channel_check(layer, index)
    )


def deepdream(layer: str) -> Objective:
    """DeepDream: the mean squared activation of a whole layer, ``mean A^2``."""
    return Objective(
        lambda acts: _as4d(acts[layer]).pow(2).mean(dim=(1, 2, 3)),
        f"deepdream({layer!r})",
        [layer],
    )


#: ``layer(name)`` is the same objective as :func:`deepdream` (L2 of the activation).
layer_objective = deepdream


def class_logit(index: int) -> Objective:
    """The pre-softmax score of one class, ``z_k``."""
    index = _index(index, "class")
    return Objective(
        lambda acts: _logits(acts)[:, index],
        f"class_logit({index})",
        [LOGITS],
        _channel_check(LOGITS, index, "class"),
    )


def class_prob(index: int, log: bool = False) -> Objective:
    """Softmax probability of one class, ``p_k`` (``log=True``: ``log p_k``).

    The probability can also rise by lowering the other classes; ``log p_k`` has
    useful gradients even where ``p_k`` is tiny.
    """
    index = _index(index, "class")

    def fn(acts):
        lp = F.log_softmax(_logits(acts).float(), dim=1)[:, index]
        return lp if log else lp.exp()

    desc = f"class_prob({index}{', log=True' if log else ''})"
    return Objective(fn, desc, [LOGITS], _channel_check(LOGITS, index, "class"))


def _logits(acts: Activations) -> torch.Tensor:
    z = acts[LOGITS]
    if z.dim() != 2:
        raise ValueError(f"class objectives need a (B, classes) output, got {tuple(z.shape)}")
    return z


def direction(layer: str, vector: Sequence[float] | torch.Tensor) -> Objective:
    """Projection on a unit direction ``v`` in channel space, averaged over positions."""
    v = torch.as_tensor(vector, dtype=torch.float32).flatten()
    norm = float(v.norm())
    if norm == 0:
        raise ValueError("direction vector must not be zero")
    v = v / norm

    def fn(acts):
        a = _as4d(acts[layer])
        return torch.einsum("bchw,c->b", a, v.to(a.device, a.dtype)) / (a.shape[2] * a.shape[3])

    def check(shapes):
        n = _channels(shapes, layer)
        if n != v.numel():
            raise ValueError(f"direction has {v.numel()} entries; layer {layer!r} has {n} channels")

    return Objective(fn, f"direction({layer!r}, <{v.numel()} channels>)", [layer], check)


def diversity(layer: str) -> Objective:
    """Minus the mean cosine similarity of each image's Gram matrix to the other images'.

    Meant for several images per objective (``images_per_objective > 1`` in
    :func:`render`): it is evaluated within each objective's group and is 0 for a
    group of one. Values lie in [-1, 1]; higher is more diverse.
    """

    def fn(acts):
        a = _as4d(acts[layer])
        b, c = a.shape[:2]
        if b < 2:
            return a.new_zeros(b)
        flat = a.reshape(b, c, -1)
        gram = torch.bmm(flat, flat.transpose(1, 2)) / flat.shape[-1]
        g = F.normalize(gram.reshape(b, -1), dim=1)
        sim = g @ g.t()
        return -(sim.sum(dim=1) - sim.diagonal()) / (b - 1)

    return Objective(fn, f"diversity({layer!r})", [layer])


# --------------------------------------------------------------------------- parsing


def as_objective(spec: Objective | str) -> Objective:
    """An :class:`Objective`, or a ``"layer:channel"`` string (``"logits:k"``: class logit)."""
    if isinstance(spec, Objective):
        return spec
    if not isinstance(spec, str):
        raise TypeError(
            f"an objective is an Objective or a 'layer:channel' string, got {type(spec).__name__}"
        )
    layer, sep, index = spec.rpartition(":")
    if not sep or not layer or not index.strip().lstrip("-").isdigit():
        raise ValueError(
            f"cannot read objective {spec!r}: write 'layer:channel' (e.g. 'blocks.3:7'), "
            "'logits:285' for a class, or build one with cl.featurevis.channel(...) etc."
        )
    if layer.strip() in (LOGITS, "logit"):
        return class_logit(int(index))
    return channel(layer.strip(), int(index))
