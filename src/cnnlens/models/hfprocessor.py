"""A Hugging Face model folder's preprocessing and class names, read without transformers.

``preprocessor_config.json`` (written by an image processor's ``save_pretrained``)
becomes a :class:`Preprocess`; ``config.json``'s ``id2label`` becomes class names.
The rules follow the processors of the image classifiers transformers ships:

- ``size: {height, width}`` resizes the whole photo to that square (ViT, Swin,
  BEiT); with ``do_center_crop`` a ``crop_size`` crop follows (DeiT). Such a
  processor stretches a photo to the square before cropping, where cnnlens keeps
  the aspect ratio: identical on square photos, close on others.
- ``size: {shortest_edge}`` resizes the shorter side: ConvNeXt/ResNet's processor
  to ``shortest_edge / crop_pct`` then crops ``shortest_edge`` (below 384 px;
  from 384 it resizes the whole photo), LeViT's to ``256/224 * shortest_edge``,
  others to ``shortest_edge`` before a ``crop_size`` crop (BiT, CLIP-style).
- ``do_rescale``/``rescale_factor`` and ``do_normalize``/``image_mean``/``image_std``
  fold into cnnlens's mean and std, which act on pixels scaled to [0, 1].
- PIL's lanczos filter becomes bicubic, box and hamming bilinear (the filters
  :class:`Preprocess` has).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..core.errors import ModelError
from .base import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from .labels import default_names

PROCESSOR_FILE = "preprocessor_config.json"
# PIL resampling codes (PIL.Image.Resampling) -> the closest filter Preprocess has
_RESAMPLE = {0: "nearest", 1: "bicubic", 2: "bilinear", 3: "bicubic", 4: "bilinear", 5: "bilinear"}
_RESAMPLE_NAMES = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}


def read_processor_config(folder: Path) -> dict | None:
    """``folder``'s ``preprocessor_config.json`` as a dict, or None when there is none.

    Raises:
        ModelError: a file that is not a JSON object.
    """
    path = folder / PROCESSOR_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read {path}: {e}; fix or delete the file") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path} is not a JSON object; fix or delete the file")
    return data


def preprocess_from(
    proc: dict | None, image_size: int | None = None, where: str = ""
) -> Preprocess:
    """The :class:`Preprocess` an image-processor config describes.

    Args:
        proc: the parsed ``preprocessor_config.json``; None means cnnlens's defaults
            (ImageNet mean and std, shorter side to ``side * 256/224``, centre crop
            ``side``) at ``image_size`` (the model config's, else 224).
        image_size: the model config's ``image_size``, if it has one.
        where: the file, for messages.

    Raises:
        ModelError: a size cnnlens cannot feed (not square, or a form it does not read).
    """
    if proc is None:
        side = image_size or 224
        return Preprocess(crop=side, resize=round(side * 256 / 224))
    mean, std = _normalisation(proc, where)
    crop, resize = _geometry(proc, image_size, where)
    interpolation = _interpolation(proc.get("resample", 2))
    return Preprocess(crop=crop, resize=resize, mean=mean, std=std, interpolation=interpolation)


def _triple(value, default, key: str, where: str) -> tuple[float, float, float]:
    if value is None:
        return default
    if isinstance(value, (int, float)):
        return (float(value),) * 3
    if isinstance(value, (list, tuple)) and len(value) == 3:
        return tuple(float(v) for v in value)
    raise ModelError(f"{where}: {key} {value!r} is not one number per RGB channel")


def _normalisation(proc: dict, where: str):
    """cnnlens divides pixels by 255; HF multiplies them by ``rescale_factor`` (or not at
    all): (p*f - m)/s equals (p/255 - m/(255 f)) / (s/(255 f))."""
    factor = float(proc.get("rescale_factor", 1 / 255)) if proc.get("do_rescale", True) else 1.0
    k = 255.0 * factor
    if proc.get("do_normalize", True):
        mean = _triple(proc.get("image_mean"), IMAGENET_MEAN, "image_mean", where)
        std = _triple(proc.get("image_std"), IMAGENET_STD, "image_std", where)
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if any(s == 0 for s in std) or k == 0:
        raise ModelError(f"{where}: image_std and rescale_factor must not be zero")
    return tuple(m / k for m in mean), tuple(s / k for s in std)


def _as_size(value, shortest: bool) -> dict:
    """A size as a dict: an old-style int is a square, or (``shortest``) a shorter side."""
    if isinstance(value, int):
        return {"shortest_edge": value} if shortest else {"height": value, "width": value}
    return dict(value) if isinstance(value, dict) else {}


def _square(size: dict, key: str, where: str) -> int | None:
    if "height" not in size or "width" not in size:
        return None
    h, w = int(size["height"]), int(size["width"])
    if h != w:
        raise ModelError(
            f"{where}: {key} {h}x{w} is not square and cnnlens feeds square inputs; "
            f"set {key} to a square in the file"
        )
    return h


def _geometry(proc: dict, image_size: int | None, where: str) -> tuple[int, int | None]:
    """(crop, resize) for :class:`Preprocess`: resize None means the whole photo to crop x crop."""
    crop_pct = proc.get("crop_pct")
    center = bool(proc.get("do_center_crop", False))
    size = _as_size(proc.get("size"), shortest=bool(crop_pct) or center)
    crop = _square(_as_size(proc.get("crop_size"), shortest=False), "crop_size", where)
    if not center:
        crop = None
    if not proc.get("do_resize", True):
        side = crop or image_size or 224
        return side, side
    side = _square(size, "size", where)
    if side is not None:
        return (crop, side) if crop else (side, None)
    edge = size.get("shortest_edge")
    if edge is None:
        raise ModelError(
            f"{where}: size {proc.get('size')!r} is neither height/width nor shortest_edge, "
            "which is what cnnlens reads; write one of those in the file"
        )
    edge = int(edge)
    if "levit" in str(proc.get("image_processor_type", "")).lower():
        return crop or edge, int(256 / 224 * edge)
    if crop_pct:
        if not center and edge >= 384:  # ConvNeXt's processor: no crop from 384 px
            return edge, None
        return crop or edge, int(edge / float(crop_pct))
    return crop or edge, edge


def _interpolation(resample) -> str:
    if isinstance(resample, str):
        resample = _RESAMPLE_NAMES.get(resample.lower(), 2)
    return _RESAMPLE.get(int(resample), "bilinear")


def class_names_from(id2label: dict | None, num_labels: int) -> list[str]:
    """Class names from ``config.id2label``; transformers' placeholders (``LABEL_0``,
    ``LABEL_1``, ...) mean unknown: ImageNet's names for 1000 classes, else ``class_i``."""
    labels = {int(k): str(v) for k, v in (id2label or {}).items()}
    n = max(num_labels, max(labels, default=-1) + 1)
    if all(v == f"LABEL_{k}" for k, v in labels.items()):
        return default_names(n)
    return [labels.get(i, f"class_{i}") for i in range(n)]
