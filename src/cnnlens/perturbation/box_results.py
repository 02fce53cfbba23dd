"""Results of the smallest-deleting-box analysis and how they print: tables and charts.

:func:`cnnlens.perturbation.boxes.deletion_boxes` returns a :class:`DeletionBoxes`
per set of maps; :func:`cnnlens.perturbation.boxes.compare_deletion_boxes` a
:class:`BoxComparison`, whose rows are fig. 8 of Fong & Vedaldi 2017 (per method
and suppression level: the mean smallest-box area over the (image, target) pairs
that reached the level, its standard error, and how many pairs reached it), as
plain text (:meth:`BoxComparison.format`), JSON (:meth:`BoxComparison.to_dict`)
or an SVG chart (:meth:`BoxComparison.svg`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


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


__all__ = ["BoxComparison", "DeletionBoxes", "LevelSummary"]
