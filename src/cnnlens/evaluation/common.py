"""Shared pieces of the metrics: reading maps and masks, and the per-image mean result.

Every metric takes saliency maps as an ``(N, H, W)`` tensor, an ``(N, 1, H, W)``
tensor, or an :class:`~cnnlens.Explanation` with one target per image, and
ground truth as ``(N, H, W)`` boolean masks (or per-image boxes). Maps whose
size differs from the masks are resized bilinearly to the masks' size, so maps
computed at the network's resolution can be scored against full-size masks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..core.maps import one_per_image
from ..core.tensors import upsample

# Saliency maps as a detached float (N, H, W) tensor, one map per image (NaN refused):
# the one reader of core.maps, under the name the metrics use.
as_maps = one_per_image


def as_masks(masks, maps: torch.Tensor, what: str = "masks") -> torch.Tensor:
    """Ground-truth masks as a bool ``(N, H, W)`` tensor on ``maps``' device."""
    masks = torch.as_tensor(masks, device=maps.device)
    if masks.dim() == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.dim() != 3 or masks.shape[0] != maps.shape[0]:
        raise ValueError(
            f"{what} must be (N={maps.shape[0]}, H, W), got shape {tuple(masks.shape)}"
        )
    if masks.dtype != torch.bool:
        masks = masks != 0
    return masks


def maps_and_masks(maps, masks, what: str = "masks") -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, H, W)`` float maps resized to the masks' size, and the bool masks."""
    maps = as_maps(maps)
    masks = as_masks(masks, maps, what)
    if masks.shape[-2:] != maps.shape[-2:]:
        maps = upsample(maps.unsqueeze(1), tuple(masks.shape[-2:]))[:, 0]
    return maps, masks


def per_image(values, n: int, dtype, device, what: str) -> torch.Tensor | None:
    """An optional per-image label (class, flag) as an ``(N,)`` tensor."""
    if values is None:
        return None
    t = torch.as_tensor(values, device=device).flatten().to(dtype)
    if t.numel() != n:
        raise ValueError(f"{what} needs one entry per image ({n}), got {t.numel()}")
    return t


def json_float(v: float) -> float | None:
    """``v`` for a JSON file: None where it is NaN (JSON has no NaN)."""
    return None if math.isnan(v) else v


@dataclass
class MeanScore:
    """A per-image score and its mean over the images where it is defined.

    Attributes:
        name: what was measured (``"relevance_mass"``, ...).
        values: ``(N,)`` per-image scores, NaN where undefined.
        mean: mean over the defined values (NaN if none).
        sem: standard error of that mean (NaN with fewer than two).
        n: how many images have a defined score.
        undefined: how many do not (e.g. a map with no positive mass).
    """

    name: str
    values: torch.Tensor
    mean: float
    sem: float
    n: int
    undefined: int

    @classmethod
    def of(cls, name: str, values: torch.Tensor) -> MeanScore:
        ok = values[~torch.isnan(values)].double()
        n = int(ok.numel())
        mean = float(ok.mean()) if n else math.nan
        sem = float(ok.std(unbiased=True) / math.sqrt(n)) if n > 1 else math.nan
        return cls(name, values, mean, sem, n, int(values.numel()) - n)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "mean": json_float(self.mean),
            "sem": json_float(self.sem),
            "n": self.n,
            "undefined": self.undefined,
        }


class MeanMetric:
    """Accumulator of a per-image score: ``update`` batches, ``compute`` the :class:`MeanScore`.

    Subclasses set ``name`` and implement ``score(maps, masks) -> (N,)``.
    """

    name = "score"

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._values: list[torch.Tensor] = []

    def score(self, maps, masks) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def update(self, maps, masks) -> MeanMetric:
        self._values.append(self.score(maps, masks))
        return self

    def compute(self) -> MeanScore:
        if not self._values:
            return MeanScore.of(self.name, torch.zeros(0))
        return MeanScore.of(self.name, torch.cat(self._values))
