"""The registry of attribution methods: where each method records itself.

A method is a function ``fn(model, x, target, **params) -> MethodOutput`` that
is registered under a name (and optional aliases) with :func:`register`. This
module imports no method: :func:`registered` and :func:`lookup` see only the
modules imported so far. :mod:`cnnlens.methods` imports every method module and
is what the CLI choices, the report labels, the docs tables and the
registry-wide invariants test read (``cnnlens.methods.list_methods``), so a
method exists exactly when it is registered and imported there.
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from .errors import MethodError


@dataclass(frozen=True)
class MethodInfo:
    """A registered method: its callable and what the rest of the toolkit needs to know."""

    name: str
    fn: Callable[..., Any]
    summary: str
    signed: bool = False
    family: str = "other"
    targets: str = "any"
    targets_reason: str = ""

    @property
    def defaults(self) -> dict[str, Any]:
        """The method's own parameters and their default values, from its signature."""
        params = list(inspect.signature(self.fn).parameters.values())[3:]
        return {p.name: p.default for p in params}

    def __str__(self) -> str:
        return f"{self.name}: {self.summary}"


_REGISTRY: dict[str, MethodInfo] = {}
_ALIASES: dict[str, str] = {}

#: What a method can explain: ``"any"`` differentiable scalar per image (a class logit or
#: probability, a sigmoid, a regression output, an embedding similarity, a segmentation
#: region, a detection score: :mod:`cnnlens.targets`), or only ``"output"``: one raw output
#: unit of the model (a class logit or a regression output), because its maths reads the
#: weights of the layer that produces that unit (CAM, excitation backprop).
TARGET_KINDS = ("any", "output")


def register(
    name: str,
    summary: str,
    *,
    signed: bool = False,
    family: str = "other",
    aliases: tuple[str, ...] = (),
    targets: str = "any",
    targets_reason: str = "",
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``fn`` as attribution method ``name``.

    Args:
        name: the name users pass as ``method=``.
        summary: one line shown by ``cnnlens methods``.
        signed: whether the maps carry meaningful negative values.
        family: "perturbation", "gradient", "cam", ... (grouping in listings).
        aliases: older names that keep working everywhere a name is accepted;
            listings show only ``name``.
        targets: ``"any"`` (default) or ``"output"`` (see :data:`TARGET_KINDS`).
        targets_reason: for ``"output"``, why the method needs a raw output unit (one
            clause, shown when another target is refused).

    The function's signature must be ``fn(model, x, target, *, **params)``: the
    keyword-only parameters after ``target`` are the method's parameters.
    """

    _check_targets(targets)

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        for key in (name, *aliases):
            if key in _REGISTRY or key in _ALIASES:
                raise ValueError(f"method {key!r} is already registered")
        _REGISTRY[name] = MethodInfo(name, fn, summary, signed, family, targets, targets_reason)
        _ALIASES.update(dict.fromkeys(aliases, name))
        return fn

    return deco


def _check_targets(targets: str) -> None:
    if targets not in TARGET_KINDS:
        raise ValueError(f"targets must be one of {', '.join(TARGET_KINDS)}, got {targets!r}")


def declare_targets(name: str, targets: str, reason: str = "") -> None:
    """Set what registered method ``name`` can explain after its registration.

    For registrations that do not pass ``targets=`` themselves (see :func:`register`).
    """
    _check_targets(targets)
    info = lookup(name)
    _REGISTRY[info.name] = replace(info, targets=targets, targets_reason=reason)


def registered(pattern: str = "*") -> list[MethodInfo]:
    """Methods registered so far whose name matches ``pattern``, sorted by name.

    Only what has been imported is here; :mod:`cnnlens.methods` imports every
    method module and is what callers use (``cl.list_methods``).
    """
    return [info for name, info in sorted(_REGISTRY.items()) if fnmatch.fnmatch(name, pattern)]


def lookup(name: str) -> MethodInfo:
    """The method registered as ``name`` or under the alias ``name``.

    Raises:
        MethodError: no such method; the message lists the closest names and all of them.
    """
    name = _ALIASES.get(name, name)
    try:
        return _REGISTRY[name]
    except KeyError:
        import difflib

        known = sorted(_REGISTRY) + sorted(_ALIASES)
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise MethodError(
            f"unknown method {name!r}.{hint} Available: {', '.join(sorted(_REGISTRY))}"
        ) from None
