"""A benchmark result as a Markdown table, a JSON file and an HTML page with example maps."""

from __future__ import annotations

import datetime as _dt
import html
import math
from pathlib import Path

import numpy as np
import torch

from ..colormaps import overlay
from ..io import data_uri
from ..report.serialize import json_safe, write_json_atomic, write_text_atomic

# (key, header, better): "up" = higher is better, "down" = lower is better
COLUMNS = [
    ("pointing", "pointing", "up"),
    ("pointing_difficult", "pointing (difficult)", "up"),
    ("loc_value", "loc. err. value", "down"),
    ("loc_energy", "loc. err. energy", "down"),
    ("loc_mean", "loc. err. mean", "down"),
    ("relevance_mass", "relevance mass", "up"),
    ("rank_accuracy", "rank acc.", "up"),
    ("deletion_auc", "deletion AUC", "down"),
    ("insertion_auc", "insertion AUC", "up"),
    ("box90", "box 90%", "down"),
    ("sanity_rho", "sanity ρ", "down"),
    ("cue_confounded", "cue share (confounded)", "up"),
    ("cue_clean", "cue share (clean)", "down"),
    ("seconds_per_image", "s / image", "down"),
]


def _fmt(key: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if key == "seconds_per_image":
        return f"{value:.3f}" if value < 10 else f"{value:.1f}"
    return f"{value:.3f}"


def present_columns(rows: list[dict]) -> list[tuple[str, str, str]]:
    """The columns at least one row has a value for."""
    return [c for c in COLUMNS if any(c[0] in r for r in rows)]


def markdown(result, date: str | None = None) -> str:
    """The method x metric table in Markdown, with a line on how it was made."""
    cols = present_columns(result.rows)
    arrows = {"up": "↑", "down": "↓"}
    head = "| method | " + " | ".join(f"{h} {arrows[b]}" for _, h, b in cols) + " |"
    lines = [head, "|---" * (len(cols) + 1) + "|"]
    for r in result.rows:
        cells = [_fmt(k, r.get(k)) for k, _, _ in cols]
        lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
    date = date or _dt.date.today().isoformat()
    s = result.settings
    note = (
        f"Suite `{result.suite}`, {s.get('n_test', '?')} test images, {date}; "
        f"total {result.seconds:.0f} s."
    )
    out = [note, "", *lines]
    for f in result.failures:
        out.append(f"\nFailed: `{f['method']}`: {f['error']}")
    return "\n".join(out) + "\n"


def to_json(result) -> dict:
    return json_safe(
        {
            "suite": result.suite,
            "settings": result.settings,
            "rows": result.rows,
            "failures": result.failures,
            "seconds": result.seconds,
        }
    )


def _outlined(image: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """``image (3, H, W)`` in [0, 1] with the mask's boundary drawn in green, ``(H, W, 3)``."""
    arr = image.permute(1, 2, 0).numpy().copy()
    m = mask.numpy().astype(bool)
    inner = m.copy()
    inner[1:, :] &= m[:-1, :]
    inner[:-1, :] &= m[1:, :]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    arr[m & ~inner] = (0.1, 1.0, 0.2)
    return arr


def html_page(result, date: str | None = None) -> str:
    """A self-contained page: the table (best value per column in bold) and example maps."""
    esc = html.escape
    cols = present_columns(result.rows)
    best = {}
    for k, _, better in cols:
        vals = [r.get(k) for r in result.rows if r["method"] not in ("centre", "random")]
        vals = [v for v in vals if isinstance(v, (int, float)) and math.isfinite(v)]
        if vals:
            best[k] = max(vals) if better == "up" else min(vals)
    head = "".join(f"<th>{esc(h)} {'↑' if b == 'up' else '↓'}</th>" for _, h, b in cols)
    body = []
    for r in result.rows:
        cells = []
        for k, _, _ in cols:
            v = r.get(k)
            text = esc(_fmt(k, v))
            strong = k in best and v == best[k] and r["method"] not in ("centre", "random")
            cells.append(f"<td>{'<b>' + text + '</b>' if strong else text}</td>")
        body.append(f"<tr><th>{esc(r['method'])}</th>{''.join(cells)}</tr>")
    ex = result.examples
    grid = []
    if ex.get("maps"):
        methods = list(ex["maps"])
        grid.append("<tr><th>image</th>" + "".join(f"<th>{esc(m)}</th>" for m in methods) + "</tr>")
        for i in range(ex["images"].shape[0]):
            img = ex["images"][i]
            cells = [f"<td><img src='{data_uri(_outlined(img, ex['masks'][i]))}' alt='image'></td>"]
            for m in methods:
                pic = overlay(img, ex["maps"][m][i].numpy(), alpha=0.6)
                cells.append(f"<td><img src='{data_uri(pic)}' alt='{esc(m)}'></td>")
            grid.append("<tr><th>" + str(i) + "</th>" + "".join(cells) + "</tr>")
    fails = "".join(
        f"<li><b>{esc(f['method'])}</b>: {esc(f['error'])}</li>" for f in result.failures
    )
    settings = esc(", ".join(f"{k}={v}" for k, v in result.settings.items()))
    title = f"cnnlens benchmark: {result.suite}"
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>{esc(title)}</title><style>
body{{font:14px system-ui,sans-serif;margin:24px;color:#222}}
table{{border-collapse:collapse;margin:12px 0}}
th,td{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
th{{background:#f4f4f4}} .maps img{{width:112px;image-rendering:pixelated}}
.maps td{{padding:2px}} p.small{{color:#666;font-size:12px}}
</style></head><body>
<h1>{esc(title)}</h1>
<p>{esc(date or _dt.date.today().isoformat())}; {esc(str(result.settings.get("n_test", "?")))}
test images; {result.seconds:.0f} s in total. Bold: best method per column (baselines
excluded). Arrows say which direction is better.</p>
<table id="metrics"><tr><th>method</th>{head}</tr>{"".join(body)}</table>
{"<h2>Failures</h2><ul>" + fails + "</ul>" if fails else ""}
<h2>Example maps</h2><p class="small">Ground-truth evidence outlined in green.</p>
<table class="maps">{"".join(grid)}</table>
<h2>Settings</h2><p class="small">{settings}</p>
</body></html>
"""


def write_outputs(result, out_dir: str | Path, date: str | None = None) -> dict[str, Path]:
    """Write ``benchmark.md``, ``benchmark.json`` and ``benchmark.html`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "md": out / "benchmark.md",
        "json": out / "benchmark.json",
        "html": out / "benchmark.html",
    }
    write_text_atomic(paths["md"], markdown(result, date))
    write_json_atomic(paths["json"], to_json(result))
    write_text_atomic(paths["html"], html_page(result, date))
    return paths


__all__ = ["COLUMNS", "html_page", "markdown", "to_json", "write_outputs"]
