"""Turn explanations and images into the plain dicts the HTML template renders.

Every picture becomes a ``data:`` URI here (JPEG, see :mod:`cnnlens.report.pictures`),
so the page is one self-contained file. Strings (names, labels, method names) are
passed through untouched: the template escapes them.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..colormaps import overlay
from ..core.explanation import Explanation
from ..core.masks import MaskResult
from .pictures import photo, picture_uri

# Colours saturate at this quantile of each map, so that a few extreme pixels (common
# in gradient maps) do not wash out the rest.
DISPLAY_QUANTILE = 0.995
OVERLAY_ALPHA = 0.5

LabelFn = Callable[[int, int], str]


def target_label(expl, image: int, t: int, label: LabelFn) -> str:
    """What target ``t`` of image ``image`` explains: a class name, or the description a
    target object (``cnnlens.targets``) recorded in ``extras["target"]`` when it has no class."""
    cls = int(expl.targets[image, t])
    described = (getattr(expl, "extras", None) or {}).get("target")
    if cls < 0 and described is not None:
        try:
            return str(described[image][t])
        except (IndexError, KeyError, TypeError):
            pass
    return label(cls, image)


def fmt_value(x: float) -> str:
    """A compact number for colour-bar ends: ``0.42``, ``-3.1``, ``7.9e-05``, ``1.2e+04``."""
    if x == 0 or not math.isfinite(x):
        return "0" if x == 0 else str(x)
    if 1e-2 <= abs(x) < 1e4:
        return f"{x:.3g}"
    return f"{x:.1e}"


def scale_ends(lo: float, hi: float, low: float, high: float) -> tuple[str, str]:
    """The texts at the two ends of a colour bar whose colours span ``[lo, hi]``.

    ``low`` and ``high`` are the map's own extremes: an end beyond which values were
    clipped to its colour is marked, ``"≤ -0.3"`` or ``"≥ 0.166"``.
    """
    left, right = fmt_value(lo), fmt_value(hi)
    if low < lo:
        left = f"≤ {left}"
    if high > hi:
        right = f"≥ {right}"
    return left, right


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
        Per image a list of cells ``{target, label, src, lo, hi, raw}``: ``src`` is a
        data URI (``None`` without a photo to draw on); ``lo`` and ``hi`` are the values
        the colour bar's ends stand for (marked when values beyond were clipped);
        ``raw`` says the map's own range.
    """
    raw = expl.maps.detach().float().cpu().flatten(2)
    low, high = raw.amin(2).tolist(), raw.amax(2).tolist()
    lo, hi = (v.cpu().tolist() for v in expl.display_range(quantile=DISPLAY_QUANTILE))
    shown = expl.normalized(quantile=DISPLAY_QUANTILE).cpu()
    targets = expl.targets.detach().cpu().tolist()
    out: list[list[dict[str, Any]]] = []
    for i, row in enumerate(targets):
        cells = []
        for t, cls in enumerate(row[:max_targets]):
            values = shown[i, t].numpy().astype(np.float32)
            src = None
            if photos[i] is not None:
                img = overlay(photos[i], values, alpha=OVERLAY_ALPHA, signed=expl.signed)
                src = picture_uri(img)
            left, right = scale_ends(lo[i][t], hi[i][t], low[i][t], high[i][t])
            cells.append(
                {
                    "target": int(cls),
                    "label": target_label(expl, i, t, label),
                    "src": src,
                    "lo": left,
                    "hi": right,
                    "raw": f"map values {fmt_value(low[i][t])} to {fmt_value(high[i][t])}",
                }
            )
        out.append(cells)
    return out


def method_header(
    expl: Explanation, key: str, position: int, params: Mapping[str, Any]
) -> dict[str, Any]:
    """Column/section header data for one method: name, runtime, signedness, parameters."""
    return {
        "key": key,
        "anchor": f"method-{position}",
        "seconds": f"{expl.seconds:.2f}",
        "signed": expl.signed,
        "params": param_rows(params, expl.extras),
        "shape": "×".join(str(s) for s in expl.maps.shape[2:]),
    }


def param_rows(params: Mapping[str, Any], extras: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The parameters worth showing: ``{key, value, auto}`` rows.

    A parameter left at ``None`` or ``"auto"`` shows the value the method reports
    under the same name in its ``extras`` (``layer=None`` becomes ``layer=bn2``,
    marked ``auto``); one the method does not report is left out (``results.json``
    keeps every parameter).
    """
    rows = []
    for k, v in params.items():
        auto = v is None or v == "auto"
        if auto and _is_scalar(extras.get(k)) and extras.get(k) != v:
            rows.append({"key": str(k), "value": _short(extras[k]), "auto": True})
        elif v is not None:
            rows.append({"key": str(k), "value": _short(v), "auto": False})
    return rows


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


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
                        "mask_src": picture_uri(photo(gray)),
                        "edited_src": picture_uri(photo(edited[i, j, k])),
                        "before": f"{float(result.score_before[i, j]):.3f}",
                        "after": f"{float(result.score[i, j, k]):.3f}",
                        "area": f"{100 * float(result.area[i, j, k]):.1f}%",
                        "charts": [c for c in charts if c is not None],
                    }
                )
        out.append(row)
    return out
