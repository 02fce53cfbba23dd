"""Top activating patches (Girshick et al., "Rich feature hierarchies", CVPR 2014, fig. 4).

For a unit (a channel of an indexed layer) the index holds, per image, the maximum over
positions and where it is. The ``k`` images with the largest maxima are the unit's top
images; the receptive field of the winning position (stored in the index, see
:mod:`.receptive`) is mapped from network-input pixels back through the resize / centre crop
to the original photograph, cropped, and drawn as a box on the full image.

A layer whose receptive field is as large as the network input has no patches to show:
every crop is (nearly) the whole photograph. :func:`patch_layer` therefore prefers, among the
indexed layers, the deepest one whose field is smaller than the input, and
:func:`whole_image_warning` says when the chosen layer's field covers the whole input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..io import DEFAULT_MAX_PIXELS, load_image, save_png
from .store import FeatureIndex

__all__ = [
    "Patch",
    "input_box_to_image",
    "patch_layer",
    "top_patches",
    "unit_strip",
    "whole_image_warning",
    "write_patch_pages",
]


@dataclass(frozen=True)
class Patch:
    """One of a unit's top activations.

    Attributes:
        entry: index entry; ``path``: its image file.
        value: the unit's maximum over positions in that image.
        position: ``(row, col)`` of the maximum in the layer's output.
        input_box: receptive field ``(top, left, bottom, right)`` in network-input pixels.
        image_box: the same box in the original image's pixels.
    """

    entry: int
    path: str
    value: float
    position: tuple[int, int]
    input_box: tuple[int, int, int, int]
    image_box: tuple[int, int, int, int]


def input_box_to_image(
    box: tuple[int, int, int, int], image_size: tuple[int, int], preprocess: dict
) -> tuple[int, int, int, int]:
    """Map a box in network-input pixels back to the original image (``image_size`` = W, H).

    ``preprocess`` holds ``crop`` and ``resize`` as in :class:`cnnlens.Preprocess`: the shorter
    side resized to ``resize`` then a centre crop, or (``resize`` None) a plain resize.
    """
    top, left, bottom, right = box
    w, h = image_size
    crop, resize = int(preprocess["crop"]), preprocess.get("resize")
    if resize is None:
        sx, sy, ox, oy = w / crop, h / crop, 0, 0
    else:
        scale = resize / min(w, h)
        nw, nh = max(crop, round(w * scale)), max(crop, round(h * scale))
        sx, sy, ox, oy = w / nw, h / nh, (nw - crop) // 2, (nh - crop) // 2
    t, b = round((top + oy) * sy), round((bottom + oy) * sy)
    lft, r = round((left + ox) * sx), round((right + ox) * sx)
    return max(t, 0), max(lft, 0), min(max(b, t + 1), h), min(max(r, lft + 1), w)


def _covers_input(index: FeatureIndex, layer: str) -> bool:
    """Whether one position of ``layer`` sees at least the whole network input (or no field
    is known, so patches fall back to the whole image)."""
    size = index.field_size(layer)
    h_in, w_in = index.meta["input_size"]
    return size is None or (size[0] >= h_in and size[1] >= w_in)


def patch_layer(index: FeatureIndex) -> str:
    """The indexed layer top patches show by default.

    The deepest layer whose receptive field is smaller than the network input (the largest
    such field); when every indexed layer sees the whole input, the one with the smallest
    field (see :func:`whole_image_warning`).
    """

    def area(layer: str) -> float:
        size = index.field_size(layer)
        return float("inf") if size is None else float(size[0] * size[1])

    real = [layer for layer in index.layers if not _covers_input(index, layer)]
    if real:
        return max(real, key=area)
    return min(index.layers, key=area)


def whole_image_warning(index: FeatureIndex, layer: str) -> str | None:
    """A one-line warning when ``layer``'s receptive field covers the whole input, else None."""
    if not _covers_input(index, layer):
        return None
    h_in, w_in = index.meta["input_size"]
    size = index.field_size(layer)
    field = "unknown" if size is None else f"{size[0]}x{size[1]} px"
    better = [x for x in index.layers if not _covers_input(index, x)]
    advice = (
        f"use --layer {patch_layer(index)}"
        if better
        else "index a shallower layer (cnnlens index --layers NAME; cnnlens layers MODEL "
        "lists them)"
    )
    return (
        f"the receptive field of {layer} ({field}) covers the whole {h_in}x{w_in} input, so "
        f"its patches are whole images; for real patches {advice}"
    )


def _field_box(index: FeatureIndex, layer: str, pos: tuple[int, int]) -> tuple[int, ...]:
    h_in, w_in = index.meta["input_size"]
    rf = (index.meta.get("receptive_fields") or {}).get(layer)
    if rf is None:
        return 0, 0, h_in, w_in
    (jy, loy, hiy), (jx, lox, hix) = rf["y"], rf["x"]
    i, j = pos
    top, bottom = max(i * jy + loy, 0), min(i * jy + hiy + 1, h_in)
    left, right = max(j * jx + lox, 0), min(j * jx + hix + 1, w_in)
    return top, left, bottom, right


def top_patches(index: FeatureIndex, layer: str, unit: int, k: int = 9) -> list[Patch]:
    """The ``k`` images where ``unit`` of ``layer`` fires most, strongest first.

    Args:
        index: an index holding ``layer``.
        layer: indexed layer name.
        unit: channel number.
        k: how many.

    Returns:
        Up to ``k`` :class:`Patch` (fewer when fewer images were indexed).
    """
    c, _, w = index.layer_shape(layer)
    if not 0 <= unit < c:
        raise ValueError(f"unit {unit} is out of range: {layer} has units 0-{c - 1}")
    mx, am = index.max_activations(layer)
    values = np.asarray(mx[:, unit], dtype=np.float32).copy()
    values[np.asarray(index.status) != 1] = -np.inf
    k = min(k, int(np.isfinite(values).sum()))
    if k == 0:
        return []
    best = np.argpartition(-values, k - 1)[:k]
    best = best[np.argsort(-values[best], kind="stable")]
    patches = []
    for e in best.tolist():
        flat = int(am[e, unit])
        pos = (flat // w, flat % w)
        box = _field_box(index, layer, pos)
        size = _image_size(index.paths[e], index.max_pixels)
        image_box = input_box_to_image(box, size, index.meta["preprocess"])
        patches.append(Patch(e, index.paths[e], float(values[e]), pos, box, image_box))
    return patches


def _image_size(path: str, max_pixels: int) -> tuple[int, int]:
    return load_image(path, max_pixels).size


def _crop(p: Patch, size: int, max_pixels: int) -> tuple[Image.Image, Image.Image]:
    img = load_image(p.path, max_pixels)
    t, lft, b, r = p.image_box
    crop = img.crop((lft, t, r, b)).resize((size, size), Image.BILINEAR)
    full = img.copy()
    full.thumbnail((size * 2, size * 2))
    s = full.width / img.width
    draw = ImageDraw.Draw(full)
    draw.rectangle([lft * s, t * s, r * s - 1, b * s - 1], outline=(255, 255, 255), width=3)
    draw.rectangle([lft * s, t * s, r * s - 1, b * s - 1], outline=(220, 30, 30), width=1)
    return crop, full


def unit_strip(
    patches: Sequence[Patch],
    size: int = 96,
    gap: int = 2,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """The patches side by side (a unit's row of the grid); images above ``max_pixels``
    pixels are refused (:class:`cnnlens.ImageError`), as when they were indexed."""
    return _strip([_crop(p, size, max_pixels)[0] for p in patches], size, gap)


def _strip(crops: Sequence[Image.Image], size: int, gap: int = 2) -> Image.Image:
    strip = Image.new("RGB", (max(1, len(crops)) * (size + gap), size), (255, 255, 255))
    for n, crop in enumerate(crops):
        strip.paste(crop, (n * (size + gap), 0))
    return strip


def write_patch_pages(
    index: FeatureIndex,
    layer: str | None,
    units: Sequence[int],
    out_dir: str | Path,
    k: int = 9,
    size: int = 96,
) -> Path:
    """Write one PNG strip per unit and one HTML page for the layer listing its units.

    Args:
        layer: an indexed layer; None picks one with :func:`patch_layer`.

    Returns:
        Path of the HTML page (``patches-<layer>.html`` inside ``out_dir``).
    """
    from ..featurevis.page import Section, write_page

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    layer = patch_layer(index) if layer is None else index.check_layer(layer)
    rf = (index.meta.get("receptive_fields") or {}).get(layer)
    note = (
        "whole image (no receptive field known)"
        if rf is None
        else f"receptive field {rf['y'][2] - rf['y'][1] + 1} px, stride {rf['y'][0]} "
        f"({rf['method']})"
    )
    if rf is not None and _covers_input(index, layer):
        note += "; it covers the whole input, so the patches are whole images"
    sections = []
    for unit in units:
        patches = top_patches(index, layer, unit, k)
        crops = [_crop(p, size, index.max_pixels) for p in patches]
        strip = _strip([crop for crop, _ in crops], size)
        save_png(strip, out / f"patches-{layer}-unit{unit}.png")
        figures = [
            (full, f"{p.value:.3g} · {Path(p.path).name} @ {p.position}")
            for p, (_, full) in zip(patches, crops)
        ]
        sections.append(Section(f"unit {unit}", None, strip, figures, figure_width=size * 2))
    return write_page(
        out / f"patches-{layer}.html",
        f"Top patches of {layer} ({index.meta['model']})",
        sections,
        {"index": str(index.root), "layer": layer, "images": len(index.ok), "field": note},
    )
