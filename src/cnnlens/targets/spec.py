"""``--target KIND:VALUE``: the command-line spellings of the target kinds.

=============================  ================================================
``logit:285`` ``logit:3,7``    class logits (``ClassLogit``), as ``--target 285``
``prob:285``                   class probabilities (``ClassProbability``)
``multilabel:3,7``             label sigmoids of a multi-label head (``MultiLabel``)
``output:0``                   regression outputs (``Regression``)
``sim:REF.png``                similarity to REF's embedding (``EmbeddingSimilarity``)
``seg:15`` ``seg:15:x0,y0,x1,y1``  class 15 summed over the image, or over a box
                               (``SegmentationRegion``; a segmentation model)
``det:x0,y0,x1,y1[:LABEL]``    the detection matching a box (``DetectionBox``;
                               a detection model)
=============================  ================================================

Boxes are in pixels of the model's input (after its resize and crop). Text without a
known ``KIND:`` prefix is not a kind (class indices, ``top5``): :func:`parse_kind` returns
None and the caller reads it as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..core.errors import TargetError
from ..models.base import LoadedModel
from .base import Target
from .dense import TargetedModel, dense_model
from .embedding import EmbeddingSimilarity
from .kinds import (
    ClassLogit,
    ClassProbability,
    DetectionBox,
    MultiLabel,
    Regression,
    SegmentationRegion,
)

_PER_CLASS = {
    "logit": ClassLogit,
    "prob": ClassProbability,
    "multilabel": MultiLabel,
    "output": Regression,
}
KINDS = (*_PER_CLASS, "sim", "seg", "det")


@dataclass(frozen=True)
class KindSpec:
    """A parsed ``KIND:VALUE``; :meth:`build` makes the target for a loaded model."""

    kind: str
    value: str
    text: str

    def build(self, model: LoadedModel, max_pixels: int | None = None):
        """``(target, model)``: the target (or ``[[targets]]`` for several classes) and the
        model to explain with (a :class:`~cnnlens.targets.dense.DenseModel` for seg/det).

        Raises:
            TargetError: a malformed value, a class the model does not have, a reference
                image that cannot be read, or a model of the wrong kind.
        """
        if self.kind in _PER_CLASS:
            classes = _ints(self.value, self.text)
            n = len(model.class_names)
            bad = [c for c in classes if n and c >= n]
            if bad:
                raise TargetError(
                    f"--target {self.text}: {bad[0]} is not an output of {model.name}, which "
                    f"has {n} (0 to {n - 1})"
                )
            made = [_PER_CLASS[self.kind](c) for c in classes]
            return (made[0] if len(made) == 1 else [made]), model
        if self.kind == "sim":
            target = _similarity(self.value, self.text, model, max_pixels)
            return target, TargetedModel.of(model, target.describe())
        if self.kind == "seg":
            cls, _, box = self.value.partition(":")
            boxes = _box(box, self.text) if box else None
            target = SegmentationRegion(_ints(cls, self.text, one=True)[0], box=boxes)
            return target, dense_model(model, "segmentation", target.describe())
        box, _, label = self.value.partition(":")
        lab = _ints(label, self.text, one=True)[0] if label else None
        target = DetectionBox(_box(box, self.text), label=lab)
        return target, dense_model(model, "detection", target.describe())


def parse_kind(text: str | None) -> KindSpec | None:
    """``KIND:VALUE`` -> :class:`KindSpec`; None for text that names no kind.

    Raises:
        TargetError: a known kind with nothing after the colon.
    """
    if text is None:
        return None
    kind, sep, value = text.strip().partition(":")
    if not sep or kind.lower() not in KINDS:
        return None
    if not value.strip():
        raise TargetError(f"--target {text!r}: write {kind}:VALUE (see --help)")
    return KindSpec(kind.lower(), value.strip(), text.strip())


def _ints(text: str, whole: str, one: bool = False) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(v < 0 for v in values) or (one and len(values) != 1):
        what = "one index" if one else "indices like 3 or 3,7"
        raise TargetError(f"--target {whole!r}: expected {what}, got {text!r}")
    return values


def _box(text: str, whole: str) -> tuple[float, float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or values[2] <= values[0] or values[3] <= values[1]:
        raise TargetError(
            f"--target {whole!r}: a box is x0,y0,x1,y1 in input pixels with x1 > x0 and "
            f"y1 > y0, got {text!r}"
        )
    return values  # type: ignore[return-value]


def _similarity(path: str, whole: str, model: LoadedModel, max_pixels) -> Target:
    from ..core.errors import ImageError
    from ..io import DEFAULT_MAX_PIXELS, load_image

    try:
        image = load_image(path, max_pixels or DEFAULT_MAX_PIXELS)
    except ImageError as e:
        raise TargetError(f"--target {whole!r}: the reference image {e}") from e
    return EmbeddingSimilarity(model.preprocess(image)[0], name=Path(path).name)
