"""Deletion and insertion curves: does removing the most salient pixels first kill the score?

Petsiuk, Das & Saenko ("RISE: Randomized Input Sampling for Explanation of
Black-box Models", BMVC 2018, sec. 4.1) rank the pixels of an image ``x`` by
decreasing saliency and move them, ``step`` at a time, between ``x`` and a
substrate image ``x~`` that carries no evidence:

* **deletion** starts from ``x`` and replaces the top pixels by ``x~``; a good
  map makes the target score ``s_c`` drop fast, so the area under the curve
  is *small*;
* **insertion** starts from ``x~`` and puts the top pixels of ``x`` back; a
  good map makes the score rise fast, so the area is *large*.

With ``P = H W`` pixels and ``n_k = min(k · step, P)`` moved after ``k`` steps
(``k = 0 .. ceil(P / step)``), the curve is ``s_c(x_k)`` against the fraction
``f_k = n_k / P``, and the score is its area by the trapezoid rule,

    AUC = Σ_k (f_{k+1} - f_k) (s_c(x_k) + s_c(x_{k+1})) / 2,

exact in the fractions even when the last step is shorter. The score is the
softmax probability of the target (``score="prob"``, the paper's) or its logit.

Substrates: ``"zero"`` sets pixels to 0 in the model's *normalised* input
space, i.e. to the dataset's mean colour (a flat grey for ImageNet
statistics); ``"blur"`` uses a Gaussian-blurred copy of the image (σ = 5 px,
reflect padding), which removes detail but keeps colour and layout. The paper
deletes towards zeros and inserts from the blurred image; those are the
defaults (``substrate=None``). A tensor of the input's shape may be given as a
custom substrate.

The default ``step`` is ``ceil(P / 56)`` pixels (56 steps, 57 forward passes
per image); the paper moved 224 pixels per step at 224 x 224 (224 steps):
pass ``step=224`` to reproduce it at four times the cost. Ties in the
saliency order are broken by raster order (a stable sort), so curves are
deterministic. The images of all steps are built on the fly and scored in
batches of ``batch_size``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..core import progress
from ..core.batching import FastNet, batch_size_for, score_batches
from ..core.explanation import Explanation
from ..core.hooks import preserved
from ..core.targets import needs_logits, resolve_targets
from ..core.tensors import check_batch_size, gaussian_blur, upsample
from ..models.base import LoadedModel
from .common import as_maps, json_float

MODES = ("deletion", "insertion")
SUBSTRATES = ("zero", "blur")
DEFAULT_STEPS = 56


@dataclass
class DeletionResult:
    """Deletion or insertion curves and their areas.

    Attributes:
        mode: ``"deletion"`` (lower AUC is better) or ``"insertion"`` (higher is better).
        substrate: ``"zero"``, ``"blur"`` or ``"custom"``.
        score: ``"prob"`` or ``"logit"``.
        fractions: ``(S + 1,)`` fraction of pixels moved at each step, 0 to 1.
        curves: ``(N, S + 1)`` target score at each step.
        auc: ``(N,)`` trapezoid area under each curve.
        targets: ``(N,)`` the class scored for each image.
        n: images; ``mean`` and ``sem``: mean AUC and its standard error.
    """

    mode: str
    substrate: str
    score: str
    fractions: torch.Tensor
    curves: torch.Tensor
    auc: torch.Tensor
    targets: torch.Tensor
    n: int
    mean: float
    sem: float

    @classmethod
    def of(cls, mode, substrate, score, fractions, curves, targets) -> DeletionResult:
        auc = trapezoid_auc(curves, fractions)
        n = int(auc.numel())
        a = auc.double()
        mean = float(a.mean()) if n else math.nan
        sem = float(a.std(unbiased=True) / math.sqrt(n)) if n > 1 else math.nan
        return cls(mode, substrate, score, fractions, curves, auc, targets, n, mean, sem)

    def to_dict(self) -> dict:
        return {
            "mode": self.mode,
            "substrate": self.substrate,
            "score": self.score,
            "n": self.n,
            "mean": json_float(self.mean),
            "sem": json_float(self.sem),
            "fractions": self.fractions.tolist(),
            "mean_curve": self.curves.double().mean(0).tolist() if self.n else [],
        }


def trapezoid_auc(curves: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
    """Area under ``(N, S + 1)`` curves sampled at ``(S + 1,)`` fractions (trapezoid rule)."""
    c = curves.double()
    f = fractions.double().to(c.device)
    area = ((f[1:] - f[:-1]) * (c[:, 1:] + c[:, :-1]) / 2).sum(1)
    return area.to(curves.dtype)


def step_counts(pixels: int, step: int | None) -> list[int]:
    """Pixels moved after each step: ``0, step, 2 step, ..., pixels``."""
    if step is None:
        step = math.ceil(pixels / DEFAULT_STEPS)
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ValueError(f"step must be a positive number of pixels or None, got {step!r}")
    return list(range(0, pixels, step)) + [pixels]


def _substrate(x: torch.Tensor, substrate, mode: str, sigma: float) -> tuple[torch.Tensor, str]:
    if substrate is None:
        substrate = "zero" if mode == "deletion" else "blur"
    if isinstance(substrate, torch.Tensor):
        if substrate.shape != x.shape:
            raise ValueError(
                f"a substrate tensor must match x {tuple(x.shape)}, got {tuple(substrate.shape)}"
            )
        return substrate.to(x), "custom"
    if substrate == "zero":
        return torch.zeros_like(x), substrate
    if substrate == "blur":
        return gaussian_blur(x, sigma), substrate
    raise ValueError(
        f"substrate must be one of {', '.join(SUBSTRATES)} or a tensor, got {substrate!r}"
    )


def _targets(model: LoadedModel, x: torch.Tensor, maps, target) -> torch.Tensor:
    if isinstance(maps, Explanation) and target is None:
        t = maps.targets
    elif isinstance(target, torch.Tensor) and target.dim() == 2:
        t = target
    else:
        logits = None
        if needs_logits(target):
            with preserved(model.net), torch.no_grad():
                logits = model.net(x).float()
        t = resolve_targets(target, x.shape[0], logits)
    if t.shape != (x.shape[0], 1):
        raise ValueError(f"give one target per image, got targets of shape {tuple(t.shape)}")
    return t[:, 0].to(device=x.device, dtype=torch.long)


def deletion_auc(
    model,
    x: torch.Tensor | None,
    maps,
    target=None,
    *,
    mode: str = "deletion",
    substrate: str | torch.Tensor | None = None,
    step: int | None = None,
    sigma: float = 5.0,
    score: str = "prob",
    batch_size: int | None = None,
) -> DeletionResult:
    """Deletion (or insertion) curves of saliency maps and their areas (Petsiuk et al. 2018).

    Args:
        model: a :class:`LoadedModel` or a bare ``nn.Module``.
        x: ``(N, 3, H, W)`` normalised images; may be None when ``maps`` is an
            Explanation that kept its inputs.
        maps: ``(N, H, W)`` maps (or ``(N, 1, H, W)``, or an Explanation), larger =
            more salient; resized bilinearly to ``x`` if their size differs.
        target: the class of each map (any :mod:`cnnlens.core.targets` form, one per
            image); taken from the Explanation when one is given; default top-1.
        mode: ``"deletion"`` or ``"insertion"``.
        substrate: ``"zero"`` (the dataset mean), ``"blur"``, a tensor like ``x``,
            or None for the paper's choice (zero for deletion, blur for insertion).
        step: pixels moved per step (default ``ceil(H W / 56)``).
        sigma: blur σ in pixels for the ``"blur"`` substrate.
        score: ``"prob"`` (softmax probability, default) or ``"logit"``.
        batch_size: images per forward pass (default: a memory-aware size).

    Returns:
        A :class:`DeletionResult`, tensors on ``x``'s device.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if score not in ("prob", "logit"):
        raise ValueError(f"score must be 'prob' or 'logit', got {score!r}")
    check_batch_size(batch_size)
    model = LoadedModel.wrap(model)
    if x is None:
        if not isinstance(maps, Explanation) or maps.inputs is None:
            raise ValueError("pass the images x: the maps do not carry their inputs")
        x = maps.inputs
    x = x.detach()
    n, _, h, w = x.shape
    targets = _targets(model, x, maps, target)
    sal = as_maps(maps).to(x.device)
    if sal.shape[0] != n:
        raise ValueError(f"maps must have one map per image ({n}), got {sal.shape[0]}")
    sal = upsample(sal.unsqueeze(1), (h, w))[:, 0]
    counts = step_counts(h * w, step)
    fractions = torch.tensor(counts, dtype=torch.float32, device=x.device) / (h * w)
    base, sub_name = _substrate(x, substrate, mode, sigma)
    start, end = (x, base) if mode == "deletion" else (base, x)

    order = sal.flatten(1).argsort(dim=1, descending=True, stable=True)
    positions = torch.arange(h * w, device=x.device).expand(n, -1)
    rank = torch.empty_like(order).scatter_(1, order, positions).view(n, h, w)
    moved = torch.tensor(counts, device=x.device)
    s = len(counts)

    def make(rows: slice) -> torch.Tensor:
        """The images of rows ``image * s + step``: ``moved[step]`` top pixels moved."""
        idx = torch.arange(rows.start, rows.stop, device=x.device)
        img, k = idx // s, idx % s
        taken = (rank[img] < moved[k].view(-1, 1, 1)).unsqueeze(1)
        return torch.where(taken, end[img], start[img])

    per_row = targets.repeat_interleave(s).unsqueeze(1)  # (N * S, 1), image-major
    with preserved(model.net), torch.no_grad():
        fast = FastNet.of(model.net, x)
        with progress.task(f"{mode} curves", n * s) as advance:
            out = score_batches(fast, make, per_row, score, batch_size_for(x, batch_size), advance)
    curves = out.view(n, s)
    return DeletionResult.of(mode, sub_name, score, fractions, curves, targets)


def insertion_auc(model, x: torch.Tensor | None, maps, target=None, **kwargs) -> DeletionResult:
    """Insertion curves and areas: :func:`deletion_auc` with ``mode="insertion"``."""
    return deletion_auc(model, x, maps, target, mode="insertion", **kwargs)


class DeletionAUC:
    """Accumulator of deletion/insertion curves: ``update(x, maps, target)``, ``compute()``.

    Args:
        model: a :class:`LoadedModel` or a bare ``nn.Module``.
        **kwargs: ``mode``, ``substrate``, ``step``, ``sigma``, ``score``,
            ``batch_size`` as in :func:`deletion_auc` (a substrate tensor is not
            accepted here: it would have to match every batch).
    """

    def __init__(self, model, **kwargs) -> None:
        if isinstance(kwargs.get("substrate"), torch.Tensor):
            raise ValueError("give a substrate tensor to deletion_auc, batch by batch")
        self.model, self.kwargs = model, kwargs
        self.reset()

    def reset(self) -> None:
        self._parts: list[DeletionResult] = []

    def update(self, x: torch.Tensor | None, maps, target=None) -> DeletionAUC:
        part = deletion_auc(self.model, x, maps, target, **self.kwargs)
        if self._parts and not torch.equal(part.fractions, self._parts[0].fractions):
            raise ValueError("batches give different step fractions: use one image size and step")
        self._parts.append(part)
        return self

    def compute(self) -> DeletionResult:
        if not self._parts:
            raise ValueError("no images seen: call update(x, maps) first")
        first = self._parts[0]
        curves = torch.cat([p.curves for p in self._parts])
        targets = torch.cat([p.targets for p in self._parts])
        return DeletionResult.of(
            first.mode, first.substrate, first.score, first.fractions, curves, targets
        )


__all__ = [
    "DeletionAUC",
    "DeletionResult",
    "deletion_auc",
    "insertion_auc",
    "step_counts",
    "trapezoid_auc",
]
