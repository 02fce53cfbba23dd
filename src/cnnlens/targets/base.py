"""The target protocol and the scoped head every method runs through.

A target is a small callable object: ``target(net, x)`` gives one differentiable score
per image, ``(N,)``. It is computed in two steps so that several targets can share one
forward pass: ``features(net, x)`` (by default the model's output) and ``score(features)``.
Targets whose :meth:`Target.key` is equal share the features of one pass. A user target
usually overrides only :meth:`Target.score`::

    class Brightness(Target):          # the mean of output unit 0 over a dense map
        def score(self, output):
            return output[:, 0].mean((1, 2))

:class:`TargetHead` makes every registered method explain such a score unchanged: it is
the model seen through a list of targets, ``head(x) -> (N, K)`` with column ``k`` the
``k``-th target's score, and a method runs on it with class index ``k``. The head *shares*
the model's submodules, parameters and buffers (the very same dictionaries), so layer
names, hooks, ``parameters()`` and the attributes methods read (a ViT's patch size) are
the model's own; its training flag is the model's. It holds no hook of its own, and
``torch.fx`` cannot trace it (so the incremental occlusion engine falls back to exact
passes, which read the target's score).
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Sequence

import torch
from torch import nn

from ..core.errors import MethodError, TargetError


class Target:
    """What a map explains: one differentiable scalar per image.

    Attributes:
        unit: the output column this target reads unchanged (a class logit, a regression
            output), or None. Methods that can only explain a raw output unit (CAM,
            excitation backprop) accept exactly the targets with a ``unit`` and ``score_name``
            ``"logit"``.
        score_name: for a ``unit``, which score of it (``"logit"`` or ``"prob"``): methods
            with a ``score`` parameter then run as for a plain class index.
        index: the class (or output) index shown as the map's target (``Explanation.targets``),
            -1 when the target has none.
        plain: whether methods that take any target may also run with ``unit`` as a plain
            class index (False: they run through the head, which reads ``(N,)`` outputs too).
    """

    unit: int | None = None
    score_name: str = "logit"
    index: int = -1
    plain: bool = True

    def features(self, net: nn.Module, x: torch.Tensor):
        """What :meth:`score` reads; by default the model's output ``net(x)``."""
        return net(x)

    def key(self) -> Hashable:
        """Targets with equal keys read the features of one forward pass."""
        return "output"

    def score(self, features) -> torch.Tensor:
        """``(N,)`` scores from :meth:`features` (kept in the autograd graph)."""
        raise NotImplementedError(f"{type(self).__name__} must define score(features)")

    def prepare(self, net: nn.Module, x: torch.Tensor) -> None:
        """Called once, without gradients and with the model in eval mode, before a method
        runs on ``x``: compute references, check the target applies (raise
        :class:`~cnnlens.core.errors.MethodError` when not)."""

    def describe(self) -> str:
        """A short name for listings and reports."""
        return type(self).__name__

    def __call__(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return self.score(self.features(net, x))

    def __repr__(self) -> str:
        return self.describe()


def output_matrix(output, what: str) -> torch.Tensor:
    """A model's output as ``(N, K)`` scores: ``.logits`` unwrapped, ``(N,)`` as ``(N, 1)``.

    Raises:
        MethodError: the output is not a tensor of one row of scores per image.
    """
    out = getattr(output, "logits", output)
    if isinstance(out, torch.Tensor) and out.dim() == 1:
        out = out.unsqueeze(1)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise MethodError(
            f"{what} reads a row of scores per image, (N, K), but the model returned {got}; "
            "for segmentation maps use SegmentationRegion, for detections DetectionBox"
        )
    return out


def column(out: torch.Tensor, index: int, what: str) -> torch.Tensor:
    """``out[:, index]`` after checking the index is one of the ``K`` columns."""
    if not 0 <= index < out.shape[1]:
        raise TargetError(f"{what}: index {index} is out of range, the model has {out.shape[1]}")
    return out[:, index]


class TargetHead(nn.Module):
    """``net`` seen through ``targets``: ``head(x)`` is ``(N, K)``, column ``k`` the score of
    ``targets[k]``. Shares the net's submodules, parameters, buffers and training flag
    (module docstring); attributes it lacks are read from the net."""

    def __init__(self, net: nn.Module, targets: Sequence[Target]):
        object.__setattr__(self, "_net", net)
        training = net.training
        super().__init__()  # sets self.training = True: the net's flag, restored below
        net.training = training
        for name in ("_modules", "_parameters", "_buffers", "_non_persistent_buffers_set"):
            object.__setattr__(self, name, getattr(net, name))
        object.__setattr__(self, "_targets", tuple(targets))

    @property
    def training(self) -> bool:  # type: ignore[override]
        return self.__dict__["_net"].training

    @training.setter
    def training(self, mode: bool) -> None:
        self.__dict__["_net"].training = mode

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            net = self.__dict__.get("_net")
            if net is None or name.startswith("__"):
                raise
            return getattr(net, name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.fx.Proxy):
            raise RuntimeError("target objects are scored on whole forward passes")
        net = self.__dict__["_net"]
        shared: dict = {}
        cols = []
        for t in self.__dict__["_targets"]:
            k = t.key()
            if k not in shared:
                shared[k] = t.features(net, x)
            s = t.score(shared[k])
            if not isinstance(s, torch.Tensor) or s.shape != (x.shape[0],):
                got = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
                raise MethodError(
                    f"target {t.describe()} gave {got}, not one score per image ({x.shape[0]},)"
                )
            cols.append(s)
        return torch.stack(cols, dim=1)


@functools.cache
def _head_class(net_type: type) -> type:
    # named after the model's class, so that messages naming the model read as before
    return type(net_type.__name__, (TargetHead,), {"__doc__": TargetHead.__doc__})


def head_of(net: nn.Module, targets: Sequence[Target]) -> TargetHead:
    """The :class:`TargetHead` of ``net`` for ``targets`` (its class bears the net's name)."""
    return _head_class(type(net))(net, targets)


def target_rows(target, n: int) -> list[list[Target]] | None:
    """Target objects per image, or None when ``target`` holds none (a class spec).

    ``target`` may be one :class:`Target` (every image), or a list with one entry per
    image, each a target or a list of targets (the same number for every image).

    Raises:
        TargetError: target objects mixed with class indices, or a list of the wrong length.
    """
    if isinstance(target, Target):
        return [[target] for _ in range(n)]
    if not isinstance(target, (list, tuple)):
        return None
    rows = [list(t) if isinstance(t, (list, tuple)) else [t] for t in target]
    flat = [t for row in rows for t in row]
    objects = [isinstance(t, Target) for t in flat]
    if not any(objects):
        return None
    if not all(objects):
        raise TargetError("a target list holds either class indices or target objects, not both")
    if len(rows) != n:
        raise TargetError(
            f"a target list needs one entry per image ({n}), got {len(rows)}; one target "
            "object alone applies to every image"
        )
    if len({len(r) for r in rows}) != 1 or not rows[0]:
        raise TargetError("every image needs the same (non-zero) number of targets")
    return rows
