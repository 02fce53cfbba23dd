"""The pointing game: does the map's maximum fall on the object?

Zhang et al. ("Top-down Neural Attention by Excitation Backprop", ECCV 2016,
sec. 5.1) score a saliency map of class ``c`` by a single point, its maximum
``p = argmax_u S(u)``. The point is a hit when it lies within ``r`` pixels of
the ground-truth region of ``c``:

    hit  <=>  min_{u in M_c} ||p - u||_2 <= r

i.e. the mask dilated by a disc of radius ``r`` contains ``p``. The paper uses
``r = 15`` px at 224 px inputs; here the radius scales with the map by default,
``r = tolerance * min(H, W) / reference_size``, so the same game is played at
any resolution (``reference_size=None`` takes ``tolerance`` in pixels as is).

Accuracy is ``hits / (hits + misses)``. The paper's table reports the mean of
the per-class accuracies (each class weighs the same however many images it
has), over all images and over a "difficult" subset (small objects with a
distractor class); both are given when ``classes`` and ``difficult`` are.

Ties at the maximum: the point is the centroid of all maximal pixels (exact
equality). One maximum is itself; a plateau points at its centre; a constant
map points at the image centre, so a map that singles nothing out is treated
exactly like the centre baseline instead of hitting "somewhere" by luck (as
taking the first maximal pixel in raster order, the top-left corner, would).
Two separate maxima point between them: a map that cannot choose gets no
credit for either. Images whose mask is empty cannot be scored and are
counted as ``skipped``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .common import json_float, maps_and_masks, per_image


def max_points(maps: torch.Tensor) -> torch.Tensor:
    """Where each map points: ``(N, 2)`` float ``(y, x)``, the centroid of its maximal pixels."""
    maps = maps.detach().float()
    n, h, w = maps.shape
    flat = maps.reshape(n, -1)
    top = flat == flat.amax(dim=1, keepdim=True)
    ys = torch.arange(h, device=maps.device, dtype=torch.float32).repeat_interleave(w)
    xs = torch.arange(w, device=maps.device, dtype=torch.float32).repeat(h)
    count = top.sum(1).float()
    y = (top.float() * ys).sum(1) / count
    x = (top.float() * xs).sum(1) / count
    return torch.stack([y, x], dim=1)


def radius(tolerance: float, size: tuple[int, int], reference_size: int | None) -> float:
    """Hit radius in pixels: ``tolerance`` scaled from ``reference_size`` to ``min(H, W)``."""
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 pixels, got {tolerance}")
    if reference_size is None:
        return float(tolerance)
    return float(tolerance) * min(size) / reference_size


def pointing_hits(
    maps, masks, tolerance: float = 15.0, reference_size: int | None = 224
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image hits of the pointing game.

    Args:
        maps: ``(N, H, W)`` saliency maps (or ``(N, 1, H, W)``, or an Explanation).
        masks: ``(N, H, W)`` bool ground truth of each map's class.
        tolerance, reference_size: the hit radius (see the module docstring).

    Returns:
        ``hits (N,)`` bool and ``valid (N,)`` bool (False where the mask is empty).
    """
    maps, masks = maps_and_masks(maps, masks)
    h, w = masks.shape[-2:]
    r = radius(tolerance, (h, w), reference_size)
    p = max_points(maps)
    ys = torch.arange(h, device=maps.device, dtype=torch.float32).view(1, h, 1)
    xs = torch.arange(w, device=maps.device, dtype=torch.float32).view(1, 1, w)
    d2 = (ys - p[:, 0].view(-1, 1, 1)) ** 2 + (xs - p[:, 1].view(-1, 1, 1)) ** 2
    # A relative slack of 1e-6 keeps points exactly on the circle inside despite rounding.
    hits = ((d2 <= r * r * (1 + 1e-6)) & masks).flatten(1).any(1)
    return hits, masks.flatten(1).any(1)


@dataclass
class PointingResult:
    """Pointing-game accuracy.

    Attributes:
        n: scored images (non-empty masks).
        hits: how many of them were hits.
        accuracy: ``hits / n`` over all scored images (NaN when ``n = 0``).
        mean_class_accuracy: mean over classes of the per-class accuracy (the
            paper's number); equals ``accuracy`` when no classes are given.
        class_accuracy: ``{class: accuracy}``; empty when no classes are given.
        class_counts: ``{class: scored images}``.
        skipped: images with an empty mask.
        hit: ``(N,)`` bool per input image (False where skipped).
        difficult: the same result on the difficult subset, when flags were given.
    """

    n: int
    hits: int
    accuracy: float
    mean_class_accuracy: float
    class_accuracy: dict[int, float]
    class_counts: dict[int, int]
    skipped: int
    hit: torch.Tensor
    difficult: PointingResult | None = None

    def to_dict(self) -> dict:
        return {
            "n": self.n,
            "hits": self.hits,
            "accuracy": json_float(self.accuracy),
            "mean_class_accuracy": json_float(self.mean_class_accuracy),
            "class_accuracy": {str(k): v for k, v in self.class_accuracy.items()},
            "class_counts": {str(k): v for k, v in self.class_counts.items()},
            "skipped": self.skipped,
            "difficult": None if self.difficult is None else self.difficult.to_dict(),
        }


def _summary(hit: torch.Tensor, valid: torch.Tensor, classes: torch.Tensor | None):
    n = int(valid.sum())
    hits = int((hit & valid).sum())
    accuracy = hits / n if n else math.nan
    per, counts = {}, {}
    if classes is not None:
        for c in torch.unique(classes[valid]).tolist():
            sel = valid & (classes == c)
            counts[int(c)] = int(sel.sum())
            per[int(c)] = int((hit & sel).sum()) / counts[int(c)]
    mean_class = sum(per.values()) / len(per) if per else accuracy
    return n, hits, accuracy, mean_class, per, counts


class PointingGame:
    """Accumulator of the pointing game over batches: ``update(maps, masks, ...)``, ``compute()``.

    Args:
        tolerance: hit radius in pixels at ``reference_size`` (15 in the paper).
        reference_size: the input size ``tolerance`` refers to (224); None takes
            ``tolerance`` as an absolute radius in pixels of the masks.
    """

    def __init__(self, tolerance: float = 15.0, reference_size: int | None = 224) -> None:
        radius(tolerance, (1, 1), reference_size)  # validate early
        self.tolerance = tolerance
        self.reference_size = reference_size
        self.reset()

    def reset(self) -> None:
        self._hit, self._valid, self._classes, self._difficult = [], [], [], []

    def update(self, maps, masks, classes=None, difficult=None) -> PointingGame:
        """Score one batch.

        Args:
            maps: ``(N, H, W)`` maps (or ``(N, 1, H, W)``, or an Explanation).
            masks: ``(N, H, W)`` bool masks of each map's class.
            classes: ``(N,)`` class of each map, for the per-class mean.
            difficult: ``(N,)`` bool, True for images of the difficult subset.
        """
        hit, valid = pointing_hits(maps, masks, self.tolerance, self.reference_size)
        n, dev = hit.shape[0], hit.device
        c = per_image(classes, n, torch.long, dev, "classes")
        d = per_image(difficult, n, torch.bool, dev, "difficult")
        if self._hit and (c is None) != (self._classes[0] is None):
            raise ValueError("give classes with every batch or with none")
        if self._hit and (d is None) != (self._difficult[0] is None):
            raise ValueError("give difficult flags with every batch or with none")
        self._hit.append(hit)
        self._valid.append(valid)
        self._classes.append(c)
        self._difficult.append(d)
        return self

    def compute(self) -> PointingResult:
        if not self._hit:
            empty = torch.zeros(0, dtype=torch.bool)
            return PointingResult(0, 0, math.nan, math.nan, {}, {}, 0, empty)
        hit, valid = torch.cat(self._hit), torch.cat(self._valid)
        classes = None if self._classes[0] is None else torch.cat(self._classes)
        difficult = None if self._difficult[0] is None else torch.cat(self._difficult)
        n, hits, acc, mean_class, per, counts = _summary(hit, valid, classes)
        sub = None
        if difficult is not None:
            dn, dh, dacc, dmean, dper, dcounts = _summary(hit, valid & difficult, classes)
            skipped = int((difficult & ~valid).sum())
            sub_hit = (hit & valid)[difficult]
            sub = PointingResult(dn, dh, dacc, dmean, dper, dcounts, skipped, sub_hit)
        skipped = int((~valid).sum())
        return PointingResult(n, hits, acc, mean_class, per, counts, skipped, hit & valid, sub)


def pointing_game(
    maps,
    masks,
    tolerance: float = 15.0,
    classes=None,
    difficult=None,
    *,
    reference_size: int | None = 224,
) -> PointingResult:
    """Pointing-game accuracy of saliency maps (Zhang et al. 2016).

    Args:
        maps: ``(N, H, W)`` saliency maps (or ``(N, 1, H, W)``, or an Explanation);
            resized to the masks' size if it differs.
        masks: ``(N, H, W)`` bool ground truth of each map's class.
        tolerance: hit radius, in pixels at ``reference_size`` (default 15 at 224).
        classes: optional ``(N,)`` class per map, for the mean over classes.
        difficult: optional ``(N,)`` bool flags of the difficult subset.
        reference_size: input size ``tolerance`` refers to; None for absolute pixels.

    Returns:
        A :class:`PointingResult`.
    """
    game = PointingGame(tolerance, reference_size)
    return game.update(maps, masks, classes, difficult).compute()


__all__ = ["PointingGame", "PointingResult", "max_points", "pointing_game", "pointing_hits"]
