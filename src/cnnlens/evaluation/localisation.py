"""Weak localisation: turn a saliency map into a box and compare it with the object's boxes.

Fong & Vedaldi ("Interpretable Explanations of Black Boxes by Meaningful
Perturbation", ICCV 2017, sec. 5.6, after Simonyan et al. 2014 and Zhang et al.
2016) measure how well a map localises the object of its class without any
box supervision. Each map ``S`` is thresholded and the tightest axis-aligned box
around *all* the selected pixels is the prediction (no connected-component
step: the simple rule of the paper, which also penalises maps that scatter
their evidence). With ``S+ = max(S, 0)`` (localisation reads positive
evidence only) the three thresholding rules are:

* ``"value"``:  select ``S+(u) >= α · max S+``;
* ``"mean"``:   select ``S+(u) >= α · mean S+``;
* ``"energy"``: the smallest set of highest pixels holding a fraction ``α`` of
  the positive mass ``Σ S+``: sort pixels by decreasing ``S+``, take the first
  ``k`` with ``Σ_{i<=k} S+_i >= α Σ S+`` (``k >= 1``, positive pixels only), and
  select every pixel ``>= S+_k`` so tied pixels are all in or all out.

A map with no positive evidence selects every pixel (the whole image: the
uninformed guess); a threshold that selects nothing gives no box, which counts
as a miss. The localisation **error** is the fraction of images whose box has
IoU below 0.5 with every ground-truth box of the class.

The threshold ``α`` is a free parameter: :func:`choose_alpha` picks the one with
the lowest error on a held-out split, which is then applied on the test split
with :func:`weak_localisation`. Boxes are ``(x0, y0, x1, y1)`` in pixels of the
maps, end exclusive.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..core.boxes import tightest_boxes
from .common import as_maps, json_float

KINDS = ("value", "energy", "mean")


def default_alphas(kind: str) -> list[float]:
    """The α grid searched by default: 0, 0.05, ..., 1 (value, energy); 0, 0.5, ..., 10 (mean)."""
    check_kind(kind)
    if kind == "mean":
        return [round(0.5 * i, 2) for i in range(21)]
    return [round(0.05 * i, 2) for i in range(21)]


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")


def threshold_maps(maps: torch.Tensor, alpha: float, kind: str = "energy") -> torch.Tensor:
    """The pixels each rule selects: ``(N, H, W)`` bool (see the module docstring)."""
    check_kind(kind)
    if alpha < 0 or (kind == "energy" and alpha > 1):
        limit = "[0, 1]" if kind == "energy" else ">= 0"
        raise ValueError(f"alpha for {kind} thresholding must be {limit}, got {alpha}")
    pos = maps.detach().float().clamp_min(0)
    flat = pos.flatten(1)
    if kind == "value":
        cut = alpha * flat.amax(1)
    elif kind == "mean":
        cut = alpha * flat.mean(1)
    else:
        ordered = flat.sort(dim=1, descending=True).values
        mass = ordered.double().cumsum(1)
        goal = (alpha * mass[:, -1]).unsqueeze(1)
        # First index with mass >= goal: a positive pixel, as the zeros add no mass.
        k = torch.searchsorted(mass, goal).squeeze(1)
        npos = (flat > 0).sum(1)
        cut = torch.where(npos > 0, ordered.gather(1, k.unsqueeze(1)).squeeze(1), 0.0)
    return pos >= cut.view(-1, 1, 1)


def selection_boxes(selected: torch.Tensor) -> torch.Tensor:
    """Tightest box around each ``(N, H, W)`` selection: ``(N, 4)`` long, ``-1`` where empty."""
    return tightest_boxes(selected.float(), [0.5])[:, 0]


def box_iou(boxes: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """IoU of ``(N, 4)`` boxes with ``(N, K, 4)`` boxes, end exclusive: ``(N, K)``.

    A missing box (``x0 < 0``) has IoU 0 with everything.
    """
    b = boxes.float().unsqueeze(1)
    g = gt.float()
    iw = (torch.minimum(b[..., 2], g[..., 2]) - torch.maximum(b[..., 0], g[..., 0])).clamp_min(0)
    ih = (torch.minimum(b[..., 3], g[..., 3]) - torch.maximum(b[..., 1], g[..., 1])).clamp_min(0)
    inter = iw * ih
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    area_g = (g[..., 2] - g[..., 0]) * (g[..., 3] - g[..., 1])
    iou = inter / (area_b + area_g - inter).clamp_min(1e-12)
    return torch.where(b[..., 0] >= 0, iou, torch.zeros_like(iou))


def as_gt_boxes(boxes, n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image lists of boxes -> padded ``(N, K, 4)`` tensor and ``(N, K)`` validity."""
    if isinstance(boxes, torch.Tensor) and boxes.dim() == 2:
        boxes = boxes.unsqueeze(1)
    if isinstance(boxes, torch.Tensor):
        rows = list(boxes)
    else:
        rows = [torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4) for b in boxes]
    if len(rows) != n:
        raise ValueError(f"give one list of boxes per image ({n}), got {len(rows)}")
    k = max(1, max(r.shape[0] for r in rows))
    out = torch.zeros(n, k, 4)
    valid = torch.zeros(n, k, dtype=torch.bool)
    for i, r in enumerate(rows):
        if r.shape[0] == 0:
            raise ValueError(f"image {i} has no ground-truth box")
        r = r.detach().float().cpu()
        if ((r[:, 2] <= r[:, 0]) | (r[:, 3] <= r[:, 1])).any():
            raise ValueError(f"image {i}: boxes must be (x0, y0, x1, y1) with x1 > x0, y1 > y0")
        out[i, : r.shape[0]] = r
        valid[i, : r.shape[0]] = True
    return out.to(device), valid.to(device)


def best_iou(maps, gt_boxes, alpha: float, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Each map's box at ``alpha`` and its best IoU with the image's boxes: ``(N, 4)``, ``(N,)``."""
    maps = as_maps(maps)
    gt, valid = as_gt_boxes(gt_boxes, maps.shape[0], maps.device)
    boxes = selection_boxes(threshold_maps(maps, alpha, kind))
    iou = box_iou(boxes, gt).masked_fill(~valid, 0.0)
    return boxes, iou.amax(1)


@dataclass
class LocalisationResult:
    """Weak-localisation error at one threshold.

    Attributes:
        kind, alpha: the thresholding rule and its parameter.
        n: images scored.
        errors: images whose box has IoU < ``iou_threshold`` with every ground-truth box.
        error: ``errors / n`` (NaN when ``n = 0``).
        boxes: ``(N, 4)`` predicted boxes (``-1`` where nothing was selected).
        iou: ``(N,)`` best IoU of each predicted box.
    """

    kind: str
    alpha: float
    n: int
    errors: int
    error: float
    boxes: torch.Tensor
    iou: torch.Tensor
    iou_threshold: float = 0.5

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "alpha": self.alpha,
            "n": self.n,
            "errors": self.errors,
            "error": json_float(self.error),
            "iou_threshold": self.iou_threshold,
        }


class WeakLocalisation:
    """Accumulator of the weak-localisation error: ``update(maps, boxes)``, ``compute()``.

    Args:
        alpha: the threshold, chosen on held-out data (see :func:`choose_alpha`).
        kind: ``"value"``, ``"energy"`` or ``"mean"``.
        iou_threshold: a box localises the object when its IoU reaches this (0.5).
    """

    def __init__(self, alpha: float, kind: str = "energy", iou_threshold: float = 0.5) -> None:
        check_kind(kind)
        self.alpha, self.kind, self.iou_threshold = float(alpha), kind, iou_threshold
        self.reset()

    def reset(self) -> None:
        self._boxes, self._iou = [], []

    def update(self, maps, boxes) -> WeakLocalisation:
        """Args: ``maps (N, H, W)``; ``boxes`` one list of ``(x0, y0, x1, y1)`` per image."""
        b, iou = best_iou(maps, boxes, self.alpha, self.kind)
        self._boxes.append(b)
        self._iou.append(iou)
        return self

    def compute(self) -> LocalisationResult:
        boxes = torch.cat(self._boxes) if self._boxes else torch.zeros(0, 4, dtype=torch.long)
        iou = torch.cat(self._iou) if self._iou else torch.zeros(0)
        n = int(iou.numel())
        errors = int((iou < self.iou_threshold).sum())
        error = errors / n if n else math.nan
        return LocalisationResult(
            self.kind, self.alpha, n, errors, error, boxes, iou, self.iou_threshold
        )


def weak_localisation(
    maps, boxes, alpha: float, kind: str = "energy", iou_threshold: float = 0.5
) -> LocalisationResult:
    """Weak-localisation error of saliency maps at threshold ``alpha``.

    Args:
        maps: ``(N, H, W)`` saliency maps (or ``(N, 1, H, W)``, or an Explanation).
        boxes: per image, a list of ground-truth ``(x0, y0, x1, y1)`` boxes of
            the map's class in the maps' pixels (or an ``(N, 4)``/``(N, K, 4)`` tensor).
        alpha: the threshold parameter; ``kind``: ``"value"``, ``"energy"``, ``"mean"``.
        iou_threshold: IoU needed for a correct box (0.5).

    Returns:
        A :class:`LocalisationResult`.
    """
    return WeakLocalisation(alpha, kind, iou_threshold).update(maps, boxes).compute()


@dataclass
class AlphaChoice:
    """The threshold with the lowest localisation error on held-out data.

    Attributes:
        kind: thresholding rule.
        alpha: the chosen α (the first of the grid among equal errors).
        alphas: the grid searched.
        errors: localisation error at each α of the grid.
        n: images used.
    """

    kind: str
    alpha: float
    alphas: list[float]
    errors: list[float]
    n: int

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "alpha": self.alpha,
            "alphas": self.alphas,
            "errors": [json_float(e) for e in self.errors],
            "n": self.n,
        }


class AlphaSearch:
    """Accumulator for :func:`choose_alpha`: ``update(maps, boxes)`` batches, ``compute()``."""

    def __init__(
        self,
        kind: str = "energy",
        alphas: Sequence[float] | None = None,
        iou_threshold: float = 0.5,
    ) -> None:
        check_kind(kind)
        self.kind, self.iou_threshold = kind, iou_threshold
        self.alphas = [float(a) for a in (default_alphas(kind) if alphas is None else alphas)]
        if not self.alphas:
            raise ValueError("alphas is empty: give at least one threshold to try")
        self.reset()

    def reset(self) -> None:
        self._errors = [0] * len(self.alphas)
        self._n = 0

    def update(self, maps, boxes) -> AlphaSearch:
        maps = as_maps(maps)
        for j, a in enumerate(self.alphas):
            _, iou = best_iou(maps, boxes, a, self.kind)
            self._errors[j] += int((iou < self.iou_threshold).sum())
        self._n += maps.shape[0]
        return self

    def compute(self) -> AlphaChoice:
        if self._n == 0:
            raise ValueError("no images seen: call update(maps, boxes) first")
        errors = [e / self._n for e in self._errors]
        best = min(range(len(errors)), key=lambda j: errors[j])
        return AlphaChoice(self.kind, self.alphas[best], list(self.alphas), errors, self._n)


def choose_alpha(
    maps,
    boxes,
    kind: str = "energy",
    alphas: Sequence[float] | None = None,
    iou_threshold: float = 0.5,
) -> AlphaChoice:
    """Pick the threshold with the lowest localisation error on a held-out split.

    Args:
        maps, boxes: validation maps and ground-truth boxes (as :func:`weak_localisation`).
        kind: ``"value"``, ``"energy"`` or ``"mean"``.
        alphas: the grid to search (default :func:`default_alphas`).
        iou_threshold: IoU needed for a correct box.

    Returns:
        An :class:`AlphaChoice`; pass ``.alpha`` to :func:`weak_localisation` on the test split.
    """
    return AlphaSearch(kind, alphas, iou_threshold).update(maps, boxes).compute()


__all__ = [
    "KINDS",
    "AlphaChoice",
    "AlphaSearch",
    "LocalisationResult",
    "WeakLocalisation",
    "box_iou",
    "choose_alpha",
    "default_alphas",
    "selection_boxes",
    "threshold_maps",
    "weak_localisation",
]
