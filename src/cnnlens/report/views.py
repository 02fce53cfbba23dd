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


# Extras that mark an explanation as an explicit edit of the image (meaningful
# perturbation and its relatives): the report then shows mask, edit and scores.
EDIT_KEYS = ("mask", "perturbed", "score", "score_before")


def edit_panels(
    expl: Explanation,
    to_display: Callable[[torch.Tensor], torch.Tensor | None],
    label: LabelFn,
    max_targets: int,
) -> list[list[dict[str, Any]]] | None:
    """Per image and shown target: learned mask, edited image, ``p → p'`` and curves.

    Returns ``None`` unless the explanation's extras hold every key of
    :data:`EDIT_KEYS`. ``to_display`` turns normalised inputs ``(K, 3, H, W)``
    into [0, 1] display images.
    """
    from .charts import line_chart

    ex = expl.extras
    if not all(isinstance(ex.get(k), torch.Tensor) for k in EDIT_KEYS):
        return None
    masks = ex["mask"].detach().float().cpu()
    n, t = masks.shape[:2]
    shown = min(t, max_targets)
    edited = to_display(ex["perturbed"][:, :shown].flatten(0, 1))
    if edited is None:
        return None
    edited = edited.view(n, shown, *edited.shape[1:])
    curve = ex.get("curve") if isinstance(ex.get("curve"), dict) else {}
    out = []
    for i in range(n):
        row = []
        for j in range(shown):
            cls = int(expl.targets[i, j])
            gray = masks[i, j].clamp(0, 1).unsqueeze(0).expand(3, -1, -1)
            charts = []
            for names, title in ((("score", "area"), "score and area"), (("loss",), "loss")):
                series = {
                    name: curve[name][i, j].tolist()
                    for name in names
                    if isinstance(curve.get(name), torch.Tensor) and curve[name].dim() == 3
                }
                if series:
                    svg = line_chart(series, title=title, xlabel="iteration",
                                     width=320, height=190, markers=False)  # fmt: skip
                    charts.append(
                        "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()
                    )
            area = ex.get("area")
            row.append(
                {
                    "label": label(cls, i),
                    "target": cls,
                    "mask_src": data_uri(photo(gray)),
                    "edited_src": data_uri(photo(edited[i, j])),
                    "before": f"{float(ex['score_before'][i, j]):.3f}",
                    "after": f"{float(ex['score'][i, j]):.3f}",
                    "area": None if area is None else f"{100 * float(area[i, j]):.1f}%",
                    "charts": charts,
                }
            )
        out.append(row)
    return out
