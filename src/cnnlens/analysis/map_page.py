"""Self-contained HTML view of a 2-D map: zoomable scatter plus the thumbnail grid.

The scatter is inline SVG (one circle per image, coloured by label or predicted class, the
file name and label in a tooltip); the mouse wheel zooms around the pointer and dragging
pans, by changing the SVG ``viewBox`` in a few lines of inline script. Every string is
escaped; pictures are ``data:`` URIs, so the file opens offline.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..io import data_uri
from ..report.serialize import write_text_atomic

__all__ = ["PALETTE", "write_map_page"]

PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d",
    "#31a354", "#756bb1", "#636363",
)  # fmt: skip
OTHER = "#c7c7c7"

_SCRIPT = """
const svg = document.getElementById('map'); let vb = svg.viewBox.baseVal, drag = null;
svg.addEventListener('wheel', e => { e.preventDefault();
  const r = svg.getBoundingClientRect(), f = e.deltaY > 0 ? 1.2 : 1 / 1.2;
  const mx = vb.x + (e.clientX - r.left) / r.width * vb.width;
  const my = vb.y + (e.clientY - r.top) / r.height * vb.height;
  vb.x = mx - (mx - vb.x) * f; vb.y = my - (my - vb.y) * f; vb.width *= f; vb.height *= f; });
svg.addEventListener('mousedown', e => { drag = [e.clientX, e.clientY]; });
window.addEventListener('mouseup', () => { drag = null; });
svg.addEventListener('mousemove', e => { if (!drag) return;
  const r = svg.getBoundingClientRect();
  vb.x -= (e.clientX - drag[0]) / r.width * vb.width;
  vb.y -= (e.clientY - drag[1]) / r.height * vb.height; drag = [e.clientX, e.clientY]; });
svg.addEventListener('dblclick', () => { vb.x = 0; vb.y = 0; vb.width = 1000; vb.height = 1000; });
"""

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }
svg { border: 1px solid #ddd; width: min(90vw, 800px); height: min(90vw, 800px); cursor: grab; }
.legend span { display: inline-block; margin: 0 0.8rem 0.3rem 0; font-size: 0.8rem; }
.legend i { display: inline-block; width: 0.8rem; height: 0.8rem; margin-right: 0.3rem; }
img.grid { max-width: min(90vw, 800px); image-rendering: pixelated; border: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.8rem; }
td, th { border: 1px solid #ddd; padding: 2px 6px; }
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


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
    """Write the page; above ``max_points`` points a seeded random subset is drawn."""
    c = np.asarray(coords, np.float64)
    keep = np.arange(len(c))
    if len(c) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(c), max_points, replace=False))
    lo, hi = c.min(0), c.max(0)
    span = max(float((hi - lo).max()), 1e-12)  # one scale for both axes, like the grid
    xy = 20 + (c - lo) / span * 960
    cols, legend = colours([str(v) for v in labels])
    dots = "".join(
        f'<circle cx="{xy[k, 0]:.1f}" cy="{1000 - xy[k, 1]:.1f}" r="4" fill="{cols[k]}">'
        f"<title>{_e(names[k])} · {_e(labels[k])}</title></circle>"
        for k in keep.tolist()
    )
    legend_html = "".join(
        f'<span><i style="background:{col}"></i>{_e(lab)} ({n})</span>' for lab, col, n in legend
    )
    rows = "".join(
        f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in (settings or {}).items()
    )
    grid_html = (
        f'<h2>Thumbnail grid</h2><img class="grid" alt="thumbnail grid" src="{data_uri(grid)}">'
        if grid is not None
        else ""
    )
    text = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1><table>{rows}</table>"
        f"<p>{len(keep)} of {len(c)} points drawn. Wheel: zoom, drag: pan, double-click: reset."
        f'</p><div class="legend">{legend_html}</div>'
        f'<svg id="map" viewBox="0 0 1000 1000" xmlns="http://www.w3.org/2000/svg">{dots}</svg>'
        f"{grid_html}<script>{_SCRIPT}</script></body></html>\n"
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, text)
    return out
