"""Saliency maps as values: reading one map per image, and min-max scaling.

Metrics, the perturbation analyses and display code all accept a map per image
in a few spellings (``(N, H, W)``, ``(N, 1, H, W)``, an explanation with one
target per image) and often rescale each map to [0, 1]. These two functions are
the one way to do both.
"""

from __future__ import annotations

import torch


def one_per_image(maps, what: str = "maps", *, finite: bool = True) -> torch.Tensor:
    """A detached float ``(N, H, W)`` tensor of one map per image, on its own device.

    Args:
        maps: ``(N, H, W)``, ``(N, 1, H, W)``, or anything with a ``.maps`` tensor of
            that shape (an :class:`~cnnlens.Explanation` with one target per image).
        what: the argument's name, for error messages.
        finite: refuse NaN values (a map some method failed to compute).

    Raises:
        TypeError: not a tensor or an explanation.
        ValueError: another shape, several targets per image, or NaN when ``finite``.
    """
    if isinstance(getattr(maps, "maps", None), torch.Tensor):
        maps = maps.maps
    if not isinstance(maps, torch.Tensor):
        raise TypeError(f"{what} must be a tensor or an Explanation, got {type(maps).__name__}")
    if maps.dim() == 4:
        if maps.shape[1] != 1:
            raise ValueError(
                f"{what} have {maps.shape[1]} targets per image, but one map per image is "
                "needed; score one at a time, e.g. maps[:, j] or explanation.maps[:, j]"
            )
        maps = maps[:, 0]
    if maps.dim() != 3:
        raise ValueError(
            f"{what} must be (N, H, W) or (N, 1, H, W) (one map per image), "
            f"got shape {tuple(maps.shape)}"
        )
    maps = maps.detach().float()
    if finite and torch.isnan(maps).any():
        raise ValueError(f"{what} contain NaN values; fix the method's output before scoring it")
    return maps


def minmax(maps: torch.Tensor, dims: int = 2) -> torch.Tensor:
    """Scale each map over its last ``dims`` dimensions to [0, 1]; constant maps become 0.

    Args:
        maps: ``(..., H, W)`` (``dims=2``) or ``(..., P)`` (``dims=1``) values.
        dims: how many trailing dimensions make one map.

    Returns:
        Maps shaped like ``maps``: ``(v - min) / (max - min)``, detached, in the input's
        floating dtype (float32 for integer input).
    """
    values = maps.detach()
    if not values.is_floating_point():
        values = values.float()
    flat = values.flatten(-dims) if dims > 1 else values
    lo = flat.amin(-1, keepdim=True)
    span = flat.amax(-1, keepdim=True) - lo
    out = torch.where(span > 0, (flat - lo) / torch.where(span > 0, span, 1.0), 0.0)
    return out.view(maps.shape)
