"""`planted(...)`: an indexable split of the planted-evidence dataset."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch.utils.data import Dataset

from ..core.progress import task
from .cues import check_confound
from .planted import SPLITS, PlantedSample, PlantedSpec, render


class PlantedDataset(Dataset):
    """``n`` samples of one split; ``ds[i]`` draws sample ``i`` on demand.

    Nothing is stored: sample ``i`` is recomputed from ``(spec, split, i,
    confound)`` each time, identically, so a dataset costs no memory until
    :meth:`tensors` stacks it.
    """

    def __init__(self, spec: PlantedSpec, split: str, n: int, confound: str | None = None):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; use 'train', 'val' or 'test'")
        if n < 0:
            raise ValueError(f"n must be non-negative; got {n}")
        self.spec = spec
        self.split = split
        self.n = int(n)
        self.confound = check_confound(confound)

    @property
    def classes(self) -> list[str]:
        return self.spec.classes

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return (
            f"PlantedDataset(split={self.split!r}, n={self.n}, confound={self.confound!r}, "
            f"key={self.spec.key()!r})"
        )

    def _index(self, i: int) -> int:
        if not -self.n <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} samples")
        return i % self.n

    def raw(self, i: int) -> dict:
        """Sample ``i`` as numpy arrays, the image as ``(H, W, 3)`` uint8."""
        return render(self.spec, self.split, self._index(i), self.confound)

    def __getitem__(self, i: int) -> PlantedSample:
        r = self.raw(i)
        image = torch.from_numpy(r["image"]).permute(2, 0, 1).float().div_(255.0)
        return PlantedSample(
            image=image.contiguous(),
            label=r["label"],
            mask=torch.from_numpy(r["mask"]),
            boxes=r["boxes"],
            difficult=r["difficult"],
            cue_mask=torch.from_numpy(r["cue_mask"]),
            cue=r["cue"],
            distractors=r["distractors"],
        )

    def __iter__(self):
        return (self[i] for i in range(self.n))

    def arrays(self, description: str | None = None) -> dict[str, np.ndarray]:
        """Every sample stacked as numpy: images uint8 ``(N, H, W, 3)``, labels,
        masks, difficult, cue_masks and cues (-1 where there is no cue)."""
        size = self.spec.size
        out = {
            "images": np.empty((self.n, size, size, 3), dtype=np.uint8),
            "labels": np.empty(self.n, dtype=np.int64),
            "masks": np.empty((self.n, size, size), dtype=bool),
            "difficult": np.empty(self.n, dtype=bool),
            "cue_masks": np.empty((self.n, size, size), dtype=bool),
            "cues": np.empty(self.n, dtype=np.int64),
        }
        with task(description or f"drawing {self.split} images", self.n) as advance:
            for i in range(self.n):
                r = self.raw(i)
                out["images"][i] = r["image"]
                out["labels"][i] = r["label"]
                out["masks"][i] = r["mask"]
                out["difficult"][i] = r["difficult"]
                out["cue_masks"][i] = r["cue_mask"]
                out["cues"][i] = -1 if r["cue"] is None else r["cue"]
                advance(1)
        return out

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """All samples stacked: images ``(N, 3, H, W)`` float32 in [0, 1], labels
        ``(N,)`` int64, masks ``(N, H, W)`` bool and difficult ``(N,)`` bool."""
        a = self.arrays()
        images = torch.from_numpy(a["images"]).permute(0, 3, 1, 2).float().div_(255.0)
        return (
            images.contiguous(),
            torch.from_numpy(a["labels"]),
            torch.from_numpy(a["masks"]),
            torch.from_numpy(a["difficult"]),
        )


def planted(
    split: str = "test",
    n: int = 300,
    *,
    size: int | None = None,
    seed: int | None = None,
    confound: str | None = None,
    spec: PlantedSpec | None = None,
    **overrides,
) -> PlantedDataset:
    """A split of the planted-evidence dataset.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``; splits never share samples.
        n: number of samples.
        size: image side (shorthand for ``PlantedSpec.size``).
        seed: dataset seed (shorthand for ``PlantedSpec.seed``).
        confound: ``None`` (clean), ``"corner"`` or ``"brightness"``: in train
            and val the cue encodes the label for ``spec.cue_rate`` of the
            images; in test it is independent of the label.
        spec: the generator parameters (default ``PlantedSpec()``).
        **overrides: other :class:`PlantedSpec` fields, e.g. ``n_classes=8``.

    Returns:
        A :class:`PlantedDataset`; ``ds[i]`` is a :class:`PlantedSample`.
    """
    spec = spec or PlantedSpec()
    if size is not None:
        overrides["size"] = size
    if seed is not None:
        overrides["seed"] = seed
    if overrides:
        spec = dataclasses.replace(spec, **overrides)
    return PlantedDataset(spec, split, n, confound)
