"""The :class:`Objective` type and its algebra: ``+``, ``-``, ``*`` and ``/`` by numbers.

An objective is a function from the activations of a batch to one score per
image, ``(B,)``, to be maximised, together with a readable description that
follows the algebra (``channel('blocks.3', 7) - 0.5 * deepdream('blocks.2')``,
with parentheses only where needed) and the set of layers it reads. The
constructors live in :mod:`.objectives` and :mod:`.regularizers`.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Mapping

import torch

#: Name under which objectives read the network's output.
LOGITS = "logits"

_ATOM, _PRODUCT, _SUM = 3, 2, 1


class Activations(dict):
    """Layer name -> activation of a batch, plus ``image``: the rendered images in [0, 1].

    ``image`` is the parameterised image before the robustness transforms, the
    thing regularisers constrain. Objectives index it like a dict.
    """

    def __init__(self, acts: Mapping[str, torch.Tensor], image: torch.Tensor | None = None):
        super().__init__(acts)
        self.image = image

    def rows(self, index: slice) -> Activations:
        """The same activations restricted to the images ``index`` of the batch."""
        image = None if self.image is None else self.image[index]
        return Activations({k: v[index] for k, v in self.items()}, image)


Check = Callable[[Mapping[str, torch.Size]], None]


class Objective:
    """A differentiable score per image, to be maximised.

    Args:
        fn: maps :class:`Activations` of a batch of ``B`` images to a ``(B,)`` tensor.
        description: how to read (and rebuild) it, e.g. ``"channel('blocks.3', 7)"``.
        layers: the layer names ``fn`` reads (``"logits"`` for the network output).
        check: optional validation against the layers' output shapes (without the
            batch axis), called once before optimising; raises ``ValueError``.
    """

    __slots__ = ("fn", "description", "layers", "_checks", "_prec")

    def __init__(
        self,
        fn: Callable[[Activations], torch.Tensor],
        description: str,
        layers: Iterable[str] = (),
        check: Check | None = None,
        *,
        _checks: tuple[Check, ...] = (),
        _prec: int = _ATOM,
    ):
        self.fn = fn
        self.description = description
        self.layers = frozenset(layers)
        self._checks = _checks + ((check,) if check is not None else ())
        self._prec = _prec

    def __call__(self, acts: Activations) -> torch.Tensor:
        value = self.fn(acts)
        batch = len(next(iter(acts.values()))) if acts else len(acts.image)
        if value.shape != (batch,):
            raise ValueError(
                f"objective {self.description} returned shape {tuple(value.shape)}; "
                f"an objective gives one score per image, shape ({batch},)"
            )
        return value

    def check(self, shapes: Mapping[str, torch.Size]) -> None:
        """Validate channel indices and layer ranks against ``shapes`` (per-image shapes)."""
        for c in self._checks:
            c(shapes)

    def __repr__(self) -> str:
        return f"Objective({self.description})"

    def __str__(self) -> str:
        return self.description

    # -- algebra -------------------------------------------------------------------------
    def _wrapped(self, prec: int) -> str:
        return f"({self.description})" if self._prec < prec else self.description

    def _combine(self, other: Objective, sign: float) -> Objective:
        a, b = self.fn, other.fn
        op = "+" if sign > 0 else "-"
        right = other._wrapped(_PRODUCT if sign < 0 else _SUM)
        return Objective(
            (lambda acts: a(acts) + b(acts)) if sign > 0 else (lambda acts: a(acts) - b(acts)),
            f"{self._wrapped(_SUM)} {op} {right}",
            self.layers | other.layers,
            _checks=self._checks + other._checks,
            _prec=_SUM,
        )

    def __add__(self, other):
        if isinstance(other, Objective):
            return self._combine(other, 1.0)
        if isinstance(other, numbers.Real) and other == 0:
            return self
        return NotImplemented

    def __radd__(self, other):  # sum([...]) starts from 0
        if isinstance(other, numbers.Real) and other == 0:
            return self
        return NotImplemented

    def __sub__(self, other):
        if isinstance(other, Objective):
            return self._combine(other, -1.0)
        return NotImplemented

    def __mul__(self, k):
        if not isinstance(k, numbers.Real) or isinstance(k, bool):
            return NotImplemented
        k = float(k)
        fn = self.fn
        return Objective(
            lambda acts: k * fn(acts),
            f"{k:g} * {self._wrapped(_PRODUCT + 1)}",
            self.layers,
            _checks=self._checks,
            _prec=_PRODUCT,
        )

    __rmul__ = __mul__

    def __truediv__(self, k):
        if not isinstance(k, numbers.Real) or isinstance(k, bool):
            return NotImplemented
        if k == 0:
            raise ZeroDivisionError(f"dividing objective {self.description} by zero")
        return self * (1.0 / float(k))

    def __neg__(self) -> Objective:
        fn = self.fn
        return Objective(
            lambda acts: -fn(acts),
            f"-{self._wrapped(_PRODUCT + 1)}",
            self.layers,
            _checks=self._checks,
            _prec=_PRODUCT,
        )
