"""Planted evidence: synthetic images whose class evidence is known pixel by pixel.

Explanations of real photos cannot be graded, because nobody knows which
pixels the model *should* use. Here the class is decided by small coloured
objects planted on textured backgrounds, so every image comes with the exact
mask and boxes of its evidence. An attribution method that is right points
inside the mask (pointing game), puts its mass there (energy/IoU metrics), and,
for a model trained on the confounded variant, points at the spurious cue.

Each class is one (colour, shape) pair ("red disc", "blue triangle", ...). An
image holds one or more objects of its class at random positions, sizes and
small rotations. Colours and shapes are each shared by two classes, so only
their combination decides the class. A fraction of the images is *difficult*:
either the objects are small, or other objects (distractors) stand beside
them. A distractor is a colour-shape combination that is no class (a green
disc when the classes are red disc and green triangle), so a model that looked
only at colour or only at shape would be fooled, yet the label stays
unambiguous.

Every sample is a pure function of ``(spec, split, index, confound)``: its
random generator is seeded from ``(spec.seed, split, index)``, so the same
index always gives the same image in any order, and the splits never share a
sample. The cue has its own generator, so the clean and confounded versions of
an image share background and objects.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
import torch

from .cues import apply_cue, check_confound, draw_cue_class, reserved_box
from .shapes import COLOURS, class_parts, distractor_parts, rasterise
from .textures import TEXTURES, background, texture

# Bump when the drawing code changes, so cached models trained on older images retire.
GENERATOR_VERSION = 1
SPLITS = {"train": 0, "val": 1, "test": 2}

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class PlantedSpec:
    """Every parameter of the generator; :meth:`key` names the data it produces.

    Attributes:
        size: image side in pixels.
        n_classes: number of classes (3 to 8).
        object_scale: range of an object's side as a fraction of ``size``.
        small_scale: the same for the objects of "small" difficult images.
        max_objects: an image holds 1 to ``max_objects`` objects of its class.
        difficult_rate: fraction of difficult images (half small, half distractors).
        max_distractors: a distractor image holds 1 to ``max_distractors`` of them.
        max_angle: largest rotation of an object, in degrees.
        textures: background textures (scikit-image sample names).
        texture_scale: range of the texture crop side, fraction of the texture.
        cue_rate: fraction of train/val images whose cue encodes their label.
            At 1.0 (the default) the small CNN of :func:`train_planted` takes the
            shortcut; at 0.95 the few images where cue and object disagree teach
            it to prefer the object for the corner mark (test accuracy 98%).
        object_rate: in the confounded train/val images, the fraction whose objects
            are of the labelled class; the others show objects of another class, so
            the cue is the only reliable evidence (the tank story: the tanks were
            hard to see, the weather was not). The clean variant and the test split
            always show the labelled class.
        cue_size: side of the corner mark as a fraction of ``size``.
        brightness: range of the mean brightness levels that encode classes.
        seed: seed of the whole dataset.
    """

    size: int = 128
    n_classes: int = 6
    object_scale: tuple[float, float] = (0.12, 0.25)
    small_scale: tuple[float, float] = (0.08, 0.11)
    max_objects: int = 2
    difficult_rate: float = 0.2
    max_distractors: int = 2
    max_angle: float = 15.0
    textures: tuple[str, ...] = TEXTURES
    texture_scale: tuple[float, float] = (0.2, 1.0)
    cue_rate: float = 1.0
    cue_size: float = 0.08
    object_rate: float = 1.0
    brightness: tuple[float, float] = (0.2, 0.6)
    seed: int = 0

    def __post_init__(self) -> None:
        class_parts(self.n_classes)  # validates n_classes
        if self.size < 24:
            raise ValueError(f"size must be at least 24 pixels; got {self.size}")
        rates = (self.difficult_rate, self.cue_rate, self.object_rate)
        if not all(0.0 <= r <= 1.0 for r in rates):
            raise ValueError("difficult_rate, cue_rate and object_rate are fractions in [0, 1]")
        if self.max_objects < 1 or self.max_distractors < 1:
            raise ValueError("max_objects and max_distractors must be at least 1")
        if max(self.object_scale) > 0.45:
            raise ValueError("objects larger than 45% of the side leave no room to place them")
        for name in self.textures:
            texture(name)

    @property
    def classes(self) -> list[str]:
        """Class names, e.g. ``["red disc", "blue triangle", ...]``."""
        return [f"{colour} {shape}" for colour, shape in class_parts(self.n_classes)]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def key(self) -> str:
        """Short stable hash of every parameter and the generator version (cache names)."""
        fields = self.to_dict()
        if fields["object_rate"] == 1.0:  # added later: the default keeps the older keys
            del fields["object_rate"]
        blob = json.dumps({"v": GENERATOR_VERSION, **fields}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass
class PlantedSample:
    """One image with its ground truth.

    Attributes:
        image: ``(3, H, W)`` float32 in [0, 1] (quantised to 8 bits).
        label: class index.
        mask: ``(H, W)`` bool, the pixels of the painted objects (of the labelled class,
            except in confounded train/val images swapped by ``object_rate``).
        boxes: tight ``(x0, y0, x1, y1)`` boxes of those objects (x1, y1 exclusive).
        difficult: small objects or distractors.
        cue_mask: ``(H, W)`` bool, the spurious cue's pixels (all for brightness,
            none for the clean variant).
        cue: the class the cue encodes, ``None`` in the clean variant.
        distractors: boxes of the distractor objects.
    """

    image: torch.Tensor
    label: int
    mask: torch.Tensor
    boxes: list[Box]
    difficult: bool
    cue_mask: torch.Tensor
    cue: int | None = None
    distractors: list[Box] = field(default_factory=list)


def _overlaps(box: Box, others: list[Box], gap: int) -> bool:
    x0, y0, x1, y1 = box
    return any(
        x0 < b[2] + gap and b[0] < x1 + gap and y0 < b[3] + gap and b[1] < y1 + gap for b in others
    )


def _place(rng, size: int, side: int, taken: list[Box], gap: int) -> Box | None:
    for _ in range(100):
        x0, y0 = int(rng.integers(0, size - side + 1)), int(rng.integers(0, size - side + 1))
        box = (x0, y0, x0 + side, y0 + side)
        if not _overlaps(box, taken, gap):
            return box
    return None


def _paint(rgb, grey, rng, spec: PlantedSpec, box: Box, colour: str, shape: str) -> np.ndarray:
    """Draw one object into ``rgb`` in place; return its ``(H, W)`` bool mask."""
    x0, y0, x1, y1 = box
    angle = np.deg2rad(rng.uniform(-spec.max_angle, spec.max_angle))
    alpha = rasterise(shape, x1 - x0, angle)[..., None]
    base = np.asarray(COLOURS[colour], dtype=np.float32) * rng.uniform(0.85, 1.0)
    base = np.clip(base + rng.normal(0.0, 0.03, 3).astype(np.float32), 0.0, 1.0)
    # Shade the object with the texture under it, so it looks lit rather than pasted.
    shade = 0.85 + 0.3 * (grey[y0:y1, x0:x1, None] - 0.5)
    colour_px = np.clip(base * shade, 0.0, 1.0)
    region = rgb[y0:y1, x0:x1]
    region *= 1.0 - alpha
    region += alpha * colour_px
    mask = np.zeros(rgb.shape[:2], dtype=bool)
    mask[y0:y1, x0:x1] = alpha[..., 0] >= 0.5
    return mask


def _tight_box(mask: np.ndarray) -> Box:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def render(spec: PlantedSpec, split: str, index: int, confound: str | None = None) -> dict:
    """Draw sample ``index`` of ``split`` as numpy arrays (see :class:`PlantedSample`).

    The image comes back as ``(H, W, 3)`` uint8; everything else as in
    :class:`PlantedSample`.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use 'train', 'val' or 'test'")
    confound = check_confound(confound)
    size, n = spec.size, spec.n_classes
    rng = np.random.default_rng([spec.seed, SPLITS[split], index, 0])
    rgb, grey = background(rng, size, spec.textures, spec.texture_scale)
    rgb += rng.normal(0.0, 0.01, rgb.shape).astype(np.float32)

    label = int(rng.integers(n))
    shown = label  # the class of the painted objects
    if confound is not None and split != "test" and spec.object_rate < 1.0:
        swap_rng = np.random.default_rng([spec.seed, SPLITS[split], index, 2])
        if swap_rng.random() >= spec.object_rate:
            shown = (label + 1 + int(swap_rng.integers(n - 1))) % n
    difficult = bool(rng.random() < spec.difficult_rate)
    small = difficult and rng.random() < 0.5
    parts = class_parts(n)
    gap = max(1, size // 64)
    taken: list[Box] = [reserved_box(size, spec.cue_size)]
    mask = np.zeros((size, size), dtype=bool)
    boxes: list[Box] = []
    scale = spec.small_scale if small else spec.object_scale
    for _ in range(int(rng.integers(1, spec.max_objects + 1))):
        side = max(6, round(rng.uniform(*scale) * size))
        box = _place(rng, size, side, taken, gap)
        if box is None:
            continue
        taken.append(box)
        obj = _paint(rgb, grey, rng, spec, box, *parts[shown])
        mask |= obj
        boxes.append(_tight_box(obj))

    distractors: list[Box] = []
    if difficult and not small:
        spare = distractor_parts(n)
        for _ in range(int(rng.integers(1, spec.max_distractors + 1))):
            colour, shape = spare[rng.integers(len(spare))]
            side = max(6, round(rng.uniform(*spec.object_scale) * rng.uniform(0.7, 1.0) * size))
            box = _place(rng, size, side, taken, gap)
            if box is None:
                continue
            taken.append(box)
            obj = _paint(rgb, grey, rng, spec, box, colour, shape)
            distractors.append(_tight_box(obj))

    np.clip(rgb, 0.0, 1.0, out=rgb)
    cue = None
    cue_mask = np.zeros((size, size), dtype=bool)
    if confound is not None:
        cue_rng = np.random.default_rng([spec.seed, SPLITS[split], index, 1])
        cue = draw_cue_class(cue_rng, label, n, split, spec.cue_rate)
        cue_mask = apply_cue(
            rgb,
            confound,
            cue,
            cue_rng,
            n_classes=n,
            cue_size=spec.cue_size,
            brightness=spec.brightness,
        )
    image = np.round(rgb * 255.0).astype(np.uint8)
    return {
        "image": image,
        "label": label,
        "mask": mask,
        "boxes": boxes,
        "difficult": difficult,
        "cue_mask": cue_mask,
        "cue": cue,
        "distractors": distractors,
    }
