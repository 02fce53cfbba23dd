"""The engine of the smallest-deleting-box analysis: every box of an image in one batch.

For each image, every box of every threshold, target and set of maps (plus the
empty box, which leaves ``x0`` as it is, and the whole image, ``Φ(x0; 0)``) is
deleted with the blur (:func:`.editing.composite`), duplicates removed, and the
edits go through the network together unless ``batch_size`` splits them. The
scores are normalised as ``(p - p_b) / (p0 - p_b)`` and the smallest box reaching
each suppression level is picked (:func:`smallest_boxes`). The analysis itself
is described in :mod:`.boxes`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..core import progress
from ..core.batching import FastNet
from ..core.boxes import box_areas, box_masks, normalize_maps, tightest_boxes
from ..core.hooks import preserved
from ..core.tensors import check_batch_size, check_score, upsample
from ..models.base import LoadedModel
from .box_results import DeletionBoxes
from .editing import class_scores, composite, fully_perturbed, normalized_score, targets_of


def smallest_boxes(
    areas: torch.Tensor, normalized: torch.Tensor, boxes: torch.Tensor, levels: Sequence[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Smallest area (and its box) with ``normalized <= 1 - level``, per level.

    Args:
        areas: ``(..., K)`` box areas per threshold (NaN: no box).
        normalized: ``(..., K)`` normalised scores with each box deleted.
        boxes: ``(..., K, 4)`` the boxes.
        levels: the L suppression levels.

    Returns:
        ``(..., L)`` smallest areas (NaN: no box reaches the level) and ``(..., L, 4)``
        their boxes (``-1``: none).
    """
    sa, sb = [], []
    for level in levels:
        ok = (normalized <= round(1 - level, 12)) & ~torch.isnan(areas)
        cand = torch.where(ok, areas, torch.full_like(areas, math.inf))
        best, idx = cand.min(-1)
        box = boxes.gather(-2, idx[..., None, None].expand(*idx.shape, 1, 4)).squeeze(-2)
        found = torch.isfinite(best)
        sa.append(torch.where(found, best, torch.full_like(best, math.nan)))
        sb.append(torch.where(found.unsqueeze(-1), box, torch.full_like(box, -1)))
    return torch.stack(sa, -1), torch.stack(sb, -2)


def score_boxes(
    model,
    x: torch.Tensor,
    items: list[tuple[torch.Tensor, object]],
    *,
    thresholds: Sequence[float],
    levels: Sequence[float],
    sigma: float,
    score: str,
    batch_size: int | None,
) -> list[DeletionBoxes]:
    """Smallest deleting boxes of several ``(maps, target)`` sets on the same images ``x``.

    Args:
        model: a :class:`LoadedModel` or a bare ``nn.Module``.
        x: ``(N, 3, H, W)`` normalised images.
        items: per set, ``(maps (N, T, H, W), target)`` with ``target`` a ``(N, T)``
            tensor or any :mod:`cnnlens.core.targets` specification.
        thresholds, levels, sigma, score, batch_size: see
            :func:`cnnlens.perturbation.boxes.deletion_boxes`.

    Returns:
        One :class:`DeletionBoxes` per set, tensors on ``x``'s device (``method`` unset).
    """
    check_score(score)
    check_batch_size(batch_size)
    model = LoadedModel.wrap(model)
    if x.dim() != 4:
        raise ValueError(f"x must be (N, 3, H, W), got shape {tuple(x.shape)}")
    n, _, h, w = x.shape
    th = torch.tensor([float(t) for t in thresholds])
    if th.numel() == 0 or bool(((th < 0) | (th > 1)).any()):
        raise ValueError(f"thresholds must be values in [0, 1], got {list(thresholds)}")
    levels = tuple(float(lv) for lv in levels)
    if not levels or any(not 0 < lv < 1 for lv in levels):
        raise ValueError(f"suppression levels must lie in (0, 1), e.g. 0.8, got {levels}")

    prepared = []
    for maps, target in items:
        if maps.dim() != 4 or maps.shape[0] != n:
            raise ValueError(f"maps must be (N={n}, T, H, W), got shape {tuple(maps.shape)}")
        maps = upsample(maps.detach().float().to(x.device), (h, w))
        prepared.append((normalize_maps(maps), target))

    blurred = fully_perturbed(x, "blur", sigma=sigma)
    empty = torch.zeros(1, 4, dtype=torch.long, device=x.device)  # keeps everything: x0
    whole = torch.tensor([[0, 0, w, h]], dtype=torch.long, device=x.device)  # Φ(x0; 0)
    with preserved(model.net), torch.no_grad():
        fast = FastNet.of(model.net, x)
        logits0 = fast(x).float()
        resolved = [targets_of(target, logits0, maps.shape) for maps, target in prepared]
        k = th.numel()
        per = [
            {
                "boxes": torch.full((n, m.shape[1], k, 4), -1, dtype=torch.long),
                "scores": torch.full((n, m.shape[1], k), math.nan),
                "p0": torch.zeros(n, m.shape[1]),
                "pb": torch.zeros(n, m.shape[1]),
            }
            for m, _ in prepared
        ]
        with progress.task("smallest deleting box", n) as advance:
            for i in range(n):
                all_boxes = [empty, whole]
                for (maps, _), rec in zip(prepared, per):
                    b = tightest_boxes(maps[i], th.to(maps))  # (T, K, 4)
                    rec["boxes"][i] = b.cpu()
                    all_boxes.append(b.reshape(-1, 4))
                cat = torch.cat(all_boxes)
                uniq, inverse = torch.unique(cat, dim=0, return_inverse=True)
                real = uniq[:, 0] >= 0  # (-1, ...) rows stand for "no box"
                masks = box_masks(uniq.clamp_min(0), (h, w), device=x.device)
                images = composite(x[i : i + 1], blurred[i : i + 1], masks[real])
                probs = class_scores(fast, images, score, batch_size)
                table = torch.full((uniq.shape[0], probs.shape[1]), math.nan)
                table[real.cpu()] = probs
                rows = table[inverse.cpu()]  # one row per entry of cat
                offset = 2
                for (maps, _), targets, rec in zip(prepared, resolved, per):
                    t_i = targets[i].cpu()
                    count = maps.shape[1] * k
                    block = rows[offset : offset + count].view(maps.shape[1], k, -1)
                    offset += count
                    rec["scores"][i] = block.gather(2, t_i.view(-1, 1, 1).expand(-1, k, 1))[..., 0]
                    rec["p0"][i] = rows[0, t_i]
                    rec["pb"][i] = rows[1, t_i]
                advance(1)

    out = []
    for rec, targets in zip(per, resolved):
        areas = box_areas(rec["boxes"], (h, w))
        norm = normalized_score(rec["scores"], rec["p0"][..., None], rec["pb"][..., None])
        norm = torch.where(torch.isnan(areas), torch.full_like(norm, math.nan), norm)
        s_area, s_box = smallest_boxes(areas, norm, rec["boxes"], levels)
        dev = x.device
        out.append(
            DeletionBoxes(
                thresholds=th.to(dev),
                levels=levels,
                targets=targets.clone().to(dev),
                boxes=rec["boxes"].to(dev),
                areas=areas.to(dev),
                scores=rec["scores"].to(dev),
                p0=rec["p0"].to(dev),
                pb=rec["pb"].to(dev),
                normalized=norm.to(dev),
                smallest_area=s_area.to(dev),
                smallest_box=s_box.to(dev),
            )
        )
    return out


__all__ = ["score_boxes", "smallest_boxes"]
