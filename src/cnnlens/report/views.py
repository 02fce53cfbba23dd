"""Turn explanations and images into the plain dicts the HTML template renders.

Every picture becomes a PNG ``data:`` URI here, so the page is one
self-contained file. Strings (names, labels, method names) are passed through
untouched: the template escapes them.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..colormaps import colorbar, overlay
from ..core.explanation import Explanation
from ..core.masks import MaskResult
from ..io import data_uri, to_pil

# Colours saturate at this quantile of each map, so that a few extreme pixels (common
# in gradient maps) do not wash out the rest.
DISPLAY_QUANTILE = 0.995

# Longest side, in pixels, of every picture embedded in the page. Larger
# inputs are shrunk first so the HTML file stays a reasonable size.
MAX_SIDE = 224
OVERLAY_ALPHA = 0.5

LabelFn = Callable[[int, int], str]


def fmt_value(x: float) -> str:
    """A compact number for colour-bar ends: ``0.42``, ``-3.1``, ``7.9e-05``, ``1.2e+04``."""
    if x == 0 or not math.isfinite(x):
        return "0" if x == 0 else str(x)
    if 1e-2 <= abs(x) < 1e4:
        return f"{x:.3g}"
    return f"{x:.1e}"


def photo(image: torch.Tensor) -> Image.Image:
    """A ``(3, H, W)`` [0, 1] tensor to an RGB PIL image no larger than ``MAX_SIDE``."""
    pil = to_pil(image.detach().float().cpu().clamp(0, 1))
    if max(pil.size) > MAX_SIDE:
        pil = pil.copy()
        pil.thumbnail((MAX_SIDE, MAX_SIDE), Image.LANCZOS)
    return pil


def colorbars() -> dict[bool, str]:
    """Data URIs of the two colour bars: sequential (unsigned) and diverging (signed)."""
    return {
        False: data_uri(colorbar(width=256, height=10, signed=False)),
        True: data_uri(colorbar(width=256, height=10, signed=True)),
    }


def map_range(values: torch.Tensor, signed: bool) -> tuple[float, float]:
    """The value range a colour bar should show for one raw map.

    Signed maps use a symmetric range around zero so white means zero.
    """
    lo, hi = float(values.min()), float(values.max())
    if signed:
        m = max(abs(lo), abs(hi))
        return -m, m
    return lo, hi


def method_cells(
    expl: Explanation,
    photos: Sequence[Image.Image | None],
    label: LabelFn,
    max_targets: int,
) -> list[list[dict[str, Any]]]:
    """Overlays of one method for every image and shown target.

    Args:
        expl: the method's explanation.
        photos: display image per image index (``None`` when unknown).
        label: ``label(class_index, image_index)`` -> class name.
        max_targets: how many targets per image to render.

    Returns:
        Per image a list of cells ``{target, label, src, lo, hi}``; ``src`` is a
        data URI (``None`` without a photo to draw on).
    """
    raw = expl.maps.detach().float().cpu()
    shown = expl.normalized(quantile=DISPLAY_QUANTILE).cpu()
    targets = expl.targets.detach().cpu().tolist()
    out: list[list[dict[str, Any]]] = []
    for i, row in enumerate(targets):
        cells = []
        for t, cls in enumerate(row[:max_targets]):
            lo, hi = map_range(raw[i, t], expl.signed)
            values = shown[i, t].numpy().astype(np.float32)
            src = None
            if photos[i] is not None:
                img = overlay(photos[i], values, alpha=OVERLAY_ALPHA, signed=expl.signed)
                src = data_uri(img)
            cells.append(
                {
                    "target": int(cls),
                    "label": label(int(cls), i),
                    "src": src,
                    "lo": fmt_value(lo),
                    "hi": fmt_value(hi),
                }
            )
        out.append(cells)
    return out


def method_header(
    expl: Explanation, key: str, position: int, params: dict[str, Any]
) -> dict[str, Any]:
    """Column/section header data for one method: name, runtime, signedness, parameters."""
    return {
        "key": key,
        "anchor": f"method-{position}",
        "seconds": f"{expl.seconds:.2f}",
        "signed": expl.signed,
        "params": [(str(k), _short(v)) for k, v in params.items()],
        "shape": "×".join(str(s) for s in expl.maps.shape[2:]),
    }


def _short(value: Any, limit: int = 80) -> str:
    """A one-line, length-limited text form of a (JSON-safe) parameter value."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def prediction_rows(pred_list: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Template rows for one image's top-k predictions, with a bar width in percent."""
    rows = []
    for p in pred_list:
        prob = float(p["prob"])
        rows.append(
            {
                "index": int(p["index"]),
                "label": str(p["label"]),
                "pct": f"{100 * prob:.1f}",
                "width": f"{max(0.0, min(100.0, 100 * prob)):.1f}",
            }
        )
    return rows


def _chart_uri(curves: dict[str, torch.Tensor], names: Sequence[str], title: str) -> str | None:
    """An SVG line chart of the named per-iteration curves, as a data URI (None: none of them)."""
    from .charts import line_chart

    series = {name: curves[name].tolist() for name in names if name in curves}
    if not series:
        return None
    svg = line_chart(series, title=title, xlabel="iteration", width=320, height=190,
                     markers=False)  # fmt: skip
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


def edit_panels(
    expl: Explanation,
    to_display: Callable[[torch.Tensor], torch.Tensor | None],
    label: LabelFn,
    max_targets: int,
) -> list[list[dict[str, Any]]] | None:
    """Per image, one panel per shown target and area: mask, edited image, ``p → p'``, curves.

    Methods that learn masks (``meaningful_perturbation``, ``extremal``) carry a
    :class:`MaskResult`; every area of it gets its own panel (extremal may sweep
    several), captioned with the target area. Returns ``None`` for other
    explanations. ``to_display`` turns normalised inputs ``(K, 3, H, W)`` into
    [0, 1] display images.
    """
    try:
        result = MaskResult.of(expl)
    except ValueError:
        return None
    n, t, a = result.shape
    shown = min(t, max_targets)
    edited = to_display(result.edited[:, :shown].flatten(0, 2))
    if edited is None:
        return None
    edited = edited.view(n, shown, a, *edited.shape[1:])
    masks = result.mask.detach().float().cpu()
    curves = {k: v.detach().float().cpu() for k, v in result.curves.items()}
    first = ("score", "area")  # the rest (loss, regulariser) gets a chart of its own
    rest = [k for k in curves if k not in first]
    out = []
    for i in range(n):
        row = []
        for j in range(shown):
            cls = int(expl.targets[i, j])
            for k in range(a):
                gray = masks[i, j, k].clamp(0, 1).unsqueeze(0).expand(3, -1, -1)
                mine = {name: c[i, j, k] for name, c in curves.items()}
                charts = [_chart_uri(mine, first, "score and area"),
                          _chart_uri(mine, rest, " and ".join(rest))]  # fmt: skip
                row.append(
                    {
                        "label": label(cls, i),
                        "target": cls,
                        "target_area": None
                        if result.areas is None
                        else f"{100 * result.areas[k]:g}%",
                        "mask_src": data_uri(photo(gray)),
                        "edited_src": data_uri(photo(edited[i, j, k])),
                        "before": f"{float(result.score_before[i, j]):.3f}",
                        "after": f"{float(result.score[i, j, k]):.3f}",
                        "area": f"{100 * float(result.area[i, j, k]):.1f}%",
                        "charts": [c for c in charts if c is not None],
                    }
                )
        out.append(row)
    return out
