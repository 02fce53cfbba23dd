"""Readers for Pascal VOC XML and COCO JSON box annotations.

Real photos have no pixel-exact evidence, but their object boxes are good
enough for the pointing game (Zhang et al. 2016: a hit when the map's maximum
falls in a box of the target class, within a tolerance) and for box-based
localisation. Both formats are reduced to one plain form: an
:class:`Annotation` per image, listing :class:`Object` s with 0-based boxes
``(x0, y0, x1, y1)`` whose end is exclusive, the same convention as the
planted dataset and as array slicing (``mask[y0:y1, x0:x1]``).

Conversions:

* VOC stores 1-based pixel indices with *inclusive* ends (``xmin=1, xmax=10``
  covers the first ten columns), so ``x0 = xmin - 1`` and ``x1 = xmax``.
* COCO stores ``[x, y, width, height]`` in continuous 0-based coordinates, so
  ``x0 = x`` and ``x1 = x + width``, rounded outwards to whole pixels.
  ``iscrowd=1`` regions are marked ``difficult`` (the pointing game ignores
  difficult objects by convention, as VOC's benchmarks do).
"""

from __future__ import annotations

import json
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Object:
    """One annotated object: class name, 0-based box with exclusive end, difficult flag."""

    label: str
    box: Box
    difficult: bool = False


@dataclass
class Annotation:
    """The objects annotated in one image, and the image's size in pixels."""

    image_path: str
    width: int
    height: int
    objects: list[Object] = field(default_factory=list)

    def labels(self) -> list[str]:
        """Distinct class names present, in order of first appearance."""
        return list(dict.fromkeys(o.label for o in self.objects))


def _text(node: ET.Element, tag: str, path: Path) -> str:
    child = node.find(tag)
    if child is None or child.text is None:
        raise ValueError(f"{path}: VOC annotation has no <{tag}>")
    return child.text.strip()


def _read_voc_file(path: Path, classes: set[str] | None) -> Annotation:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise ValueError(f"{path}: not a valid XML file ({e})") from None
    size = root.find("size")
    if size is None:
        raise ValueError(f"{path}: VOC annotation has no <size>")
    width, height = int(_text(size, "width", path)), int(_text(size, "height", path))
    folder = root.findtext("folder", default="").strip()
    filename = _text(root, "filename", path)
    image_path = str(Path(folder) / filename) if folder else filename
    objects = []
    for obj in root.iter("object"):
        label = _text(obj, "name", path)
        if classes is not None and label not in classes:
            continue
        bb = obj.find("bndbox")
        if bb is None:
            raise ValueError(f"{path}: object {label!r} has no <bndbox>")
        # VOC: 1-based, inclusive. Coordinates are sometimes written as floats.
        xmin, ymin, xmax, ymax = (
            float(_text(bb, t, path)) for t in ("xmin", "ymin", "xmax", "ymax")
        )
        box = (int(round(xmin)) - 1, int(round(ymin)) - 1, int(round(xmax)), int(round(ymax)))
        difficult = obj.findtext("difficult", default="0").strip() == "1"
        objects.append(Object(label, box, difficult))
    return Annotation(image_path, width, height, objects)


def read_voc(path: str | os.PathLike, classes: Sequence[str] | None = None) -> list[Annotation]:
    """Read Pascal VOC XML annotations.

    Args:
        path: one ``.xml`` file, or a folder whose ``*.xml`` files are read in
            name order (e.g. ``VOC2012/Annotations``).
        classes: keep only objects of these class names (default: all).

    Returns:
        One :class:`Annotation` per file. Boxes are converted from VOC's
        1-based inclusive ``xmin..xmax`` to 0-based ``(x0, y0, x1, y1)`` with
        exclusive end: ``x0 = xmin - 1``, ``x1 = xmax``. ``image_path`` is
        ``folder/filename`` as written in the file.
    """
    path = Path(path)
    keep = set(classes) if classes is not None else None
    if path.is_dir():
        files = sorted(path.glob("*.xml"))
        if not files:
            raise FileNotFoundError(f"{path}: no .xml annotation files in this folder")
        return [_read_voc_file(f, keep) for f in files]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such annotation file or folder")
    return [_read_voc_file(path, keep)]


def read_coco(path: str | os.PathLike, classes: Sequence[str] | None = None) -> list[Annotation]:
    """Read a COCO object-detection JSON file (``instances_*.json``).

    Args:
        path: the JSON file.
        classes: keep only objects of these category names (default: all).

    Returns:
        One :class:`Annotation` per entry of ``images``, in file order, also
        for images without objects. ``bbox = [x, y, w, h]`` becomes
        ``(floor(x), floor(y), ceil(x + w), ceil(y + h))``; labels are the
        category *names*; ``iscrowd = 1`` sets ``difficult``.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such annotation file") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not a valid JSON file ({e})") from None
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise ValueError(f"{path}: COCO file has no {key!r} list")
    names = {c["id"]: c["name"] for c in data["categories"]}
    keep = set(classes) if classes is not None else None
    out: dict[int, Annotation] = {}
    for img in data["images"]:
        out[img["id"]] = Annotation(img["file_name"], int(img["width"]), int(img["height"]))
    for ann in data["annotations"]:
        label = names.get(ann["category_id"])
        if label is None:
            raise ValueError(f"{path}: annotation {ann.get('id')} has unknown category")
        if keep is not None and label not in keep:
            continue
        if ann["image_id"] not in out:
            raise ValueError(f"{path}: annotation {ann.get('id')} refers to a missing image")
        x, y, w, h = (float(v) for v in ann["bbox"])
        box = (math.floor(x), math.floor(y), math.ceil(x + w), math.ceil(y + h))
        difficult = bool(ann.get("iscrowd", 0))
        out[ann["image_id"]].objects.append(Object(label, box, difficult))
    return list(out.values())


def box_masks(
    annotation: Annotation,
    label: str,
    size: tuple[int, int] | None = None,
    *,
    include_difficult: bool = True,
) -> torch.Tensor:
    """Mask of the boxes of one class, optionally rescaled to a resized image.

    Args:
        annotation: the image's annotation.
        label: class name whose boxes to draw.
        size: ``(H, W)`` of the image the mask is for, when the photo was
            resized without cropping (e.g. ``Preprocess(resize=None)``); box
            edges are scaled by ``W / width`` and ``H / height`` and rounded
            outwards, so a box never shrinks below what it covered. Default:
            the original size.
        include_difficult: also draw objects marked difficult.

    Returns:
        ``(H, W)`` bool tensor, True inside any box of ``label``.
    """
    h, w = size if size is not None else (annotation.height, annotation.width)
    sx, sy = w / annotation.width, h / annotation.height
    mask = np.zeros((h, w), dtype=bool)
    for obj in annotation.objects:
        if obj.label != label or (obj.difficult and not include_difficult):
            continue
        x0, y0, x1, y1 = obj.box
        # Small epsilon: exact multiples must not round outwards by float error.
        c0 = max(0, math.floor(x0 * sx + 1e-6))
        r0 = max(0, math.floor(y0 * sy + 1e-6))
        c1 = min(w, math.ceil(x1 * sx - 1e-6))
        r1 = min(h, math.ceil(y1 * sy - 1e-6))
        mask[r0:r1, c0:c1] = True
    return torch.from_numpy(mask)
