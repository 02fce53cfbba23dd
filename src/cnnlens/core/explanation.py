"""The result type every attribution method returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Explanation:
    """Saliency maps for a batch of images and one or more targets per image.

    Attributes:
        maps: ``(N, T, H, W)`` tensor on the input's device, at input resolution.
            Signed methods keep their sign; display code decides how to show it.
        targets: ``(N, T)`` long tensor of class indices, one row per image.
        method: registry name of the method that produced the maps.
        params: the keyword parameters the method ran with (JSON-friendly).
        seconds: wall time of the call.
        signed: whether negative values carry meaning (a diverging colormap fits).
        extras: method-specific side results (e.g. the layer used).
        inputs: the normalised input batch ``(N, 3, H, W)`` the maps explain (a
            reference, not a copy), so reports can show the images.
    """

    maps: torch.Tensor
    targets: torch.Tensor
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    signed: bool = False
    extras: dict[str, Any] = field(default_factory=dict)
    inputs: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.maps.dim() != 4:
            raise ValueError(f"maps must be (N, T, H, W), got shape {tuple(self.maps.shape)}")
        if self.targets.shape != self.maps.shape[:2]:
            raise ValueError(
                f"targets {tuple(self.targets.shape)} do not match maps {tuple(self.maps.shape)}"
            )

    def __len__(self) -> int:
        return self.maps.shape[0]

    @classmethod
    def cat(cls, parts: list[Explanation]) -> Explanation:
        """Join explanations of the same method computed on consecutive batches.

        ``extras`` are the first part's, except values with a ``cat`` classmethod
        (such as :class:`~cnnlens.core.masks.MaskResult`) held by every part: those
        are joined too, so a multi-image report still has every image's edit panel.
        """
        if not parts:
            raise ValueError("nothing to concatenate")
        first = parts[0]
        if any(p.method != first.method for p in parts):
            raise ValueError("can only concatenate explanations of one method")
        inputs = None
        if all(p.inputs is not None for p in parts):
            inputs = torch.cat([p.inputs for p in parts])
        # Extras are the first part's, except values that know how to join along the
        # images (a ``cat`` classmethod, as MaskResult has) and that every part holds.
        extras = dict(first.extras)
        for key, value in first.extras.items():
            values = [p.extras.get(key) for p in parts]
            if callable(getattr(type(value), "cat", None)) and all(
                type(v) is type(value) for v in values
            ):
                extras[key] = type(value).cat(values)
        return cls(
            maps=torch.cat([p.maps for p in parts]),
            targets=torch.cat([p.targets for p in parts]),
            method=first.method,
            params=first.params,
            seconds=sum(p.seconds for p in parts),
            signed=first.signed,
            extras=extras,
            inputs=inputs,
        )

    def display_range(self, quantile: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """The values that :meth:`normalized` maps to the first and the last colour.

        Args:
            quantile: as in :meth:`normalized`.

        Returns:
            ``(lo, hi)``, each ``(N, T)``: the map's minimum and its ``quantile`` (or
            ``-s`` and ``s``, ``s`` the ``quantile`` of ``|map|``, when signed). Values
            beyond either end are shown in that end's colour.
        """
        flat = self.maps.detach().flatten(2).float()
        if self.signed:
            mags = flat.abs()
            s = mags.amax(dim=2) if quantile >= 1 else _quantile(mags, quantile).squeeze(2)
            return -s, s
        hi = flat.amax(dim=2) if quantile >= 1 else _quantile(flat, quantile).squeeze(2)
        return flat.amin(dim=2), hi

    def normalized(self, quantile: float = 1.0) -> torch.Tensor:
        """Maps scaled per (image, target) for display: [0, 1], or [-1, 1] when signed.

        Args:
            quantile: the value that maps to full colour, as a quantile of each map
                (of ``|map|`` when signed); values beyond it are clipped. 1.0 is the
                maximum; 0.995 keeps a few extreme pixels (common in gradient maps)
                from washing out the rest. :meth:`display_range` gives the values
                that end up at either end of the colour scale.
        """
        flat = self.maps.detach().flatten(2).float()
        lo, hi = (v.unsqueeze(2) for v in self.display_range(quantile))
        if self.signed:
            return (flat / hi.clamp_min(1e-12)).clamp(-1, 1).view_as(self.maps)
        return ((flat - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1).view_as(self.maps)


def _quantile(flat: torch.Tensor, q: float) -> torch.Tensor:
    """Per-row quantile of ``(N, T, P)`` values, shaped ``(N, T, 1)``."""
    if not 0 < q <= 1:
        raise ValueError(f"quantile must be in (0, 1], got {q}")
    return torch.quantile(flat, q, dim=2, keepdim=True)
