"""The SIAM explanation view: one self-contained HTML page per image, and a PNG curve.

The page shows the prediction, a bar per attribute contribution (an inline SVG,
positive bars green to the right, negative red to the left), the maps of the top
positive and negative attributes over the image (what-where-how), and a check
line ``bias + sum_k r_k = output`` with the rounding error
(:meth:`~cnnlens.siam.explain.SiamExplanation.check`, the line ``cnnlens siam explain``
prints too). Pictures are inline
PNG ``data:`` URIs and every string is HTML-escaped (the page renders from
``report/templates/siam.html.j2``), so the file opens offline.
The training curve is drawn with PIL (no plotting library).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from ..colormaps import overlay
from ..io import data_uri
from ..report.templating import render, write_rendered
from .explain import SiamExplanation


def bar_layout(names: Sequence[str], values: Sequence[float], width: int = 560) -> dict[str, Any]:
    """Geometry of :func:`bars_svg`: one row per (name, value), bars scaled to the largest |value|.

    Args:
        names: the bar labels.
        values: one value per name; positive bars go right of the zero line, negative left.
        width: the drawing's width in pixels.

    Returns:
        ``{width, height, zero, bar_height, rows}`` with rows ``{y, name, x, w, colour, tx,
        anchor, value}``, as ``report/templates/bars.svg.j2`` reads them.
    """
    row, label_w = 20, 110
    half = (width - label_w - 70) / 2
    zero = label_w + half
    top = max((abs(v) for v in values), default=0.0) or 1.0
    rows = []
    for i, (name, v) in enumerate(zip(names, values)):
        w = abs(v) / top * half
        rows.append(
            {
                "y": 5 + i * row,
                "name": name,
                "x": zero if v >= 0 else zero - w,
                "w": w,
                "colour": "#2ca02c" if v >= 0 else "#d62728",
                "tx": zero + w + 4 if v >= 0 else zero - w - 4,
                "anchor": "start" if v >= 0 else "end",
                "value": v,
            }
        )
    height = row * len(rows) + 10
    return {"width": width, "height": height, "zero": zero, "bar_height": row - 6, "rows": rows}


def bars_svg(names: Sequence[str], values: Sequence[float], width: int = 560) -> str:
    """Horizontal bars around a zero line, one per (name, value), sorted as given."""
    return render("bars.svg.j2", bars=bar_layout(names, values, width))


def render_explanation(
    image: Image.Image,
    expl: SiamExplanation,
    index: int = 0,
    top: int = 3,
    title: str = "SIAM explanation",
    settings: Mapping[str, Any] | None = None,
) -> str:
    """HTML text of the explanation of image ``index`` of ``expl`` (shown over ``image``)."""
    o = int(expl.explained[index])
    all_rows = expl.rows(index)
    rows = sorted(all_rows, key=lambda r: -r["contribution"])
    value = float(expl.output[index, o])
    pos, neg = expl.ranked(index, top)
    shown = image.convert("RGB").resize(tuple(expl.maps.shape[-1:-3:-1]), Image.BILINEAR)
    vmax = float(expl.maps[index].max()) or 1.0

    def figures(ks: list[int]) -> list[tuple[str, str]]:
        out = []
        for k in ks:
            r = all_rows[k]
            pic = overlay(shown, expl.maps[index, k].cpu().numpy(), alpha=0.6, vmin=0.0, vmax=vmax)
            cap = (
                f"{r['attribute']}: {r['contribution']:+.3f} "
                f"(presence {r['presence']:.3f}, weight {r['weight']:+.3f})"
            )
            out.append((data_uri(pic), cap))
        return out

    return render(
        "siam.html.j2",
        title=title,
        settings=settings or {},
        input_src=data_uri(shown),
        label=expl.outputs[o] if o < len(expl.outputs) else str(o),
        value=value,
        bars=bar_layout([r["attribute"] for r in rows], [r["contribution"] for r in rows]),
        positive=figures(pos),
        negative=figures(neg),
        check=expl.check(index).text(),
    )


def write_explanation(path: str | Path, image: Image.Image, expl: SiamExplanation, **kw) -> Path:
    """Write :func:`render_explanation` to ``path`` atomically (parent folders created)."""
    return write_rendered(path, render_explanation(image, expl, **kw))


def curve_png(history: Sequence[Mapping[str, float]], path: str | Path, size=(640, 360)) -> Path:
    """Training curve (per-epoch mean losses, log scale) as a PNG drawn with PIL."""
    from ..io import save_png
    from ..report.charts import PALETTE

    w, h = size
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    keys = [k for k in ("loss", "attributes", "task") if any(k in r for r in history)]
    vals = [math.log10(max(r[k], 1e-8)) for r in history for k in keys if k in r]
    left, right, top_, bottom = 50, w - 110, 15, h - 30
    draw.rectangle([left, top_, right, bottom], outline="#888")
    if vals and len(history) > 1:
        lo, hi = min(vals), max(vals)
        hi = hi if hi > lo else lo + 1
        for i, k in enumerate(keys):
            pts = [
                (
                    left + (right - left) * j / (len(history) - 1),
                    bottom - (bottom - top_) * (math.log10(max(r[k], 1e-8)) - lo) / (hi - lo),
                )
                for j, r in enumerate(history)
            ]
            draw.line(pts, fill=PALETTE[i], width=2)
            draw.text((right + 8, top_ + 15 * i), k, fill=PALETTE[i])
        draw.text((4, top_), f"{10**hi:.3g}", fill="#444")
        draw.text((4, bottom - 10), f"{10**lo:.3g}", fill="#444")
    draw.text((left, bottom + 8), f"epochs 1-{len(history)} (log-scale losses)", fill="#444")
    return save_png(img, path)
