"""Scoped hooks and model-state preservation.

Every hook cnnlens places on a model goes through :func:`attached`, which
removes all of them in ``finally``, including those attached before a failure
half-way through attaching. :func:`capture`, :func:`stop_after`, layer tracing
and the modified-backward methods are built on it. :func:`preserved` restores
each module's training flag and each parameter's ``requires_grad`` on exit,
exceptions included. A model leaves every cnnlens call exactly as it came.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from .names import resolve_layer

KINDS = ("forward", "forward_pre", "full_backward", "full_backward_pre")


@contextmanager
def attached(hooks: Iterable[tuple], *, kind: str = "forward") -> Iterator[None]:
    """Attach hooks to modules for the block; remove every one of them in ``finally``.

    Each hook is registered with the module's own ``register_<kind>_hook`` method,
    and the handles are removed in reverse order.

    Args:
        hooks: ``(module, fn)`` pairs, or ``(module, fn, kind)`` triples to mix kinds.
            It may be a generator: it is consumed inside the ``try``, so when it (or
            a registration) raises half-way, the hooks already attached are removed
            and the exception propagates.
        kind: ``"forward"`` (default), ``"forward_pre"``, ``"full_backward"`` or
            ``"full_backward_pre"``, for pairs that do not name their own.

    Raises:
        ValueError: for a kind not in :data:`KINDS`.
    """
    handles = []
    try:
        for item in hooks:
            module, fn, which = item if len(item) == 3 else (*item, kind)
            if which not in KINDS:
                raise ValueError(f"hook kind must be one of {', '.join(KINDS)}, got {which!r}")
            handles.append(getattr(module, f"register_{which}_hook")(fn))
        yield
    finally:
        for h in reversed(handles):
            h.remove()


@contextmanager
def out_of_place(modules) -> Iterator[None]:
    """Within the block, every module of ``modules`` with an ``inplace`` flag runs out of place.

    Modified backward passes wrap a module's output in their own autograd
    function, which an in-place activation would overwrite. The flags are
    restored on exit, exceptions included.
    """
    flagged = [(m, m.inplace) for m in modules if isinstance(getattr(m, "inplace", None), bool)]
    try:
        for m, _ in flagged:
            m.inplace = False
        yield
    finally:
        for m, flag in flagged:
            m.inplace = flag


@contextmanager
def preserved(
    net: nn.Module, *, eval_mode: bool = True, freeze: bool = True
) -> Iterator[nn.Module]:
    """Run a block with ``net`` in eval mode and frozen parameters, then restore both.

    Args:
        net: the model.
        eval_mode: switch every module to eval inside the block.
        freeze: set ``requires_grad=False`` on every parameter inside the block,
            so backward passes compute only what an explanation needs.
    """
    modes = [(m, m.training) for m in net.modules()]
    flags = [(p, p.requires_grad) for p in net.parameters()]
    try:
        if eval_mode:
            net.eval()
        if freeze:
            for p, _ in flags:
                p.requires_grad_(False)
        yield net
    finally:
        for m, training in modes:
            m.training = training
        for p, flag in flags:
            p.requires_grad_(flag)


@dataclass
class Captured:
    """What :func:`capture` recorded for one forward pass.

    ``activations[name]`` is the layer's output. With ``gradients=True`` it is a
    leaf tensor that requires grad: the graph below the layer is cut, so a
    backward pass from the output stops there and ``torch.autograd.grad(score,
    activations[name])`` gives the layer gradient cheaply. ``inputs[name]`` is
    the (first) positional input of the layer. When a module runs several times
    in one forward pass the last call is kept and ``calls[name]`` counts them.
    """

    activations: dict[str, torch.Tensor] = field(default_factory=dict)
    inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    def clear(self) -> None:
        self.activations.clear()
        self.inputs.clear()
        self.calls.clear()


@contextmanager
def capture(
    net: nn.Module,
    layers: Sequence[str | nn.Module],
    *,
    gradients: bool = False,
    record_inputs: bool = False,
) -> Iterator[Captured]:
    """Record the outputs (and optionally inputs) of ``layers`` during forward passes.

    Args:
        net: the model.
        layers: dotted names or modules inside ``net``.
        gradients: make each captured output a leaf that requires grad (see
            :class:`Captured`). Either way what runs after the layer sees a
            copy, so in-place operations downstream cannot change the captured
            values.
        record_inputs: also keep each layer's first positional input.

    Yields:
        A :class:`Captured` filled by every forward pass run inside the block.
    """
    record = Captured()

    def make_hook(name: str):
        def hook(module, args, output):
            record.calls[name] = record.calls.get(name, 0) + 1
            if record_inputs and args:
                record.inputs[name] = args[0]
            if not isinstance(output, torch.Tensor):
                record.activations[name] = output
                return None
            if gradients:
                leaf = output.detach().requires_grad_(True)
                record.activations[name] = leaf
                return leaf.clone()
            # Downstream modules get a copy, so an in-place op after the layer
            # (BatchNorm -> ReLU(inplace=True)) cannot change what was recorded.
            record.activations[name] = output
            return output.clone()

        return hook

    def pairs():
        for layer in layers:
            name, module = resolve_layer(net, layer)
            yield module, make_hook(name)

    with attached(pairs()):
        yield record


class StopForward(Exception):
    """Raised by :func:`stop_after`'s hooks once every watched layer has run."""


@contextmanager
def stop_after(net: nn.Module, layers: Sequence[str | nn.Module]) -> Iterator[Callable[[], None]]:
    """Inside the block, a forward pass of ``net`` raises :class:`StopForward` as soon as
    every one of ``layers`` has run once, so the rest of the network is skipped.

    Register it after :func:`capture` for the same layers, so the recording hooks run
    first. Yields ``reset()``, to call before each pass. The hooks are removed in
    ``finally``.
    """
    modules = [resolve_layer(net, layer)[1] for layer in layers]
    seen: set[int] = set()

    def make(i: int):
        def hook(module, args, output):
            seen.add(i)
            if len(seen) == len(modules):
                raise StopForward

        return hook

    with attached((m, make(i)) for i, m in enumerate(modules)):
        yield seen.clear


def hook_count(net: nn.Module) -> int:
    """Number of hooks of any kind currently registered on ``net``'s modules (for tests)."""
    total = 0
    for m in net.modules():
        for attr in (
            "_forward_hooks",
            "_forward_pre_hooks",
            "_backward_hooks",
            "_backward_pre_hooks",
            "_state_dict_hooks",
            "_load_state_dict_pre_hooks",
        ):
            total += len(getattr(m, attr, {}) or {})
    return total
