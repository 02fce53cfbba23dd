"""Data for SIAM training: an image folder with a CSV, and the synthetic scenes.

Real attribute datasets (SUN Attributes, ScenicOrNot; Marcos, Lobry & Tuia 2019
train on both, alternating batches) are downloaded by their users and described
by a CSV:

    path,split,<attribute 1>,...,<attribute K>,<target>
    images/a.jpg,train,1,0,...,0.33,4.2

``path`` is relative to the CSV's folder (or absolute); ``split`` is optional;
attribute values are in [0, 1] (votes or 0/1), an empty cell means "unknown"
(ignored by the loss), and so does an empty target. A dataset with only
attribute labels (SUN Attributes) and one with only targets (ScenicOrNot) are two
CSVs, trained together by alternating their batches.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..core.progress import task
from ..io import load_image
from .train import SiamData

RESERVED = ("path", "split")


@dataclass
class CsvData:
    """A CSV folder loaded for training: the samples and what their columns mean."""

    data: SiamData
    attributes: list[str]
    target: str | None
    classes: list[str] | None
    paths: list[Path]


def _value(text: str) -> float:
    text = (text or "").strip()
    return float(text) if text else math.nan


def load_rgb(path: str | Path, size: int) -> np.ndarray:
    """An image file as ``(size, size, 3)`` uint8, the whole picture resized (no crop)."""
    img = load_image(path).convert("RGB").resize((size, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """``(N, S, S, 3)`` uint8 array -> ``(N, 3, S, S)`` uint8 tensor."""
    return torch.from_numpy(np.array(images, dtype=np.uint8)).permute(0, 3, 1, 2).contiguous()


def read_csv(
    csv_path: str | Path,
    size: int = 160,
    *,
    attributes: list[str] | None = None,
    target: str | None = "target",
    split: str | None = None,
    task_kind: str = "regression",
    classes: list[str] | None = None,
) -> CsvData:
    """Load the images and labels of a CSV folder (module docstring).

    Args:
        csv_path: the CSV file.
        size: images are resized to ``size x size``.
        attributes: attribute columns (default: every column but path, split, target).
        target: the target column (None: attribute labels only).
        split: keep only rows of this split (needs a ``split`` column).
        task_kind: ``"regression"`` (float target) or ``"classification"`` (class names).
        classes: class order for classification (default: sorted names found).
    """
    csv_path = Path(csv_path)
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        rows = [r for r in reader if split is None or r.get("split") == split]
    if "path" not in columns:
        raise ValueError(f"{csv_path} needs a 'path' column; it has {', '.join(columns)}")
    if split is not None and "split" not in columns:
        raise ValueError(f"{csv_path} has no 'split' column to select {split!r}")
    if target is not None and target not in columns:
        raise ValueError(
            f"{csv_path} has no target column {target!r}; its columns: {', '.join(columns)}"
        )
    names = attributes or [c for c in columns if c not in (*RESERVED, target)]
    missing = [a for a in names if a not in columns]
    if missing:
        raise ValueError(f"{csv_path} lacks attribute column(s) {', '.join(missing)}")
    paths = [
        Path(r["path"]) if Path(r["path"]).is_absolute() else csv_path.parent / r["path"]
        for r in rows
    ]
    images = []
    with task("siam images", len(paths)) as advance:
        for p in paths:
            images.append(load_rgb(p, size))
            advance(1)
    attrs = torch.tensor([[_value(r[a]) for a in names] for r in rows], dtype=torch.float32)
    bad = (attrs < 0) | (attrs > 1)
    if bad.any():
        i, k = (int(v) for v in bad.nonzero()[0])
        raise ValueError(
            f"{csv_path}: attribute {names[k]!r} of {rows[i]['path']} is {float(attrs[i, k])}; "
            "attribute labels must lie in [0, 1] (is it the target column?)"
        )
    y = None
    if target is not None and task_kind == "regression":
        y = torch.tensor([_value(r[target]) for r in rows], dtype=torch.float32)
    elif target is not None:
        found = sorted({r[target].strip() for r in rows if r[target].strip()})
        classes = classes or found
        index = {c: i for i, c in enumerate(classes)}
        y = torch.tensor([index.get(r[target].strip(), -1) for r in rows], dtype=torch.long)
    inputs = (
        to_tensor(np.stack(images)) if images else torch.zeros(0, 3, size, size, dtype=torch.uint8)
    )
    data = SiamData(inputs, attrs.reshape(len(rows), len(names)) if names else None, y)
    return CsvData(data, names, target, classes, paths)


def scenes_to_data(scenes) -> SiamData:
    """:class:`~cnnlens.datasets.scenic.ScenicData` -> :class:`SiamData` of uint8 images."""
    return SiamData(
        to_tensor(scenes.images),
        torch.from_numpy(scenes.present),
        torch.from_numpy(scenes.target),
    )
