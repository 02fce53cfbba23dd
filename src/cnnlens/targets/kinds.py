"""The target kinds read from a model's output: classes, labels, regressions, segmentation
regions and detections.

Each is a :class:`~cnnlens.targets.base.Target`; what it explains, per image:

* ``ClassLogit(c)``: ``z_c``, the class's logit (what a plain ``target=c`` means);
* ``ClassProbability(c)``: ``softmax(z)_c``;
* ``MultiLabel(c)``: ``sigmoid(z_c)``, the probability of label ``c`` of a multi-label head;
* ``Regression(i)``: output ``i`` of a regression model, as it is;
* ``SegmentationRegion(c, mask)``: ``sum_u m(u) z_c(u)``, the class's logits of a
  segmentation map ``(N, C, H, W)`` summed over a mask (torchvision's FCN and DeepLab return
  it as ``output["out"]``);
* ``DetectionBox(box, label)``: the score of the best-scoring detection whose box overlaps
  ``box`` with IoU >= ``iou`` (and has class ``label`` when given), 0 when none does;
  torchvision's Faster R-CNN, RetinaNet and SSD return, in eval mode, one dict per image
  with ``boxes`` ``(M, 4)``, ``scores`` ``(M,)`` and ``labels`` ``(M,)``, and the kept
  scores carry gradient back to the image. The image given to the method must have a
  match (else :class:`~cnnlens.core.errors.MethodError`); perturbed copies without one
  score 0, as a detection under the model's threshold.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core.boxes import check_box
from ..core.errors import MethodError, TargetError
from .base import Target, column, output_matrix


def _index(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TargetError(f"{what} must be a non-negative integer, got {value!r}")
    return value


class ClassLogit(Target):
    """The logit of class ``c`` (the default meaning of ``target=c``)."""

    def __init__(self, c: int):
        self.unit = self.index = _index(c, "ClassLogit's class")

    def score(self, output) -> torch.Tensor:
        return column(output_matrix(output, "ClassLogit"), self.unit, "ClassLogit")

    def describe(self) -> str:
        return f"logit of class {self.unit}"


class ClassProbability(Target):
    """The softmax probability of class ``c``."""

    score_name = "prob"

    def __init__(self, c: int):
        self.unit = self.index = _index(c, "ClassProbability's class")

    def score(self, output) -> torch.Tensor:
        out = output_matrix(output, "ClassProbability")
        column(out, self.unit, "ClassProbability")  # range check
        return F.softmax(out, dim=1)[:, self.unit]

    def describe(self) -> str:
        return f"probability of class {self.unit}"


class MultiLabel(Target):
    """``sigmoid(logit_c)``: the probability of label ``c`` of a multi-label head."""

    def __init__(self, c: int):
        self.index = _index(c, "MultiLabel's label")

    def score(self, output) -> torch.Tensor:
        return torch.sigmoid(column(output_matrix(output, "MultiLabel"), self.index, "MultiLabel"))

    def describe(self) -> str:
        return f"sigmoid of label {self.index}"


class Regression(Target):
    """Output ``index`` of a regression model, unchanged (an ``(N,)`` output is one column).

    CAM and excitation backprop read it as output unit ``index`` of an ``(N, K)`` output;
    other methods go through the target head, so a model returning ``(N,)`` works too.
    """

    plain = False

    def __init__(self, index: int = 0):
        self.unit = self.index = _index(index, "Regression's output index")

    def score(self, output) -> torch.Tensor:
        return column(output_matrix(output, "Regression"), self.unit, "Regression")

    def describe(self) -> str:
        return f"regression output {self.unit}"


def dense_output(output) -> torch.Tensor:
    """A segmentation model's ``(N, C, H, W)`` class logits (``output["out"]`` or ``.logits``)."""
    out = output.get("out") if isinstance(output, dict) else getattr(output, "logits", output)
    if not isinstance(out, torch.Tensor) or out.dim() != 4:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(output).__name__
        raise MethodError(
            f"SegmentationRegion reads (N, C, H, W) class maps (or a dict with 'out', as "
            f"torchvision's FCN and DeepLab return), but the model returned {got}"
        )
    return out


class SegmentationRegion(Target):
    """Class ``class_index``'s logits of a segmentation map, summed over a region.

    Args:
        class_index: the class channel ``c``.
        mask: ``(H, W)`` weights (bool or float) at the input's or the output's
            resolution, the same for every image (for one mask per image pass one target
            per image); None (with no ``box``) means the whole image.
        box: ``(x0, y0, x1, y1)`` in input pixels, end exclusive, instead of a mask.
    """

    def __init__(self, class_index: int, mask: torch.Tensor | None = None, box=None):
        self.index = _index(class_index, "SegmentationRegion's class")
        if mask is not None and box is not None:
            raise TargetError("give SegmentationRegion a mask or a box, not both")
        if mask is not None and (not isinstance(mask, torch.Tensor) or mask.dim() != 2):
            raise TargetError(
                "SegmentationRegion's mask must be one (H, W) tensor; for one mask per image "
                "give one target per image"
            )
        self.mask, self.box = mask, box

    def features(self, net: nn.Module, x: torch.Tensor):
        return net(x), tuple(x.shape[-2:])

    def key(self):
        return ("output", "input size")

    def score(self, features) -> torch.Tensor:
        output, size = features
        out = dense_output(output)
        column(out[:, :, 0, 0], self.index, "SegmentationRegion")  # range check
        maps = out[:, self.index]
        return (maps * self.weights(size, tuple(out.shape[-2:]), maps)).sum((1, 2))

    def weights(self, size: tuple[int, int], grid: tuple[int, int], like: torch.Tensor):
        """The mask as weights on the output's ``grid`` (input size ``size``)."""
        if self.mask is None and self.box is None:
            return torch.ones(grid, device=like.device, dtype=like.dtype)
        if self.box is not None:
            x0, y0, x1, y1 = check_box(self.box, size, "SegmentationRegion's box")
            m = torch.zeros(size, device=like.device, dtype=like.dtype)
            m[y0:y1, x0:x1] = 1
        else:
            m = self.mask.to(device=like.device, dtype=like.dtype)
        if tuple(m.shape[-2:]) == grid:
            return m
        if tuple(m.shape[-2:]) != size:
            raise TargetError(
                f"SegmentationRegion's mask is {tuple(m.shape[-2:])}: it must be the input's "
                f"size {size} or the output's {grid}"
            )
        return F.interpolate(m[None, None], size=grid, mode="nearest")[0, 0]

    def describe(self) -> str:
        where = "image" if self.box is None and self.mask is None else "region"
        where = f"box {tuple(self.box)}" if self.box is not None else where
        return f"class {self.index} summed over the {where}"


def box_iou(boxes: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """IoU of each row of ``boxes (M, 4)`` with ``box (4,)``, corners ``(x0, y0, x1, y1)``."""
    lo = torch.maximum(boxes[:, :2], box[:2])
    hi = torch.minimum(boxes[:, 2:], box[2:])
    inter = (hi - lo).clamp_min(0).prod(1)
    area = (boxes[:, 2:] - boxes[:, :2]).clamp_min(0).prod(1)
    union = area + (box[2:] - box[:2]).clamp_min(0).prod() - inter
    return inter / union.clamp_min(1e-12)


def detections(output, n: int | None = None) -> list[dict]:
    """Per image a dict with ``boxes (M, 4)`` and ``scores (M,)`` (and ``labels``)."""
    ok = isinstance(output, (list, tuple)) and len(output) == (len(output) if n is None else n)
    ok = ok and all(isinstance(d, dict) and "boxes" in d and "scores" in d for d in output)
    if not ok:
        raise MethodError(
            "DetectionBox reads one dict per image with 'boxes' and 'scores' (torchvision "
            f"detection models in eval mode), but the model returned {type(output).__name__}"
        )
    return list(output)


class DetectionBox(Target):
    """The score of the best detection overlapping ``box`` (module docstring).

    Args:
        box: ``(x0, y0, x1, y1)`` in the input's pixels.
        label: only detections of this class count (None: any class).
        iou: the least intersection over union that counts as a match.
    """

    def __init__(self, box: Sequence[float], label: int | None = None, iou: float = 0.5):
        values = [float(v) for v in box]
        if len(values) != 4 or values[2] <= values[0] or values[3] <= values[1]:
            raise TargetError(f"DetectionBox needs a box x0,y0,x1,y1 with x1 > x0, y1 > y0: {box}")
        if not 0.0 < iou <= 1.0:
            raise TargetError(f"DetectionBox's iou must be in (0, 1], got {iou}")
        self.box, self.label, self.iou = tuple(values), label, float(iou)
        self.index = -1 if label is None else _index(label, "DetectionBox's label")

    def _matches(self, det: dict) -> tuple[torch.Tensor, torch.Tensor]:
        boxes = det["boxes"]
        ious = box_iou(boxes, torch.tensor(self.box, device=boxes.device, dtype=boxes.dtype))
        ok = ious >= self.iou
        if self.label is not None and "labels" in det:
            ok = ok & (det["labels"] == self.label)
        return ok, ious

    def score(self, output) -> torch.Tensor:
        out = []
        for det in detections(output):
            ok, _ = self._matches(det)
            s = det["scores"]
            # no match: 0, still in the graph so that gradients are zeros, not an error
            out.append(s[ok].max() if bool(ok.any()) else (s * 0).sum())
        return torch.stack(out)

    def prepare(self, net: nn.Module, x: torch.Tensor) -> None:
        for i, det in enumerate(detections(net(x), x.shape[0])):
            ok, ious = self._matches(det)
            if not bool(ok.any()):
                best = f"{float(ious.max()):.2f}" if len(ious) else "none (no detections)"
                of = "" if self.label is None else f" of class {self.label}"
                raise MethodError(
                    f"no detection{of} overlaps the box {self.box} with IoU >= {self.iou} on "
                    f"image {i} (best IoU {best}); give the box of a detection the model makes, "
                    "or lower the model's score threshold (e.g. box_score_thresh for Faster R-CNN)"
                )

    def describe(self) -> str:
        of = "" if self.label is None else f" of class {self.label}"
        return f"detection{of} at box {tuple(round(v, 1) for v in self.box)}"
