"""Region hypothesis test: is one kind of part more salient than another?

Fong & Vedaldi ("Interpretable Explanations of Black Boxes by Meaningful
Perturbation", ICCV 2017, sec. 5.4 and fig. 9) use dense masks to test a
hypothesis such as "the network relies on animals' eyes more than on their
feet". With keypoints annotated per image:

1. for every keypoint ``(x, y)`` take the mean mask value in a ``window x
   window`` square centred on it (5 x 5 in the paper; pixels outside the image
   are left out of the mean, so a keypoint at the border averages fewer
   pixels);
2. per image and keypoint type, average those values over the image's
   keypoints of that type: ``v_type(image)``;
3. per image, the ratio ``r = v_num / v_den`` of two types (e.g. feet : eyes);
4. per group of images (e.g. a class), the mean of ``r`` over the images that
   have both types (the paper reports 3.82 for tigers, N = 25, and 1.07 for
   bison, N = 22), next to the mean value of each type and the ratio of those
   means (which a single near-zero denominator cannot blow up).

With the paper's learned keep-masks (1 = keep) a *low* value means salient,
so a feet : eyes ratio above 1 says the eyes are the more salient part. Pass
saliency maps instead (``1 - m``, or any method's maps normalised to [0, 1])
and the reading flips: higher is more salient. Everything here is plain tensor
arithmetic; keypoints are ``(x, y)`` = (column, row) in pixels of the mask,
non-integers rounded to the nearest pixel.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core.maps import one_per_image

WINDOW = 5


def _points(points, h: int, w: int, where: str) -> torch.Tensor:
    """``(K, 2)`` long ``(x, y)`` pixel indices, checked to lie in the image."""
    if isinstance(points, torch.Tensor):
        t = points.detach().cpu().double()
    else:
        try:
            t = torch.tensor([list(p) for p in points], dtype=torch.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: keypoints must be a list of (x, y) pairs ({e})") from None
    if t.numel() == 0:
        t = t.reshape(0, 2)
    if t.dim() != 2 or t.shape[1] != 2:
        raise ValueError(f"{where}: keypoints must be (x, y) pairs, got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{where}: keypoints must be finite numbers (leave missing ones out)")
    p = torch.round(t).long()
    bad = (p[:, 0] < 0) | (p[:, 0] >= w) | (p[:, 1] < 0) | (p[:, 1] >= h)
    if bool(bad.any()):
        raise ValueError(
            f"{where}: keypoint {tuple(t[bad][0].tolist())} lies outside the {w}x{h} mask "
            "(x is the column, y the row, in mask pixels)"
        )
    return p


def window_means(masks: torch.Tensor, window: int = WINDOW) -> torch.Tensor:
    """Mean of every ``window x window`` square (clipped to the image) around each pixel."""
    if not isinstance(window, int) or isinstance(window, bool) or window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd number of pixels, got {window!r}")
    m = one_per_image(masks, "masks", finite=False).unsqueeze(1)
    if window == 1:
        return m
    return F.avg_pool2d(m, window, stride=1, padding=window // 2, count_include_pad=False)


def keypoint_values(
    masks: torch.Tensor, keypoints: Sequence, window: int = WINDOW
) -> list[torch.Tensor]:
    """Per image, the mean mask value in the window around each of its keypoints.

    Args:
        masks: ``(N, 1, H, W)`` or ``(N, H, W)``.
        keypoints: N entries, each a sequence (or ``(K, 2)`` tensor) of ``(x, y)``.
        window: odd side of the square, in pixels (default 5, the paper's).

    Returns:
        N tensors of shape ``(K_i,)`` on the masks' device.
    """
    means = window_means(masks, window)
    n, _, h, w = means.shape
    if len(keypoints) != n:
        raise ValueError(f"got keypoints for {len(keypoints)} images but {n} masks")
    out = []
    for i, pts in enumerate(keypoints):
        p = _points(pts, h, w, f"image {i}").to(means.device)
        out.append(means[i, 0, p[:, 1], p[:, 0]])
    return out


def region_means(
    masks: torch.Tensor, keypoints: Mapping[str, Sequence], window: int = WINDOW
) -> dict[str, torch.Tensor]:
    """``{type: (N,)}``: per image the mean window value over its keypoints of each type.

    An image with no keypoint of a type gets NaN for it.
    """
    out = {}
    for name, per_image in keypoints.items():
        vals = keypoint_values(masks, per_image, window)
        out[name] = torch.stack([v.mean() if v.numel() else v.new_tensor(math.nan) for v in vals])
    return out


@dataclass
class GroupStats:
    """One group's summary (e.g. one class of images)."""

    images: int  # images in the group with both keypoint types
    mean_numerator: float
    mean_denominator: float
    mean_ratio: float  # mean over those images of v_num / v_den (the paper's figure)
    ratio_of_means: float  # mean_numerator / mean_denominator

    def to_dict(self) -> dict:
        return {
            k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in self.__dict__.items()
        }


@dataclass
class RegionTest:
    """Region hypothesis test results.

    Attributes:
        numerator, denominator: the two keypoint types compared.
        values: ``{type: (N,)}`` per-image mean window values (NaN: none of that type).
        ratio: ``(N,)`` per-image ``v_num / v_den`` (NaN where either is missing).
        groups: per group name, a :class:`GroupStats`.
        window: the window side in pixels.
    """

    numerator: str
    denominator: str
    values: dict[str, torch.Tensor]
    ratio: torch.Tensor
    groups: dict[str, GroupStats]
    window: int


def _stats(num: torch.Tensor, den: torch.Tensor, ratio: torch.Tensor) -> GroupStats:
    ok = ~(torch.isnan(num) | torch.isnan(den))
    k = int(ok.sum())
    if k == 0:
        return GroupStats(0, math.nan, math.nan, math.nan, math.nan)
    mn, md = float(num[ok].double().mean()), float(den[ok].double().mean())
    return GroupStats(
        images=k,
        mean_numerator=mn,
        mean_denominator=md,
        mean_ratio=float(ratio[ok].double().mean()),
        ratio_of_means=mn / md if md != 0 else math.inf,
    )


def region_test(
    masks: torch.Tensor,
    keypoints: Mapping[str, Sequence],
    numerator: str,
    denominator: str,
    groups: Sequence[str] | None = None,
    *,
    window: int = WINDOW,
) -> RegionTest:
    """Compare two keypoint types' mask values, per image and per group of images.

    Args:
        masks: ``(N, 1, H, W)`` or ``(N, H, W)`` masks (or saliency maps, see the module doc).
        keypoints: ``{type: per-image keypoints}``, each a list of N sequences of
            ``(x, y)`` in mask pixels (an image may have none of a type).
        numerator, denominator: the two types to compare, e.g. ``"feet"``, ``"eyes"``.
        groups: one group name per image (e.g. its class); default: one group ``"all"``.
        window: odd side of the averaging window, in pixels (default 5).

    Returns:
        A :class:`RegionTest`. A per-image ratio with a zero denominator is
        ``inf`` (or NaN for 0 / 0); ``ratio_of_means`` is the robust figure then.
    """
    for name in (numerator, denominator):
        if name not in keypoints:
            raise ValueError(f"no keypoints of type {name!r}; have {', '.join(keypoints)}")
    n = one_per_image(masks, "masks", finite=False).unsqueeze(1).shape[0]
    values = region_means(masks, keypoints, window)
    num, den = values[numerator], values[denominator]
    ratio = num / den
    if groups is None:
        groups = ["all"] * n
    if len(groups) != n:
        raise ValueError(f"got {len(groups)} group names for {n} images")
    names = list(dict.fromkeys(groups))
    index = {g: torch.tensor([j for j, gj in enumerate(groups) if gj == g]) for g in names}
    stats = {
        g: _stats(num[idx.to(num.device)], den[idx.to(num.device)], ratio[idx.to(num.device)])
        for g, idx in index.items()
    }
    return RegionTest(numerator, denominator, values, ratio, stats, window)


__all__ = [
    "WINDOW",
    "GroupStats",
    "RegionTest",
    "keypoint_values",
    "region_means",
    "region_test",
    "window_means",
]
