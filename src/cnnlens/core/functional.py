"""Activation functions called inside ``forward``, reached for one call only.

Many models apply activations as functions rather than modules: torchvision's
GoogLeNet and Inception (``F.relu(x, inplace=True)`` in ``BasicConv2d``),
DenseNet (``F.relu`` before its pooling), and a lot of user code (``x.relu()``,
``torch.sigmoid``). Forward hooks cannot see these calls. :func:`intercepted`
can: it enters a :class:`torch.overrides.TorchFunctionMode` for the duration of
a ``with`` block, so every torch function call made on this thread inside the
block is offered to a *handler* first. Outside the block nothing changes: no
torch global is replaced (``torch.nn.functional.relu`` stays the same object),
and the mode is popped on exit, exceptions included.

The calls offered (:func:`catalogue`) are the elementwise activation functions of
``torch``, ``torch.nn.functional`` and ``Tensor`` methods, with their in-place
variants (``kind="activation"``), and the operations that couple units:
softmax, normalisations and attention (``kind="norm"`` / ``"coupling"``). Every
other torch call runs untouched. A handler receives a :class:`Call` (with
``Call.behaviour()``, the probed family of the function with its arguments, see
:mod:`cnnlens.core.activations`) and returns a replacement result or ``None``
(run the call as written). In-place calls
(``F.relu(x, inplace=True)``, ``x.relu_()``) are offered with ``Call.fn``
computing out of place; :meth:`Call.finish` writes a replacement back into the
input, so code that relies on the mutation still sees it. ReLUs written as
``clamp`` or ``maximum`` are not activations here.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .activations import Behaviour, classify

ACTIVATION_NAMES = (
    "relu", "relu6", "hardtanh", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "mish",
    "hardswish", "hardsigmoid", "sigmoid", "tanh", "softplus", "softsign", "logsigmoid",
    "hardshrink", "softshrink", "tanhshrink", "threshold", "rrelu",
)  # fmt: skip
NORM_NAMES = ("layer_norm", "group_norm", "instance_norm", "local_response_norm", "rms_norm")
COUPLING_NAMES = ("softmax", "log_softmax", "softmin", "scaled_dot_product_attention", "glu")
_OWNERS = ((F, "F"), (torch, "torch"), (torch.Tensor, "Tensor"))
_TABLE: dict[Any, tuple[str, str]] = {}
_SIGNATURES: dict[Any, inspect.Signature | None] = {}


def catalogue() -> dict[Any, tuple[str, str]]:
    """``function object -> (qualified name, kind)`` for every call :func:`intercepted` offers."""
    if not _TABLE:
        for kind, names in (
            ("activation", ACTIVATION_NAMES),
            ("norm", NORM_NAMES),
            ("coupling", COUPLING_NAMES),
        ):
            for name in names:
                for owner, prefix in _OWNERS:
                    for variant in (name, name + "_"):
                        fn = getattr(owner, variant, None)
                        if callable(fn) and fn not in _TABLE:
                            _TABLE[fn] = (f"{prefix}.{variant}", kind)
    return _TABLE


def _signature(func) -> inspect.Signature | None:
    if func not in _SIGNATURES:
        try:
            _SIGNATURES[func] = inspect.signature(func)
        except (TypeError, ValueError):
            _SIGNATURES[func] = None  # builtins and Tensor methods have none
    return _SIGNATURES[func]


@dataclass
class Call:
    """One intercepted call: ``func(*args, **kwargs)`` with ``z = args[0]``.

    ``fn(t)`` is the same call on another tensor ``t``, out of place; ``inplace``
    says whether the model asked to overwrite ``z``; ``key`` identifies the
    function with its other arguments (``None`` when they are not hashable).
    """

    name: str
    kind: str
    func: Callable
    args: tuple
    kwargs: dict
    z: torch.Tensor
    fn: Callable[[torch.Tensor], torch.Tensor]
    inplace: bool
    key: Hashable | None
    cache: dict = field(default_factory=dict, repr=False)

    def behaviour(self) -> Behaviour | None:
        """What ``fn`` does (:func:`cnnlens.core.activations.classify`), probed once per
        function and arguments within one :func:`intercepted` block."""
        if self.key is None:
            return classify(self.fn)
        if self.key not in self.cache:
            self.cache[self.key] = classify(self.fn)
        return self.cache[self.key]

    def finish(self, result: torch.Tensor) -> torch.Tensor:
        """What the call returns when ``result`` replaces its output (written into
        ``z`` for an in-place call, which then returns ``z`` as torch does)."""
        if self.inplace:
            self.z.copy_(result)
            return self.z
        return result


def _call(func, name: str, kind: str, args: tuple, kwargs: dict, cache: dict) -> Call | None:
    z = args[0]
    rest, kw = args[1:], dict(kwargs)
    inplace = name.endswith("_")
    sig = None if inplace else _signature(func)
    if sig is not None and "inplace" in sig.parameters:
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError:
            return None
        inplace = bool(bound.arguments.get("inplace", False))
        bound.arguments["inplace"] = False
        rest, kw = bound.args[1:], bound.kwargs
    if inplace and name.endswith("_"):

        def fn(t):
            return func(t.clone(), *rest, **kw)
    else:

        def fn(t):
            return func(t, *rest, **kw)

    key = (func, rest, tuple(sorted(kw.items())))
    try:
        hash(key)
        if any(isinstance(a, torch.Tensor) for a in (*rest, *kw.values())):
            key = None
    except TypeError:
        key = None
    return Call(name, kind, func, args, kwargs, z, fn, inplace, key, cache)


Handler = Callable[[Call], "torch.Tensor | None"]


class Interceptor(TorchFunctionMode):
    """The mode :func:`intercepted` enters; :meth:`paused` lets calls through untouched."""

    def __init__(self, handler: Handler):
        super().__init__()
        self.handler = handler
        self.pause_depth = 0
        self.cache: dict = {}

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Within the block, calls run as written (for code that evaluates an
        activation itself, such as a derivative, while the mode is on)."""
        self.pause_depth += 1
        try:
            yield
        finally:
            self.pause_depth -= 1

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self.pause_depth and args and isinstance(args[0], torch.Tensor):
            try:
                entry = _TABLE.get(func)
            except TypeError:  # an unhashable callable
                entry = None
            if entry is not None:
                call = _call(func, *entry, args, kwargs, self.cache)
                out = None if call is None else self.handler(call)
                if out is not None:
                    return out
        return func(*args, **kwargs)


@contextmanager
def intercepted(handler: Handler) -> Iterator[Interceptor]:
    """Offer the activation, norm and coupling calls made inside the block to ``handler``.

    Args:
        handler: ``handler(call) -> tensor or None``. It runs with the mode off, so
            torch calls it makes are not offered again. An exception it raises
            propagates out of the model's forward and the block.

    Yields:
        The :class:`Interceptor` (for :meth:`Interceptor.paused`). It is active on
        this thread only, and popped on exit, exceptions included.
    """
    catalogue()
    mode = Interceptor(handler)
    with mode:
        yield mode


def calling_module(names: dict[int, str]) -> str | None:
    """Dotted name of the innermost module (``names``: ``id(module) -> name``)
    whose ``forward`` is on the current call stack, or None."""
    frame = sys._getframe(1)
    while frame is not None:
        owner = frame.f_locals.get("self")
        if owner is not None and id(owner) in names:
            return names[id(owner)]
        frame = frame.f_back
    return None


__all__ = [
    "ACTIVATION_NAMES",
    "COUPLING_NAMES",
    "NORM_NAMES",
    "Call",
    "Interceptor",
    "calling_module",
    "catalogue",
    "intercepted",
]
