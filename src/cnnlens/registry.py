"""The single list of attribution methods.

A method is a function ``fn(model, x, target, **params) -> MethodOutput`` that
is registered under a name with :func:`register`. The CLI choices, the report
labels, the docs tables and the registry-wide invariants test all read
:func:`list_methods`, so a method exists exactly when it is registered here.
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass
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

    @property
    def defaults(self) -> dict[str, Any]:
        """The method's own parameters and their default values, from its signature."""
        params = list(inspect.signature(self.fn).parameters.values())[3:]
        return {p.name: p.default for p in params}

    def __str__(self) -> str:
        return f"{self.name}: {self.summary}"


_REGISTRY: dict[str, MethodInfo] = {}


def register(
    name: str,
    summary: str,
    *,
    signed: bool = False,
    family: str = "other",
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``fn`` as attribution method ``name``.

    Args:
        name: the name users pass as ``method=``.
        summary: one line shown by ``cnnlens methods``.
        signed: whether the maps carry meaningful negative values.
        family: "perturbation", "gradient", "cam", ... (grouping in listings).

    The function's signature must be ``fn(model, x, target, *, **params)``: the
    keyword-only parameters after ``target`` are the method's parameters.
    """

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} is already registered")
        _REGISTRY[name] = MethodInfo(name, fn, summary, signed, family)
        return fn

    return deco


def _ensure_loaded() -> None:
    # Importing the attribution package runs every @register decorator.
    from . import attribution  # noqa: F401


def list_methods(pattern: str = "*") -> list[MethodInfo]:
    """Registered methods whose name matches the shell-style ``pattern``, sorted by name."""
    _ensure_loaded()
    return [info for name, info in sorted(_REGISTRY.items()) if fnmatch.fnmatch(name, pattern)]


def method_names() -> list[str]:
    """Just the names, in registry order (sorted)."""
    return [m.name for m in list_methods()]


def get_method(name: str) -> MethodInfo:
    """The method registered as ``name``; a :class:`MethodError` listing valid names otherwise."""
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise MethodError(
            f"unknown method {name!r}.{hint} Available: {', '.join(sorted(_REGISTRY))}"
        ) from None
