"""Smallest deleting box: how small a region a saliency map points to really suppresses the class.

Fong & Vedaldi ("Interpretable Explanations of Black Boxes by Meaningful
Perturbation", ICCV 2017, sec. 5.3 and fig. 8) compare saliency methods by how
compact a region that actually deletes the evidence they find. For each
saliency map ``S`` of an image ``x0`` and target ``c``:

1. normalise the map to [0, 1]: ``S' = (S - min S) / (max S - min S)``
   (signed maps included: their most negative value becomes 0);
2. for each threshold ``h`` in {0, 0.1, ..., 1} take the pixels with
   ``S'(u) >= h`` and fit the tightest axis-aligned box ``B_h`` around them
   (at ``h = 0`` this is the whole image; a constant map gives no box above 0);
3. blur the image inside ``B_h`` only, ``x_h = Φ(x0; m_{B_h})`` with the blur
   perturbation (``σ0 = 10`` px) and a binary mask ``m_B`` (0 in the box), and
   read the target score ``p = s_c(x_h)``;
4. normalise it between the original image's score ``p0 = s_c(x0)`` and the
   fully blurred image's score ``p_b = s_c(Φ(x0; 0))``:

       p' = (p - p_b) / (p0 - p_b)

   so 1 means untouched and 0 means as suppressed as blurring everything (the
   paper's footnote prints the numerator as ``p - p0``; that is a typo: with it
   the untouched image would score 0). Where ``p0 <= p_b`` blurring does not
   suppress the class at all and ``p'`` is NaN;
5. for each suppression level ``s`` in {80, 90, 95, 99 %} report the smallest
   box area (fraction of the image) among the thresholds with ``p' <= 1 - s``;
   NaN when no threshold reaches it.

Smaller is better: the method located a region that is both small and
sufficient to delete. :func:`compare_deletion_boxes` runs this for several
methods on the same images and gives the fig. 8 table: per method and level
the mean smallest-box area over the (image, target) pairs that reached the
level, its standard error, and how many pairs reached it. Averages only cover
the pairs that reached a level, so always read them with the counts.

All boxes of one image (every threshold, target and method, plus the original
and the fully blurred image, duplicates removed) go through the network in
one batch unless ``batch_size`` splits it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from ..core import progress
from ..core.explanation import Explanation
from ..core.hooks import preserved
from ..core.targets import resolve_targets
from ..core.tensors import (
    check_batch_size,
    check_score,
    inference_copy,
    to_scores,
    upsample,
)
from ..models.base import LoadedModel
from .interrogate import box_masks, composite, fully_perturbed, normalized_score

THRESHOLDS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))
LEVELS: tuple[float, ...] = (0.8, 0.9, 0.95, 0.99)


# ----------------------------------------------------------------------------- boxes from maps


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """Min-max scale each ``(H, W)`` map of ``(..., H, W)`` to [0, 1]; constant maps become 0."""
    flat = maps.detach().float().flatten(-2)
    lo = flat.amin(-1, keepdim=True)
    span = flat.amax(-1, keepdim=True) - lo
    out = torch.where(span > 0, (flat - lo) / span.clamp_min(1e-30), torch.zeros_like(flat))
    return out.view(maps.shape)


def tightest_boxes(maps: torch.Tensor, thresholds: Sequence[float] = THRESHOLDS) -> torch.Tensor:
    """Tightest boxes around ``maps >= h`` for each threshold: ``(..., K, 4)`` long.

    Args:
        maps: ``(..., H, W)`` maps (already normalised, see :func:`normalize_maps`).
        thresholds: the K values of ``h``.

    Returns:
        ``(x0, y0, x1, y1)`` per map and threshold, end exclusive; ``(-1, -1, -1, -1)``
        where no pixel reaches the threshold.
    """
    h, w = maps.shape[-2:]
    th = torch.as_tensor(thresholds, dtype=maps.dtype, device=maps.device)
    sel = maps.unsqueeze(-3) >= th.view(-1, 1, 1)  # (..., K, H, W)
    rows, cols = sel.any(-1), sel.any(-2)  # (..., K, H), (..., K, W)
    valid = rows.any(-1)
    y0 = rows.byte().argmax(-1)
    y1 = h - rows.flip(-1).byte().argmax(-1)
    x0 = cols.byte().argmax(-1)
    x1 = w - cols.flip(-1).byte().argmax(-1)
    boxes = torch.stack([x0, y0, x1, y1], dim=-1).long()
    return torch.where(valid.unsqueeze(-1), boxes, torch.full_like(boxes, -1))


def box_areas(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Area of ``(..., 4)`` boxes as a fraction of an ``(H, W)`` image; NaN for missing boxes."""
    h, w = size
    b = boxes.float()
    area = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1]) / (h * w)
    return torch.where(boxes[..., 0] >= 0, area, torch.full_like(area, math.nan))


# ----------------------------------------------------------------------------- results


@dataclass
class LevelSummary:
    """One cell of the fig. 8 table: smallest-box areas at one suppression level."""

    level: float
    mean_area: float  # mean over the pairs that reached the level (NaN if none)
    sem: float  # standard error of that mean (NaN with fewer than two)
    reached: int  # (image, target) pairs with a box reaching the level
    total: int  # (image, target) pairs

    def to_dict(self) -> dict:
        return {
            "level": self.level,
            "mean_area": None if math.isnan(self.mean_area) else self.mean_area,
            "sem": None if math.isnan(self.sem) else self.sem,
            "reached": self.reached,
            "total": self.total,
        }


@dataclass
class DeletionBoxes:
    """Smallest deleting boxes of one set of maps.

    Shapes: N images, T targets, K thresholds, L suppression levels. Boxes are
    ``(x0, y0, x1, y1)`` in input pixels, end exclusive, ``-1`` where missing;
    areas are fractions of the image, NaN where missing.

    Attributes:
        thresholds: ``(K,)`` values of ``h``.
        levels: the L suppression levels (0.8 = 80 %).
        targets: ``(N, T)`` class indices.
        boxes: ``(N, T, K, 4)`` the box at each threshold.
        areas: ``(N, T, K)`` its area.
        scores: ``(N, T, K)`` target score with the box blurred (NaN: no box).
        p0, pb: ``(N, T)`` scores of the original and the fully blurred image.
        normalized: ``(N, T, K)`` ``(p - p_b) / (p0 - p_b)``.
        smallest_area: ``(N, T, L)`` smallest area reaching each level (NaN: none).
        smallest_box: ``(N, T, L, 4)`` that box (``-1``: none).
        method: name of the method that made the maps, when known.
    """

    thresholds: torch.Tensor
    levels: tuple[float, ...]
    targets: torch.Tensor
    boxes: torch.Tensor
    areas: torch.Tensor
    scores: torch.Tensor
    p0: torch.Tensor
    pb: torch.Tensor
    normalized: torch.Tensor
    smallest_area: torch.Tensor
    smallest_box: torch.Tensor
    method: str | None = None

    @property
    def reached(self) -> torch.Tensor:
        """``(N, T, L)``: whether some box reached each suppression level."""
        return ~torch.isnan(self.smallest_area)

    def summary(self) -> list[LevelSummary]:
        """Per level: mean smallest area, its standard error, how many pairs reached it."""
        out = []
        total = int(self.smallest_area[..., 0].numel())
        for j, level in enumerate(self.levels):
            vals = self.smallest_area[..., j].flatten()
            vals = vals[~torch.isnan(vals)].double()
            k = int(vals.numel())
            mean = float(vals.mean()) if k else math.nan
            sem = float(vals.std(unbiased=True) / math.sqrt(k)) if k > 1 else math.nan
            out.append(LevelSummary(level, mean, sem, k, total))
        return out


@dataclass
class BoxComparison:
    """The fig. 8 comparison: :class:`DeletionBoxes` of several methods on the same images."""

    results: dict[str, DeletionBoxes]
    levels: tuple[float, ...]
    size: tuple[int, int] = (0, 0)
    rows: dict[str, list[LevelSummary]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rows = {name: r.summary() for name, r in self.results.items()}

    def to_dict(self) -> dict:
        """JSON-friendly: ``{method: [{level, mean_area, sem, reached, total}, ...]}``."""
        return {name: [c.to_dict() for c in cells] for name, cells in self.rows.items()}

    def format(self, pixels: bool = False) -> str:
        """A plain-text table: one row per method, one column per level.

        Cells read ``area ± sem (reached/total)``; ``pixels=True`` shows areas in
        pixels² (as the paper's fig. 8) instead of fractions of the image.
        """
        scale = self.size[0] * self.size[1] if pixels else 1.0
        head = ["method"] + [f"{round(100 * lv, 2):g}%" for lv in self.levels]
        body = []
        for name, cells in self.rows.items():
            row = [name]
            for c in cells:
                if c.reached == 0:
                    row.append(f"- (0/{c.total})")
                    continue
                fmt = (lambda v: f"{v * scale:.0f}") if pixels else (lambda v: f"{v:.3f}")
                err = "" if math.isnan(c.sem) else f" ± {fmt(c.sem)}"
                row.append(f"{fmt(c.mean_area)}{err} ({c.reached}/{c.total})")
            body.append(row)
        widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
        lines = ["  ".join(v.ljust(wd) for v, wd in zip(r, widths)).rstrip() for r in [head, *body]]
        return "\n".join(lines)

    def svg(self, title: str = "Smallest deleting box", **kwargs) -> str:
        """Mean smallest-box area against suppression level, one line per method (SVG)."""
        from ..report.charts import line_chart

        series = {name: [c.mean_area for c in cells] for name, cells in self.rows.items()}
        return line_chart(
            series,
            x=[100 * lv for lv in self.levels],
            title=title,
            xlabel="score suppression (%)",
            ylabel="mean smallest box (fraction of image)",
            **kwargs,
        )


# ----------------------------------------------------------------------------- computation


def _as_maps(item, x: torch.Tensor | None):
    """``(maps, targets, inputs, method)`` from an Explanation or a ``(maps, targets)`` pair."""
    if isinstance(item, Explanation):
        return item.maps, item.targets, item.inputs, item.method
    if isinstance(item, torch.Tensor):
        return item, None, None, None
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return item[0], item[1], None, None
    raise TypeError(
        "expected an Explanation, a maps tensor or a (maps, targets) pair, "
        f"got {type(item).__name__}"
    )


def _smallest(
    areas: torch.Tensor, normalized: torch.Tensor, boxes: torch.Tensor, levels: Sequence[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Smallest area (and its box) with ``normalized <= 1 - level``, per level."""
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


def _run(
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
    """Shared engine: several ``(maps, target)`` sets on the same images ``x``."""
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
        net = inference_copy(model.net, x)
        fmt = torch.channels_last if net is not model.net else torch.contiguous_format
        logits0 = net(x.contiguous(memory_format=fmt)).float()
        resolved = []
        for maps, target in prepared:
            if isinstance(target, torch.Tensor) and target.dim() == 2:
                targets = target.to(device=x.device, dtype=torch.long)
            else:
                targets = resolve_targets(target, n, logits0)
            if targets.shape != maps.shape[:2]:
                raise ValueError(
                    f"targets {tuple(targets.shape)} do not match maps {tuple(maps.shape)}"
                )
            resolved.append(targets)
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
                images = images.contiguous(memory_format=fmt)
                bs = batch_size or images.shape[0]
                probs = torch.cat(
                    [
                        to_scores(net(images[s : s + bs]).float(), score).cpu()
                        for s in range(0, images.shape[0], bs)
                    ]
                )
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
        s_area, s_box = _smallest(areas, norm, rec["boxes"], levels)
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


def deletion_boxes(
    model,
    x: torch.Tensor | None,
    maps,
    target=None,
    *,
    thresholds: Sequence[float] = THRESHOLDS,
    levels: Sequence[float] = LEVELS,
    sigma: float = 10.0,
    score: str = "prob",
    batch_size: int | None = None,
) -> DeletionBoxes:
    """Smallest deleting boxes of saliency maps (sec. 5.3 of Fong & Vedaldi 2017).

    Args:
        model: a :class:`LoadedModel` or a bare ``nn.Module``.
        x: ``(N, 3, H, W)`` normalised images the maps explain; may be None when
            ``maps`` is an :class:`Explanation` that kept its inputs.
        maps: an :class:`Explanation` or a ``(N, T, H, W)`` tensor of saliency
            maps (larger = more salient; other sizes are resized bilinearly).
        target: the maps' classes, ``(N, T)`` or any :mod:`cnnlens.core.targets`
            specification; taken from the Explanation when one is given.
        thresholds: the values ``h`` (default 0, 0.1, ..., 1).
        levels: suppression levels (default 0.8, 0.9, 0.95, 0.99).
        sigma: ``σ0`` of the blur in pixels.
        score: ``"prob"`` (default), ``"logit"`` or ``"logprob"``.
        batch_size: images per forward pass (default: all boxes of one image at once).

    Returns:
        A :class:`DeletionBoxes`, tensors on ``x``'s device.
    """
    m, t, inputs, method = _as_maps(maps, x)
    x = _inputs(x, [inputs])
    if t is None:
        t = target
    res = _run(
        model,
        x,
        [(m, t)],
        thresholds=thresholds,
        levels=levels,
        sigma=sigma,
        score=score,
        batch_size=batch_size,
    )[0]
    res.method = method
    return res


def _inputs(x: torch.Tensor | None, inputs: list[torch.Tensor | None]) -> torch.Tensor:
    known = [t for t in inputs if t is not None]
    if x is None:
        if not known:
            raise ValueError("pass the images x: the maps do not carry their inputs")
        x = known[0]
    for t in known:
        if t is not x and (t.shape != x.shape or not torch.equal(t.to(x.device), x)):
            raise ValueError(
                "the explanations were computed on different images: compare methods on "
                "the same batch x"
            )
    return x


def compare_deletion_boxes(
    model,
    explanations: Sequence[Explanation] | Mapping[str, object],
    x: torch.Tensor | None = None,
    *,
    thresholds: Sequence[float] = THRESHOLDS,
    levels: Sequence[float] = LEVELS,
    sigma: float = 10.0,
    score: str = "prob",
    batch_size: int | None = None,
) -> BoxComparison:
    """Fig. 8 of Fong & Vedaldi 2017: smallest deleting boxes of several methods.

    Args:
        model: a :class:`LoadedModel` or a bare ``nn.Module``.
        explanations: :class:`Explanation` objects of the same images (named by
            their method; repeats get ``-2``, ``-3``), or a mapping from a name to
            an Explanation, a maps tensor or a ``(maps, targets)`` pair.
        x: the images; optional when the explanations kept their inputs.
        thresholds, levels, sigma, score, batch_size: as in :func:`deletion_boxes`.

    Returns:
        A :class:`BoxComparison`: ``results[name]`` per method, ``rows[name]``
        the per-level summaries, ``format()`` a text table, ``svg()`` a chart.
    """
    if isinstance(explanations, Mapping):
        named = list(explanations.items())
    else:
        named, seen = [], set()
        for e in explanations:
            base = e.method if isinstance(e, Explanation) else "maps"
            key, c = base, 2
            while key in seen:
                key, c = f"{base}-{c}", c + 1
            seen.add(key)
            named.append((key, e))
    if not named:
        raise ValueError("nothing to compare: pass at least one explanation")
    parsed = [_as_maps(item, x) for _, item in named]
    x = _inputs(x, [p[2] for p in parsed])
    items = []
    for name, (m, t, _, _) in zip((k for k, _ in named), parsed):
        if t is None:
            raise ValueError(f"{name}: pass (maps, targets) so the classes are known")
        items.append((m, t))
    results = _run(
        model,
        x,
        items,
        thresholds=thresholds,
        levels=levels,
        sigma=sigma,
        score=score,
        batch_size=batch_size,
    )
    for (name, _), (_, _, _, method), r in zip(named, parsed, results):
        r.method = method or name
    return BoxComparison(
        results={name: r for (name, _), r in zip(named, results)},
        levels=tuple(float(v) for v in levels),
        size=tuple(x.shape[-2:]),
    )


__all__ = [
    "LEVELS",
    "THRESHOLDS",
    "BoxComparison",
    "DeletionBoxes",
    "LevelSummary",
    "box_areas",
    "compare_deletion_boxes",
    "deletion_boxes",
    "normalize_maps",
    "tightest_boxes",
]
