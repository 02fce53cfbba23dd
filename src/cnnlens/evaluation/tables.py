"""A benchmark result as a Markdown table, a JSON file and an HTML page with example maps."""

from __future__ import annotations

import datetime as _dt
import math
from pathlib import Path

import numpy as np
import torch

from ..colormaps import overlay
from ..core.atomic import write_json_atomic, write_text_atomic
from ..io import data_uri
from ..report.serialize import json_safe
from ..report.templating import render

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
ARROWS = {"up": "↑", "down": "↓"}
# reference rows, left out when picking the best value of a column
BASELINES = ("centre", "random")


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
    head = "| method | " + " | ".join(f"{h} {ARROWS[b]}" for _, h, b in cols) + " |"
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
    """The result as a JSON-safe dict: suite, settings, rows, failures and seconds."""
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


def _best_values(rows: list[dict], cols: list[tuple[str, str, str]]) -> dict[str, float]:
    """Per column the best finite value among the methods (the baselines excluded)."""
    best = {}
    for k, _, better in cols:
        vals = [r.get(k) for r in rows if r["method"] not in BASELINES]
        vals = [v for v in vals if isinstance(v, (int, float)) and math.isfinite(v)]
        if vals:
            best[k] = max(vals) if better == "up" else min(vals)
    return best


def _example_rows(examples: dict) -> list[dict]:
    """Per example image: the image with its evidence outlined, and each method's overlay."""
    if not examples.get("maps"):
        return []
    out = []
    for i in range(examples["images"].shape[0]):
        img = examples["images"][i]
        maps = [
            (m, data_uri(overlay(img, per_image[i].numpy(), alpha=0.6)))
            for m, per_image in examples["maps"].items()
        ]
        out.append({"image": data_uri(_outlined(img, examples["masks"][i])), "maps": maps})
    return out


def html_page(result, date: str | None = None) -> str:
    """A self-contained page: the table (best value per column in bold) and example maps.

    Args:
        result: a benchmark result (``suite``, ``rows``, ``failures``, ``examples``,
            ``settings``, ``seconds``).
        date: shown under the title; default today.

    Returns:
        The HTML text (rendered from ``report/templates/benchmark.html.j2``).
    """
    cols = present_columns(result.rows)
    best = _best_values(result.rows, cols)
    rows = []
    for r in result.rows:
        cells = []
        for k, _, _ in cols:
            v = r.get(k)
            strong = k in best and v == best[k] and r["method"] not in BASELINES
            cells.append((_fmt(k, v), strong))
        rows.append({"method": r["method"], "cells": cells})
    return render(
        "benchmark.html.j2",
        title=f"cnnlens benchmark: {result.suite}",
        date=date or _dt.date.today().isoformat(),
        n_test=result.settings.get("n_test", "?"),
        seconds=result.seconds,
        columns=[(h, ARROWS[b]) for _, h, b in cols],
        rows=rows,
        failures=result.failures,
        map_methods=list(result.examples.get("maps") or []),
        examples=_example_rows(result.examples),
        settings=", ".join(f"{k}={v}" for k, v in result.settings.items()),
    )


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
