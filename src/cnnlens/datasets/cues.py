"""Spurious cues for the confounded variant of the planted dataset.

A confounded training set teaches a shortcut: a cue that is not the object
predicts the class (in ``cue_rate`` of the images; all of them by default).
In the test split the cue is drawn independently of the class, so a model that
learned the cue instead of the object loses accuracy there, and its explanation
maps should point at the cue rather than at the object.

* ``"corner"``: a small square mark near the top-left corner whose colour
  encodes the cue's class (a watermark, like the source tag on the horse photos
  of PASCAL VOC that Lapuschkin et al. 2019 found a classifier relied on). Mark
  colours are never object colours (:data:`~.shapes.CUE_COLOURS`).
  Objects are never placed in that corner, in any variant, so the clean and
  confounded versions of an image differ only by the mark.
* ``"brightness"``: the whole image is rescaled so its mean brightness equals a
  level that encodes the cue's class (the "tank" story: photos of one class
  were taken on cloudy days).
"""

from __future__ import annotations

import numpy as np

from .shapes import CUE_COLOURS

CONFOUNDS = ("brightness", "corner")


def check_confound(confound: str | None) -> str | None:
    """Validate a confound name (``None`` means the clean variant)."""
    if confound in (None, "none", "clean"):
        return None
    if confound not in CONFOUNDS:
        raise ValueError(f"unknown confound {confound!r}; use None, 'brightness' or 'corner'")
    return confound


def corner_box(size: int, cue_size: float) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` of the corner mark for an image of side ``size``."""
    side = max(2, round(cue_size * size))
    inset = max(1, round(0.02 * size))
    return inset, inset, inset + side, inset + side


def reserved_box(size: int, cue_size: float) -> tuple[int, int, int, int]:
    """The corner region no object may enter (the mark plus a margin)."""
    x0, y0, x1, y1 = corner_box(size, cue_size)
    margin = max(2, round(0.03 * size))
    return 0, 0, x1 + margin, y1 + margin


def brightness_levels(n_classes: int, lo: float, hi: float) -> np.ndarray:
    """Mean brightness that encodes each class, evenly spaced in ``[lo, hi]``."""
    return np.linspace(lo, hi, n_classes, dtype=np.float32)


def draw_cue_class(
    rng: np.random.Generator, label: int, n_classes: int, split: str, cue_rate: float
) -> int:
    """The class the cue encodes: mostly the label in train/val, independent in test."""
    if split == "test":
        return int(rng.integers(n_classes))
    if rng.random() < cue_rate:
        return label
    other = int(rng.integers(n_classes - 1))
    return other + (other >= label)


def apply_cue(
    rgb: np.ndarray,
    confound: str,
    cue: int,
    rng: np.random.Generator,
    *,
    n_classes: int,
    cue_size: float,
    brightness: tuple[float, float],
) -> np.ndarray:
    """Paint the cue into ``rgb`` (``(H, W, 3)``, modified in place); return its mask."""
    size = rgb.shape[0]
    mask = np.zeros(rgb.shape[:2], dtype=bool)
    if confound == "corner":
        x0, y0, x1, y1 = corner_box(size, cue_size)
        rgb[y0:y1, x0:x1] = np.asarray(list(CUE_COLOURS.values())[cue], dtype=np.float32)
        mask[y0:y1, x0:x1] = True
    elif confound == "brightness":
        target = brightness_levels(n_classes, *brightness)[cue] + rng.uniform(-0.01, 0.01)
        rgb *= target / max(float(rgb.mean()), 1e-3)
        np.clip(rgb, 0.0, 1.0, out=rgb)
        mask[:] = True
    return mask
