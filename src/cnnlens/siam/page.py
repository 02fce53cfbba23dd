"""The SIAM explanation view: one self-contained HTML page per image, and a PNG curve.

The page shows the prediction, a bar per attribute contribution (an inline SVG,
positive bars green to the right, negative red to the left), the maps of the top
positive and negative attributes over the image (what-where-how), and a check
line ``bias + sum_k r_k = output`` with the rounding error. Pictures are inline
PNG ``data:`` URIs and every string is HTML-escaped, so the file opens offline.
The training curve is drawn with PIL (no plotting library).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from ..colormaps import overlay
from ..io import data_uri
from ..report.serialize import write_text_atomic
from .explain import SiamExplanation

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; max-width: 1100px; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.1rem; margin-top: 1.6rem; }
.pred { font-size: 1.3rem; } .check { font-family: monospace; background: #f4f4f4; padding: 4px; }
.grid { display: flex; flex-wrap: wrap; gap: 10px; }
figure { margin: 0; text-align: center; } figure img { border: 1px solid #ddd; }
figcaption { font-size: 0.8rem; color: #333; max-width: 200px; overflow-wrap: anywhere; }
table { border-collapse: collapse; font-size: 0.8rem; }
td, th { border: 1px solid #ddd; padding: 2px 6px; text-align: left; }
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def bars_svg(names: Sequence[str], values: Sequence[float], width: int = 560) -> str:
    """Horizontal bars around a zero line, one per (name, value), sorted as given."""
    row, label_w = 20, 110
    half = (width - label_w - 70) / 2
    zero = label_w + half
    top = max((abs(v) for v in values), default=0.0) or 1.0
    parts = [
        f'<svg width="{width}" height="{row * len(names) + 10}"'
        ' font-family="sans-serif" font-size="12">',
        f'<line x1="{zero:.1f}" y1="0" x2="{zero:.1f}" y2="{row * len(names) + 10}" '
        'stroke="#888"/>',
    ]
    for i, (name, v) in enumerate(zip(names, values)):
        y = 5 + i * row
        w = abs(v) / top * half
        x = zero if v >= 0 else zero - w
        colour = "#2ca02c" if v >= 0 else "#d62728"
        tx = zero + w + 4 if v >= 0 else zero - w - 4
        anchor = "start" if v >= 0 else "end"
        parts += [
            f'<text x="4" y="{y + 13}">{_e(name)}</text>',
            f'<rect x="{x:.1f}" y="{y + 2}" width="{w:.1f}" height="{row - 6}" fill="{colour}"/>',
            f'<text x="{tx:.1f}" y="{y + 13}" text-anchor="{anchor}">{v:+.3f}</text>',
        ]
    parts.append("</svg>")
    return "".join(parts)


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
    rows = sorted(expl.rows(index), key=lambda r: -r["contribution"])
    value = float(expl.output[index, o])
    bias = float(expl.bias[o])
    total = sum(r["contribution"] for r in expl.rows(index))
    pos, neg = expl.ranked(index, top)
    shown = image.convert("RGB").resize(tuple(expl.maps.shape[-1:-3:-1]), Image.BILINEAR)
    vmax = float(expl.maps[index].max()) or 1.0

    def figures(ks: list[int]) -> str:
        if not ks:
            return '<p class="note">none</p>'
        out = ['<div class="grid">']
        for k in ks:
            r = expl.rows(index)[k]
            pic = overlay(shown, expl.maps[index, k].cpu().numpy(), alpha=0.6, vmin=0.0, vmax=vmax)
            cap = (
                f"{r['attribute']}: {r['contribution']:+.3f} "
                f"(presence {r['presence']:.3f}, weight {r['weight']:+.3f})"
            )
            out.append(
                f'<figure><img width="200" alt="{_e(cap)}" src="{data_uri(pic)}">'
                f"<figcaption>{_e(cap)}</figcaption></figure>"
            )
        return "".join(out) + "</div>"

    table = "".join(
        f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in (settings or {}).items()
    )
    check = (
        f"bias {bias:+.6f} + sum of contributions {total:+.6f} = {bias + total:+.6f}; "
        f"model output {value:+.6f}; |difference| {abs(bias + total - value):.2e}"
    )
    label = expl.outputs[o] if o < len(expl.outputs) else str(o)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1><table>{table}</table>"
        f'<div class="grid"><figure><img width="240" alt="input" src="{data_uri(shown)}">'
        f"<figcaption>input</figcaption></figure></div>"
        f'<p class="pred">prediction ({_e(label)}): <b>{value:.4f}</b></p>'
        f"<h2>Contributions (what and how)</h2>"
        f"{bars_svg([r['attribute'] for r in rows], [r['contribution'] for r in rows])}"
        f"<h2>Top positive attributes (where)</h2>{figures(pos)}"
        f"<h2>Top negative attributes (where)</h2>{figures(neg)}"
        f'<h2>Check</h2><p class="check">{_e(check)}</p>'
        "</body></html>\n"
    )


def write_explanation(path: str | Path, image: Image.Image, expl: SiamExplanation, **kw) -> Path:
    """Write :func:`render_explanation` to ``path`` atomically (parent folders created)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(target, render_explanation(image, expl, **kw))
    return target


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
