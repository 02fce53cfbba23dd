"""Model-parameter randomisation tests: does the map depend on what the model learned?

Adebayo et al. ("Sanity Checks for Saliency Maps", NeurIPS 2018, sec. 3)
re-initialise a trained network's weights and recompute the explanation. A
method whose maps barely change explains the input (edges, texture) rather
than the model: guided backprop famously survives randomisation of every layer
(their fig. 2) while the gradient does not. Two schedules:

* **cascading**: randomise the layers one after another from the top (logits)
  down, keeping the earlier ones randomised, so step ``k`` has the ``k`` top
  layers re-initialised;
* **independent**: randomise one layer at a time, every other layer trained.

At each step the method's maps on the randomised copy are compared with the
original maps by Spearman rank correlation (signed, and of absolute values)
and SSIM (:mod:`.similarity`). Row 0 compares against an *unrandomised* copy:
it is 1 for deterministic methods and shows the comparison works.

Layers are the modules that own parameters (convolutions, linear layers,
normalisation layers) in the order the forward pass first calls them, listed
top first; or any dotted names given (a block re-initialises everything in
it), sorted the same way. Re-initialisation calls each module's
``reset_parameters()`` (the initialisation it was built with; BatchNorm's also
resets its running statistics), or draws ``N(0, std(w)²)`` for a module
without one, under a seed derived from ``seed`` and the layer's position, so
the cascading and independent schedules use the same random weights for a
layer. Targets stay fixed to the original model's (top-1 by default) so each
step explains the same class. Randomisation happens on a deep copy: the
caller's model is never modified.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
from dataclasses import dataclass

import torch
from torch import nn

from ..core import progress
from ..core.hooks import attached, preserved
from ..core.names import resolve_layer
from ..methods import attribute, get_method
from ..models.base import LoadedModel
from .similarity import spearman, ssim

MODES = ("cascading", "independent")


def _owns_parameters(m: nn.Module) -> bool:
    return next(m.parameters(recurse=False), None) is not None


def forward_order(net: nn.Module, x: torch.Tensor, names: list[str]) -> list[str]:
    """``names`` sorted by when the forward pass on ``x`` first enters each module.

    Hooks go on a deep copy, scoped by :func:`~cnnlens.core.hooks.attached`.

    Args:
        net: the model (left untouched).
        x: ``(N, 3, H, W)`` input; only its first image runs.
        names: dotted module names inside ``net``.

    Returns:
        ``names`` in first-call order.

    Raises:
        ValueError: when some of ``names`` never run in the forward pass.
    """
    probe = copy.deepcopy(net)
    modules = dict(probe.named_modules())
    seen: list[str] = []

    def make(name: str):
        def hook(module, args):
            if name not in seen:
                seen.append(name)

        return hook

    pairs = ((modules[name], make(name)) for name in names)
    with attached(pairs, kind="forward_pre"), preserved(probe), torch.no_grad():
        probe(x[:1])
    missing = [n for n in names if n not in seen]
    if missing:
        raise ValueError(f"layers never run in the forward pass: {', '.join(missing)}")
    return seen


def parameter_layers(net: nn.Module, x: torch.Tensor) -> list[str]:
    """Modules owning parameters, top (output) first, in reverse forward-call order."""
    names = [n for n, m in net.named_modules() if n and _owns_parameters(m)]
    if not names:
        raise ValueError(f"{type(net).__name__} has no parameters to randomise")
    return forward_order(net, x, names)[::-1]


@torch.no_grad()
def randomise(module: nn.Module, seed: int) -> None:
    """Re-initialise every parameter inside ``module`` in place, reproducibly from ``seed``."""
    dev = next(module.parameters()).device
    devices = [dev.index] if dev.type == "cuda" else []  # CUDA parameters carry their index
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for m in module.modules():
            if not _owns_parameters(m):
                continue
            if callable(getattr(m, "reset_parameters", None)):
                m.reset_parameters()
                continue
            for p in m.parameters(recurse=False):
                std = float(p.std()) if p.numel() > 1 else 0.0
                p.normal_(0.0, std if std > 0 else 0.01)


@dataclass
class SanityResult:
    """Similarity of the maps of randomised models to the original maps.

    Shapes: ``S = len(steps)`` rows (row 0: an unrandomised copy; row ``k``:
    ``layers[k - 1]`` randomised, together with the layers above it when
    cascading), ``N`` images.

    Attributes:
        method, mode: the attribution method and ``"cascading"``/``"independent"``.
        layers: the randomised layers, top first.
        steps: ``["original", *layers]``, one label per row.
        spearman: ``(S, N)`` rank correlation of the signed maps.
        spearman_abs: ``(S, N)`` rank correlation of the absolute maps.
        ssim: ``(S, N)`` SSIM of the [0, 1]-scaled maps.
        targets: ``(N,)`` the class explained at every step.
        original: ``(N, H, W)`` maps of the original model.
        maps: ``(S, N, H, W)`` maps at every step when ``keep_maps``, else None.
    """

    method: str
    mode: str
    layers: list[str]
    steps: list[str]
    spearman: torch.Tensor
    spearman_abs: torch.Tensor
    ssim: torch.Tensor
    targets: torch.Tensor
    original: torch.Tensor
    maps: torch.Tensor | None = None

    def summary(self) -> dict[str, list[float | None]]:
        """Mean over images of each measure per step (NaNs skipped)."""

        def mean(t: torch.Tensor) -> list[float | None]:
            out = []
            for row in t.double():
                ok = row[~torch.isnan(row)]
                out.append(float(ok.mean()) if ok.numel() else None)
            return out

        return {
            "spearman": mean(self.spearman),
            "spearman_abs": mean(self.spearman_abs),
            "ssim": mean(self.ssim),
        }

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "mode": self.mode,
            "steps": self.steps,
            "n": int(self.targets.numel()),
            **self.summary(),
        }


def _rebind(params: dict, net: nn.Module, copy_net: nn.Module) -> dict:
    """Module-valued parameters (``layer=model.net.blocks[3]``) pointed at the copy."""
    out = {}
    for k, v in params.items():
        if isinstance(v, nn.Module):
            name, _ = resolve_layer(net, v)
            v = copy_net.get_submodule(name) if name else copy_net
        out[k] = v
    return out


def sanity_check(
    model,
    x: torch.Tensor,
    method: str = "gradient",
    target=None,
    *,
    mode: str = "cascading",
    layers: list[str] | None = None,
    seed: int = 0,
    keep_maps: bool = False,
    **method_params,
) -> SanityResult:
    """Parameter-randomisation sanity check of a saliency method (Adebayo et al. 2018).

    Args:
        model: a :class:`LoadedModel` or a bare ``nn.Module`` (left untouched).
        x: ``(N, 3, H, W)`` normalised images on the model's device.
        method: a registered method name.
        target: class per image (one each), fixed from the original model; default top-1.
        mode: ``"cascading"`` (top down, accumulating) or ``"independent"``.
        layers: dotted module names to randomise (default: every module that
            owns parameters); ordered top first by forward order.
        seed: seeds the re-initialisation, and the method too when it takes a ``seed``.
        keep_maps: also return the maps of every step (memory: ``S x N x H x W``).
        **method_params: the method's own parameters (``layer``, ``reduce``, ...).

    Returns:
        A :class:`SanityResult`; rows are steps, columns images.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    loaded = LoadedModel.wrap(model)
    net = loaded.net
    if "seed" in inspect.signature(get_method(method).fn).parameters:
        method_params["seed"] = seed
    if layers is None:
        names = parameter_layers(net, x)
    else:
        names = [resolve_layer(net, name)[0] for name in layers]
        if len(set(names)) != len(names) or "" in names:
            raise ValueError("layers must be distinct submodules of the model (not the model)")
        names = forward_order(net, x, names)[::-1]

    first = attribute(model, x, method=method, target=target, **method_params)
    if first.targets.shape[1] != 1:
        raise ValueError("sanity checks compare one map per image: give one target per image")
    targets = first.targets
    original = first.maps[:, 0].detach()

    work = copy.deepcopy(net)
    params = _rebind(method_params, net, work)
    wrapped = dataclasses.replace(loaded, net=work) if isinstance(model, LoadedModel) else work

    rows: list[torch.Tensor] = []

    def step() -> None:
        expl = attribute(wrapped, x, method=method, target=targets, **params)
        rows.append(expl.maps[:, 0].detach())

    with progress.task(f"sanity check ({mode})", len(names) + 1) as advance:
        step()
        advance(1)
        for i, name in enumerate(names):
            sub = work.get_submodule(name)
            saved = None if mode == "cascading" else copy.deepcopy(sub.state_dict())
            randomise(sub, seed * 1_000_003 + i)
            step()
            if saved is not None:
                sub.load_state_dict(saved)
            advance(1)

    maps = torch.stack(rows)  # (S, N, H, W)
    ref = original.expand_as(maps).flatten(0, 1)
    flat = maps.flatten(0, 1)
    s, n = maps.shape[:2]
    return SanityResult(
        method=method,
        mode=mode,
        layers=names,
        steps=["original", *names],
        spearman=spearman(ref, flat).view(s, n),
        spearman_abs=spearman(ref.abs(), flat.abs()).view(s, n),
        ssim=ssim(ref, flat).view(s, n),
        targets=targets[:, 0].clone(),
        original=original,
        maps=maps if keep_maps else None,
    )


class SanityCheck:
    """Accumulator of :func:`sanity_check` over batches: ``update(x, target)``, ``compute()``.

    The same seed re-creates the same random weights for every batch, so the
    result equals one call on all the images (up to batch-dependent methods).

    Args:
        model, method, mode, layers, seed, **method_params: as in :func:`sanity_check`.
    """

    def __init__(self, model, method: str = "gradient", **kwargs) -> None:
        if kwargs.get("keep_maps"):
            raise ValueError("keep_maps is for single calls; the accumulator keeps scores only")
        self.model, self.method, self.kwargs = model, method, kwargs
        self.reset()

    def reset(self) -> None:
        self._parts: list[SanityResult] = []

    def update(self, x: torch.Tensor, target=None) -> SanityCheck:
        self._parts.append(sanity_check(self.model, x, self.method, target, **self.kwargs))
        return self

    def compute(self) -> SanityResult:
        if not self._parts:
            raise ValueError("no images seen: call update(x) first")
        p = self._parts[0]
        return SanityResult(
            method=p.method,
            mode=p.mode,
            layers=p.layers,
            steps=p.steps,
            spearman=torch.cat([q.spearman for q in self._parts], 1),
            spearman_abs=torch.cat([q.spearman_abs for q in self._parts], 1),
            ssim=torch.cat([q.ssim for q in self._parts], 1),
            targets=torch.cat([q.targets for q in self._parts]),
            original=torch.cat([q.original for q in self._parts]),
        )


__all__ = [
    "MODES",
    "SanityCheck",
    "SanityResult",
    "forward_order",
    "parameter_layers",
    "randomise",
    "sanity_check",
]
