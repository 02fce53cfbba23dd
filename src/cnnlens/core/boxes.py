"""Box geometry on images and maps: checking boxes, box masks, tightest boxes around maps.

A box is ``(x0, y0, x1, y1)`` in pixels, end exclusive (``x1 - x0`` columns wide),
with ``(x0, y0)`` the top-left corner. The perturbation analyses
(:mod:`cnnlens.perturbation.interrogate`, :mod:`cnnlens.perturbation.boxes`) and
the localisation metrics (:mod:`cnnlens.evaluation`) share these pieces:

* :func:`check_box` / :func:`per_image_boxes`: validate boxes against an image size;
* :func:`box_masks`: keep-masks ``m_B`` (0 inside the box, 1 elsewhere);
* :func:`normalize_maps`: min-max scale each map to [0, 1],
  ``S' = (S - min S) / (max S - min S)`` (a constant map becomes 0);
* :func:`tightest_boxes`: the smallest box around the pixels with ``S'(u) >= h``,
  for each threshold ``h``;
* :func:`box_areas`: a box's area as a fraction of the image.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

from .maps import minmax

Box = tuple[int, int, int, int]

# The thresholds h of :func:`tightest_boxes` by default: 0, 0.1, ..., 1.
THRESHOLDS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))


def check_box(box, size: tuple[int, int], what: str = "box") -> Box:
    """Validate ``box = (x0, y0, x1, y1)`` (integers, end exclusive) against ``size = (H, W)``.

    Args:
        box: four integers (a tuple, list, tensor or NumPy array); whole floats are accepted.
        size: the image's ``(H, W)``.
        what: how the message names the box.

    Returns:
        The box as a tuple of four ``int``.

    Raises:
        ValueError: not four integers, empty, reversed or reaching outside the image;
            the message says which rule failed and the allowed range.
    """
    if hasattr(box, "tolist"):  # a tensor or a NumPy array
        box = box.tolist()
    if isinstance(box, (str, bytes)) or not isinstance(box, Sequence) or len(box) != 4:
        raise ValueError(f"{what} must be four numbers (x0, y0, x1, y1), got {box!r}")
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in box):
        ok = all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) and float(v).is_integer()
            for v in box
        )
        if not ok:
            raise ValueError(f"{what} must hold integer pixel coordinates, got {box!r}")
        box = [int(v) for v in box]
    x0, y0, x1, y1 = box
    h, w = size
    if x1 <= x0 or y1 <= y0:
        raise ValueError(
            f"{what} {tuple(box)} is empty or reversed: need x0 < x1 and y0 < y1 "
            "(corners (x0, y0) top-left and (x1, y1) bottom-right, end exclusive)"
        )
    if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
        raise ValueError(
            f"{what} {tuple(box)} reaches outside the {w}x{h} image: need 0 <= x0 < x1 <= {w} "
            f"and 0 <= y0 < y1 <= {h}"
        )
    return (int(x0), int(y0), int(x1), int(y1))


def per_image_boxes(box, n: int, size: tuple[int, int]) -> torch.Tensor:
    """One box for every image, or one per image, as an ``(N, 4)`` long tensor (validated).

    Args:
        box: one box (see :func:`check_box`) or a sequence of ``n`` boxes.
        n: the number of images.
        size: the images' ``(H, W)``.
    """
    if hasattr(box, "tolist"):  # a tensor or a NumPy array
        box = box.tolist()
    nested = (
        isinstance(box, Sequence)
        and not isinstance(box, (str, bytes))
        and len(box) > 0
        and isinstance(box[0], (Sequence, torch.Tensor))
        and not isinstance(box[0], (str, bytes))
    )
    if nested:
        if len(box) != n:
            raise ValueError(f"got {len(box)} boxes for {n} images: pass one box or one per image")
        boxes = [check_box(b, size, f"box {i}") for i, b in enumerate(box)]
    else:
        boxes = [check_box(box, size)] * n
    return torch.tensor(boxes, dtype=torch.long).view(n, 4)


def box_masks(boxes: torch.Tensor, size: tuple[int, int], device=None) -> torch.Tensor:
    """``(K, 1, H, W)`` keep-masks: 0 inside each box ``(x0, y0, x1, y1)``, 1 elsewhere.

    Args:
        boxes: ``(K, 4)`` (or anything that views as it) integer boxes.
        size: ``(H, W)`` of the masks.
        device: where the masks are made.

    A box with ``x1 <= x0`` or ``y1 <= y0`` is empty and gives an all-ones mask.
    """
    h, w = size
    boxes = boxes.to(device=device, dtype=torch.long).view(-1, 4)
    ys = torch.arange(h, device=device).view(1, h, 1)
    xs = torch.arange(w, device=device).view(1, 1, w)
    x0, y0, x1, y1 = (boxes[:, i].view(-1, 1, 1) for i in range(4))
    inside = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
    return (~inside).float().unsqueeze(1)


# per-map min-max scaling to [0, 1] (constant maps become 0), under its old name
normalize_maps = minmax


def tightest_boxes(maps: torch.Tensor, thresholds: Sequence[float] = THRESHOLDS) -> torch.Tensor:
    """Tightest boxes around ``maps >= h`` for each threshold: ``(..., K, 4)`` long.

    Args:
        maps: ``(..., H, W)`` maps (already normalised, see :func:`normalize_maps`).
        thresholds: the K values of ``h`` (default :data:`THRESHOLDS`).

    Returns:
        ``(x0, y0, x1, y1)`` per map and threshold, end exclusive; ``(-1, -1, -1, -1)``
        where no pixel reaches the threshold.
    """
    h, w = maps.shape[-2:]
    th = torch.as_tensor(thresholds, dtype=maps.dtype, device=maps.device)
    sel = maps.unsqueeze(-3) >= th.view(-1, 1, 1)  # (..., K, H, W)
    rows, cols = sel.any(-1), sel.any(-2)  # (..., K, H), (..., K, W)
    valid = rows.any(-1)
    y0 = rows.byte().argmax(-1)
    y1 = h - rows.flip(-1).byte().argmax(-1)
    x0 = cols.byte().argmax(-1)
    x1 = w - cols.flip(-1).byte().argmax(-1)
    boxes = torch.stack([x0, y0, x1, y1], dim=-1).long()
    return torch.where(valid.unsqueeze(-1), boxes, torch.full_like(boxes, -1))


def box_areas(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Area of ``(..., 4)`` boxes as a fraction of an ``(H, W)`` image; NaN for missing boxes."""
    h, w = size
    b = boxes.float()
    area = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1]) / (h * w)
    return torch.where(boxes[..., 0] >= 0, area, torch.full_like(area, math.nan))


__all__ = [
    "THRESHOLDS",
    "Box",
    "box_areas",
    "box_masks",
    "check_box",
    "normalize_maps",
    "per_image_boxes",
    "tightest_boxes",
]
