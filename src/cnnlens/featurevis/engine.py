"""Forward passes for feature visualisation: capture the layers objectives read, stop early.

When no objective reads the network output, the forward pass stops as soon as
every layer it needs has run: rendering a shallow unit then costs a fraction of
a full pass (about 45 % of it for ``blocks.1`` of the bundled model). The stop is
an exception raised by a forward hook, registered inside the same scope as
:func:`~cnnlens.core.hooks.capture` and removed in ``finally``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager

import torch
from torch import nn

from ..core.hooks import StopForward, capture, stop_after
from ..core.spatial import View, as_maps, layer_views
from .objectives import LOGITS, Activations


def views_for(net: nn.Module, layers: Sequence[str], input_shape) -> dict[str, View]:
    """:func:`cnnlens.core.spatial.layer_views` of the layers among ``layers`` (not logits)."""
    return layer_views(net, [n for n in dict.fromkeys(layers) if n != LOGITS], input_shape)


@contextmanager
def forward_fn(
    net: nn.Module,
    layers: Sequence[str],
    *,
    early_stop: bool = True,
    views: dict[str, View] | None = None,
) -> Iterator[Callable[[torch.Tensor], Activations]]:
    """Yield ``fwd(x) -> Activations`` recording ``layers`` (and ``"logits"`` if listed).

    Hooks live only inside the block. With ``early_stop`` and no ``"logits"``
    among ``layers``, the pass stops once every layer has run once. ``views``
    (:func:`cnnlens.core.spatial.layer_views`) turn each layer's output into
    ``(B, C, h, w)`` whatever its layout (channels-last, tokens).
    """
    names = [n for n in dict.fromkeys(layers) if n != LOGITS]
    need_logits = LOGITS in layers
    stop = early_stop and not need_logits and bool(names)

    with capture(net, names) as record, ExitStack() as stack:
        # registered after capture's hooks, so those run first
        reset = stack.enter_context(stop_after(net, names)) if stop else (lambda: None)

        def fwd(x: torch.Tensor) -> Activations:
            if not names and not need_logits:  # image regularisers only
                return Activations({})
            record.clear()
            reset()
            out = None
            try:
                out = net(x)
            except StopForward:
                pass
            acts = {n: record.activations[n] for n in names if n in record.activations}
            missing = [n for n in names if n not in acts]
            if missing:
                raise ValueError(f"layer(s) {', '.join(missing)} did not run in the forward pass")
            for n, a in acts.items():
                if not isinstance(a, torch.Tensor):
                    raise ValueError(f"layer {n!r} returns {type(a).__name__}, not a tensor")
            acts = as_maps(views or {}, acts)
            if need_logits:
                if not isinstance(out, torch.Tensor):
                    raise ValueError(
                        f"the model returns {type(out).__name__}; class objectives need a "
                        "(B, classes) tensor"
                    )
                acts[LOGITS] = out
            return Activations(acts)

        yield fwd


def probe(
    net: nn.Module, layers: Sequence[str], x: torch.Tensor, views: dict[str, View] | None = None
) -> tuple[dict[str, torch.Size], bool]:
    """Per-image output shapes of ``layers`` for input ``x`` (one full pass, no gradients).

    Returns:
        ``(shapes, reused)``: ``reused`` is true when a layer runs more than once per
        pass, early stopping's one blind spot (the last call's output is the one
        :func:`~cnnlens.core.hooks.capture` keeps, so the pass must run to the end).
    """
    names = [n for n in dict.fromkeys(layers) if n != LOGITS]
    with torch.no_grad(), capture(net, names) as record:
        out = net(x)
    raw = {n: record.activations[n] for n in names if n in record.activations}
    acts = as_maps(views or {}, raw)
    shapes = {n: a.shape[1:] for n, a in acts.items()}
    missing = [n for n in names if n not in shapes]
    if missing:
        raise ValueError(f"layer(s) {', '.join(missing)} did not run in the forward pass")
    if LOGITS in layers and isinstance(out, torch.Tensor):
        shapes[LOGITS] = out.shape[1:]
    reused = any(record.calls.get(n, 0) > 1 for n in names)
    return shapes, reused
