"""Synthetic scenicness: landscapes made of known attributes, with a known score.

The real data of SIAM (Marcos, Lobry & Tuia, "Semantically Interpretable
Activation Maps: what-where-how explanations within CNNs", ICCV workshops
2019, arXiv 1909.08442) — SUN Attributes and ScenicOrNot — cannot be bundled,
so this module draws scenes whose attributes and score are known exactly.

A scene is a Voronoi partition of the image on warped coordinates (so borders
wander like real ones) into 2 to 6 regions. Each region is either one of the
:data:`ATTRIBUTES` (sky, water, grass, ...) painted with that attribute's
texture, or an unlabelled "clutter" region (a muted scikit-image texture from
:func:`~cnnlens.datasets.textures.background`). The clutter matters: without it
the areas would always sum to one and the coefficients below would only be
identifiable up to a common shift.

With ``a_k`` the fraction of the image covered by attribute ``k``, the score is

    y = b + sum_k c_k a_k + eps,    eps ~ N(0, noise^2)

with the true coefficients :data:`COEFFICIENTS`, ``b = INTERCEPT``. An
attribute is *present* when ``a_k >= min_area``. Every sample carries its
per-pixel label map (0 = clutter, ``k + 1`` = attribute ``k``), so attribute
maps can be graded with the pointing game.

Sample ``i`` of a split is a pure function of ``(seed, split, i)``: the same
index always gives the same scene, in any order, and splits never share one.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..core.progress import task
from .textures import background, texture

ATTRIBUTES = ("sky", "water", "grass", "forest", "rock", "buildings", "sand", "snow")
# True linear effect of each attribute's area on the score. "sand" sits below the noise
# level on purpose: a model is not asked to recover its sign.
COEFFICIENTS = (1.0, 2.5, 0.8, 1.8, -0.6, -2.5, 0.05, 1.4)
INTERCEPT = 3.0
SPLITS = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class ScenicSpec:
    """Generator parameters.

    Attributes:
        size: image side in pixels.
        regions: range (inclusive) of the number of Voronoi regions.
        clutter_rate: probability that a region is unlabelled clutter.
        noise: standard deviation of the score noise.
        min_area: area fraction from which an attribute counts as present.
        seed: seed of the whole dataset.
    """

    size: int = 160
    regions: tuple[int, int] = (2, 6)
    clutter_rate: float = 0.25
    noise: float = 0.1
    min_area: float = 0.02
    seed: int = 0


@dataclass
class ScenicData:
    """A batch of scenes.

    Attributes:
        images: ``(N, S, S, 3)`` uint8.
        labels: ``(N, S, S)`` uint8 region labels (0 clutter, ``k + 1`` attribute ``k``).
        areas: ``(N, K)`` float32 area fractions.
        present: ``(N, K)`` float32 presence labels (``areas >= min_area``).
        target: ``(N,)`` float32 scores.
    """

    images: np.ndarray
    labels: np.ndarray
    areas: np.ndarray
    present: np.ndarray
    target: np.ndarray
    attributes: tuple[str, ...] = ATTRIBUTES

    def __len__(self) -> int:
        return len(self.images)

    def masks(self, index: int | slice = slice(None)) -> np.ndarray:
        """``(N, K, S, S)`` bool per-attribute masks of the selected scenes."""
        lab = self.labels[index]
        return lab[:, None] == (np.arange(len(self.attributes)) + 1)[:, None, None]


def _smooth_noise(rng: np.random.Generator, size: int, cell: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: random values on a coarse grid, resized bicubically."""
    n = max(2, size // cell + 2)
    coarse = (rng.random((n, n)) * 255).astype(np.uint8)
    img = Image.fromarray(coarse).resize((size, size), Image.BICUBIC)
    return np.asarray(img, dtype=np.float32) / 255.0


def _crop(rng: np.random.Generator, name: str, size: int, scale: tuple[float, float]):
    src = texture(name)
    h, w = src.shape
    side = max(8, int(rng.uniform(*scale) * min(h, w)))
    top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    crop = np.rot90(src[top : top + side, left : left + side], k=int(rng.integers(4)))
    img = Image.fromarray(np.ascontiguousarray(crop)).resize((size, size), Image.BILINEAR)
    g = np.asarray(img, dtype=np.float32) / 255.0
    return np.clip((g - g.mean()) / (g.std() + 1e-6) * 0.2 + 0.5, 0.0, 1.0)


def _blend(g: np.ndarray, dark, light) -> np.ndarray:
    dark, light = np.asarray(dark, np.float32), np.asarray(light, np.float32)
    return dark + g[..., None] * (light - dark)


def _paint(rng: np.random.Generator, name: str, size: int) -> np.ndarray:
    """A full ``(size, size, 3)`` float image of one attribute's texture."""
    jitter = rng.uniform(0.9, 1.1)
    y = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None] * np.ones((1, size), np.float32)
    if name == "sky":
        clouds = np.clip(_smooth_noise(rng, size, 24) * 1.6 - 0.8, 0, 1)
        base = _blend(y, (0.35, 0.55, 0.9), (0.7, 0.82, 0.98))
        rgb = base + clouds[..., None] * (0.95 - base)
    elif name == "water":
        wobble = _smooth_noise(rng, size, 16) * 3.0
        period = rng.uniform(5.0, 9.0)
        ripple = 0.5 + 0.5 * np.sin(2 * np.pi * (y * size / period + wobble))
        rgb = _blend(ripple, (0.05, 0.2, 0.45), (0.2, 0.45, 0.7))
    elif name == "grass":
        rgb = _blend(_crop(rng, "grass", size, (0.2, 0.5)), (0.15, 0.4, 0.05), (0.55, 0.85, 0.3))
    elif name == "forest":
        blobs = 0.6 * _smooth_noise(rng, size, 5) + 0.4 * _smooth_noise(rng, size, 12)
        rgb = _blend(blobs, (0.0, 0.12, 0.03), (0.12, 0.38, 0.1))
    elif name == "rock":
        rgb = _blend(_crop(rng, "gravel", size, (0.3, 0.7)), (0.22, 0.2, 0.18), (0.62, 0.6, 0.56))
    elif name == "buildings":
        rgb = _blend(_crop(rng, "brick", size, (0.3, 0.6)), (0.35, 0.12, 0.08), (0.85, 0.5, 0.4))
    elif name == "sand":
        grain = rng.random((size, size)).astype(np.float32)
        dunes = 0.5 + 0.5 * np.sin(2 * np.pi * (y * size / 30.0 + _smooth_noise(rng, size, 40)))
        rgb = _blend(0.5 * grain + 0.5 * dunes, (0.78, 0.66, 0.42), (0.95, 0.86, 0.62))
    elif name == "snow":
        shade = _smooth_noise(rng, size, 20)
        rgb = _blend(shade, (0.8, 0.84, 0.92), (0.98, 0.98, 1.0))
    else:
        raise ValueError(f"unknown attribute {name!r}; choose from {', '.join(ATTRIBUTES)}")
    return np.clip(rgb * jitter, 0.0, 1.0)


def _layout(rng: np.random.Generator, size: int, n: int) -> np.ndarray:
    """``(size, size)`` region index in ``[0, n)``: Voronoi cells on warped coordinates."""
    seeds = rng.random((n, 2)).astype(np.float32)
    yy, xx = np.meshgrid(*(np.linspace(0, 1, size, dtype=np.float32),) * 2, indexing="ij")
    amp = rng.uniform(0.03, 0.1)
    yy = yy + amp * (_smooth_noise(rng, size, 40) - 0.5)
    xx = xx + amp * (_smooth_noise(rng, size, 40) - 0.5)
    d = (yy[None] - seeds[:, 0, None, None]) ** 2 + (xx[None] - seeds[:, 1, None, None]) ** 2
    return d.argmin(0)


def sample(spec: ScenicSpec, split: str, index: int):
    """One scene: ``(image (S, S, 3) uint8, labels (S, S) uint8, areas (K,), target)``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    rng = np.random.default_rng([spec.seed, SPLITS[split], index])
    size, k = spec.size, len(ATTRIBUTES)
    n = int(rng.integers(spec.regions[0], spec.regions[1] + 1))
    region = _layout(rng, size, n)
    labels = np.zeros((size, size), np.uint8)
    image = np.zeros((size, size, 3), np.float32)
    for r in range(n):
        inside = region == r
        if rng.random() < spec.clutter_rate:
            rgb, grey = background(rng, size, ("moon", "cell", "camera"), (0.3, 0.8))
            rgb = 0.6 * grey[..., None] * 0.7 + 0.4 * rgb + 0.1
        else:
            a = int(rng.integers(k))
            labels[inside] = a + 1
            rgb = _paint(rng, ATTRIBUTES[a], size)
        image[inside] = rgb[inside]
    areas = np.bincount(labels.ravel(), minlength=k + 1)[1:].astype(np.float32) / size**2
    target = INTERCEPT + float(np.dot(COEFFICIENTS, areas)) + spec.noise * rng.standard_normal()
    pixels = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    return pixels, labels, areas, np.float32(target)


def scenic(n: int, split: str = "train", spec: ScenicSpec | None = None) -> ScenicData:
    """Draw scenes ``0 .. n-1`` of a split (deterministic; see the module docstring).

    Args:
        n: number of scenes.
        split: ``"train"``, ``"val"`` or ``"test"``.
        spec: generator parameters (default :class:`ScenicSpec`).
    """
    spec = spec or ScenicSpec()
    parts = [sample(spec, split, i) for i in range(n)]
    areas = np.stack([p[2] for p in parts]) if parts else np.zeros((0, len(ATTRIBUTES)))
    return ScenicData(
        images=np.stack([p[0] for p in parts]),
        labels=np.stack([p[1] for p in parts]),
        areas=areas.astype(np.float32),
        present=(areas >= spec.min_area).astype(np.float32),
        target=np.array([p[3] for p in parts], dtype=np.float32),
    )


def true_coefficients() -> dict[str, float]:
    """``{attribute: c_k}`` of the score."""
    return dict(zip(ATTRIBUTES, COEFFICIENTS))


def write_folder(
    out_dir: str | Path,
    counts: dict[str, int] | None = None,
    spec: ScenicSpec | None = None,
) -> Path:
    """Write scenes as a dataset folder: ``images/``, ``masks/``, ``scenic.csv``, ``truth.json``.

    ``scenic.csv`` has the columns ``path, split, <attribute>..., scenicness`` (presence
    0/1 per attribute); ``masks/<name>.png`` holds each scene's label map (0 clutter,
    ``k + 1`` attribute ``k``); ``truth.json`` the coefficients, intercept and spec.

    Args:
        out_dir: the folder (created).
        counts: scenes per split (default 1500 train, 300 val, 500 test).
        spec: generator parameters.

    Returns:
        The path of ``scenic.csv``.
    """
    spec = spec or ScenicSpec()
    counts = counts or {"train": 1500, "val": 300, "test": 500}
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    rows = []
    with task("scenic scenes", sum(counts.values())) as advance:
        for split, n in counts.items():
            for i in range(n):
                pixels, labels, areas, target = sample(spec, split, i)
                name = f"{split}_{i:05d}.png"
                Image.fromarray(pixels).save(out / "images" / name)
                Image.fromarray(labels).save(out / "masks" / name)
                present = ["1" if a >= spec.min_area else "0" for a in areas]
                rows.append([f"images/{name}", split, *present, f"{float(target):.6f}"])
                advance(1)
    csv_path = out / "scenic.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "split", *ATTRIBUTES, "scenicness"])
        writer.writerows(rows)
    truth = {
        "coefficients": true_coefficients(),
        "intercept": INTERCEPT,
        "spec": dataclasses.asdict(spec),
        "counts": counts,
    }
    (out / "truth.json").write_text(json.dumps(truth, indent=2))
    return csv_path


def read_folder(out_dir: str | Path, split: str = "test") -> tuple[ScenicData, ScenicSpec]:
    """Read back one split of a folder written by :func:`write_folder`."""
    out = Path(out_dir)
    truth = json.loads((out / "truth.json").read_text())
    raw = truth["spec"]
    spec = ScenicSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
    images, labels, targets = [], [], []
    with open(out / "scenic.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["split"] != split:
                continue
            images.append(np.asarray(Image.open(out / row["path"]).convert("RGB")))
            labels.append(np.asarray(Image.open(out / "masks" / Path(row["path"]).name)))
            targets.append(float(row["scenicness"]))
    if not images:
        raise ValueError(f"{out / 'scenic.csv'} has no {split!r} rows")
    lab = np.stack(labels)
    k = len(ATTRIBUTES)
    areas = np.stack([np.bincount(m.ravel(), minlength=k + 1)[1:] for m in lab]) / lab[0].size
    data = ScenicData(
        images=np.stack(images),
        labels=lab,
        areas=areas.astype(np.float32),
        present=(areas >= spec.min_area).astype(np.float32),
        target=np.array(targets, np.float32),
    )
    return data, spec
