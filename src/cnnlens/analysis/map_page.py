"""Self-contained HTML view of a 2-D map: zoomable scatter plus the thumbnail grid.

The scatter is inline SVG (one circle per image, coloured by label or predicted class, the
file name and label in a tooltip); the mouse wheel zooms around the pointer and dragging
pans, by changing the SVG ``viewBox`` in a few lines of inline script. The page renders from
``report/templates/map.html.j2``: every string is escaped; pictures are ``data:`` URIs,
so the file opens offline.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..io import data_uri
from ..report.templating import render, write_rendered

__all__ = ["PALETTE", "write_map_page"]

PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d",
    "#31a354", "#756bb1", "#636363",
)  # fmt: skip
OTHER = "#c7c7c7"


def colours(labels: Sequence[str]) -> tuple[list[str], list[tuple[str, str, int]]]:
    """A colour per point (the most frequent labels get the palette, the rest grey) and the
    legend as ``(label, colour, count)``."""
    counts = Counter(labels)
    top = [lab for lab, _ in counts.most_common(len(PALETTE))]
    if len(counts) > len(PALETTE):
        top = top[: len(PALETTE) - 1]
    table = {lab: PALETTE[i] for i, lab in enumerate(top)}
    legend = [(lab, table[lab], counts[lab]) for lab in top]
    if len(counts) > len(top):
        legend.append(("other", OTHER, sum(c for lab, c in counts.items() if lab not in table)))
    return [table.get(lab, OTHER) for lab in labels], legend


def write_map_page(
    path: str | Path,
    coords: np.ndarray,
    names: Sequence[str],
    labels: Sequence[str],
    title: str,
    grid: Image.Image | None = None,
    settings: dict | None = None,
    max_points: int = 20000,
    seed: int = 0,
) -> Path:
    """Write the page; above ``max_points`` points a seeded random subset is drawn.

    Args:
        path: the ``.html`` file (parent folders are created).
        coords: ``(N, 2)`` map positions.
        names: N image names (tooltips).
        labels: N labels or predicted classes (colours and tooltips).
        title: page title and heading.
        grid: the thumbnail grid picture, shown under the scatter.
        settings: shown as a key/value table under the title.
        max_points: at most this many circles are drawn.
        seed: seed of the random subset.

    Returns:
        The path of the written page.
    """
    c = np.asarray(coords, np.float64)
    keep = np.arange(len(c))
    if len(c) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(c), max_points, replace=False))
    lo, hi = c.min(0), c.max(0)
    span = max(float((hi - lo).max()), 1e-12)  # one scale for both axes, like the grid
    xy = 20 + (c - lo) / span * 960
    cols, legend = colours([str(v) for v in labels])
    dots = [(xy[k, 0], 1000 - xy[k, 1], cols[k], names[k], labels[k]) for k in keep.tolist()]
    text = render(
        "map.html.j2",
        title=title,
        settings=settings or {},
        drawn=len(keep),
        total=len(c),
        legend=legend,
        dots=dots,
        grid=data_uri(grid) if grid is not None else None,
    )
    return write_rendered(path, text)
