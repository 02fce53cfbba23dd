"""Small line charts as self-contained SVG text, with no plotting library.

:func:`line_chart` draws several named series against a shared (or per-series)
x axis: axes with round-numbered ticks and light grid lines, axis labels, a
title and a legend. Missing values (``None``, NaN, infinities) break a line
instead of being drawn. The drawing renders from ``templates/line_chart.svg.j2``:
every piece of text (series names, labels, title, colours) is XML-escaped, so the
SVG can be inlined in an HTML page or saved as a file as is. The output depends
only on the arguments (no randomness, no clock), so charts can be compared in tests.

Tick positions follow the usual "nice numbers" rule: the step is 1, 2, 2.5 or
5 times a power of ten, chosen so that about ``ticks`` intervals cover the data,
and the axis is widened to whole steps.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from .templating import render, write_rendered

PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


def _num(v) -> float:
    """A plain float (tensors and numpy scalars included); NaN for None or junk."""
    if v is None:
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _seq(values) -> list[float]:
    if hasattr(values, "tolist"):
        values = values.tolist()
    return [_num(v) for v in values]


def nice_ticks(lo: float, hi: float, ticks: int = 5) -> list[float]:
    """Round tick values covering ``[lo, hi]`` with about ``ticks`` intervals."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"axis limits must be finite, got {lo}, {hi}")
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        pad = abs(lo) * 0.5 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(1, ticks)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * (1 - 1e-9))
    start = math.floor(lo / step + 1e-9) * step
    out, k = [], 0
    while True:
        v = round(start + k * step, 12)
        out.append(0.0 if abs(v) < step * 1e-9 else v)
        if v >= hi - step * 1e-9:
            break
        k += 1
    return out


def _tick_format(ticks: Sequence[float]) -> str:
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else 1.0
    big = max(abs(t) for t in ticks)
    if big >= 1e5 or (0 < big < 1e-3):
        return "{:.2g}"
    decimals = 0
    while decimals < 6 and abs(round(step, decimals) - step) > step * 1e-6:
        decimals += 1
    return "{:." + str(decimals) + "f}"


def _parse_series(series, x) -> list[tuple[str, list[float], list[float]]]:
    if not isinstance(series, Mapping) or not series:
        raise ValueError("series must be a non-empty mapping from a name to values")
    shared = _seq(x) if x is not None else None
    out = []
    for name, values in series.items():
        pair = (
            isinstance(values, tuple)
            and len(values) == 2
            and all(hasattr(v, "__len__") and not isinstance(v, str) for v in values)
        )
        if pair:
            xs, ys = _seq(values[0]), _seq(values[1])
        else:
            ys = _seq(values)
            xs = shared if shared is not None else [float(i) for i in range(len(ys))]
        if len(xs) != len(ys):
            raise ValueError(f"series {name!r}: {len(ys)} values for {len(xs)} x positions")
        out.append((str(name), xs, ys))
    return out


def _finite_runs(xs: list[float], ys: list[float]) -> list[list[tuple[float, float]]]:
    """The runs of consecutive points where both coordinates are finite (a gap ends a run)."""
    runs: list[list[tuple[float, float]]] = []
    current: list[tuple[float, float]] = []
    for xv, yv in zip(xs, ys):
        if math.isfinite(xv) and math.isfinite(yv):
            current.append((xv, yv))
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


def _limits(values: list[float], given) -> tuple[float, float]:
    if given is not None:
        lo, hi = float(given[0]), float(given[1])
        if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
            raise ValueError(f"axis limits must be two finite numbers, low < high: {given}")
        return lo, hi
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    return min(finite), max(finite)


def line_chart(
    series: Mapping[str, Sequence[float] | tuple[Sequence[float], Sequence[float]]],
    x: Sequence[float] | None = None,
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    width: int = 520,
    height: int = 320,
    xlim: tuple[float, float] | None = None,
    ylim: tuple[float, float] | None = None,
    ticks: int = 5,
    markers: bool = True,
    colors: Sequence[str] | None = None,
) -> str:
    """An SVG line chart of several named series.

    Args:
        series: name -> y values (against ``x``, or 0, 1, 2, ... without it), or
            name -> ``(xs, ys)`` for a series with its own x positions. Values may be
            lists, tensors or arrays; ``None`` and non-finite values leave a gap.
        x: shared x positions.
        title, xlabel, ylabel: text (escaped).
        width, height: size in pixels.
        xlim, ylim: fixed axis ranges; default: the data, widened to whole tick steps.
        ticks: about how many tick intervals per axis.
        markers: draw a dot at every point.
        colors: one colour per series (default: a ten-colour palette, repeated).

    Returns:
        The ``<svg>`` element as a string.
    """
    parsed = _parse_series(series, x)
    palette = list(colors) if colors else list(PALETTE)
    xs_all = [v for _, xs, ys in parsed for v, y in zip(xs, ys) if math.isfinite(y)]
    ys_all = [y for _, xs, ys in parsed for v, y in zip(xs, ys) if math.isfinite(v)]
    x_lo, x_hi = _limits(xs_all, xlim)
    y_lo, y_hi = _limits(ys_all, ylim)
    xt, yt = nice_ticks(x_lo, x_hi, ticks), nice_ticks(y_lo, y_hi, ticks)
    if xlim is None:
        x_lo, x_hi = xt[0], xt[-1]
    else:
        xt = [t for t in xt if x_lo - 1e-12 <= t <= x_hi + 1e-12]
    if ylim is None:
        y_lo, y_hi = yt[0], yt[-1]
    else:
        yt = [t for t in yt if y_lo - 1e-12 <= t <= y_hi + 1e-12]
    xfmt, yfmt = _tick_format(xt or [x_lo, x_hi]), _tick_format(yt or [y_lo, y_hi])

    longest = max(len(name) for name, _, _ in parsed)
    legend_w = min(220, 34 + 6.5 * longest)
    ylab_w = max(len(yfmt.format(t)) for t in yt) * 6.5 if yt else 20
    left = 22 + ylab_w + (16 if ylabel else 0)
    top = 30 if title else 14
    right = legend_w + 12
    bottom = 34 + (16 if xlabel else 0)
    pw, ph = max(40.0, width - left - right), max(40.0, height - top - bottom)

    def px(v: float) -> float:
        return left + (v - x_lo) / (x_hi - x_lo) * pw

    def py(v: float) -> float:
        return top + (y_hi - v) / (y_hi - y_lo) * ph

    # ids must be unique within an HTML page holding several charts: derive one from the data
    key = repr((parsed, width, height, x_lo, x_hi, y_lo, y_hi, title)).encode()
    drawn = []
    for k, (name, xs, ys) in enumerate(parsed):
        segments = [[(px(a), py(b)) for a, b in seg] for seg in _finite_runs(xs, ys)]
        drawn.append(
            {
                "name": name,
                "color": palette[k % len(palette)],
                "legend_y": top + 8 + 16 * k,
                "segments": [
                    {
                        "points": " ".join(f"{a:.1f},{b:.1f}" for a, b in seg),
                        "dots": seg if markers else [],
                    }
                    for seg in segments
                ],
            }
        )
    return render(
        "line_chart.svg.j2",
        width=width,
        height=height,
        title=title,
        xlabel=xlabel,
        ylabel=ylabel,
        left=left,
        top=top,
        pw=pw,
        ph=ph,
        yticks=[(py(t), yfmt.format(t)) for t in yt],
        xticks=[(px(t), xfmt.format(t)) for t in xt],
        clip="plot-" + hashlib.sha1(key).hexdigest()[:10],
        series=drawn,
        legend_x=left + pw + 14,
    )


def save_svg(svg: str, path: str | Path) -> Path:
    """Write SVG text to ``path`` atomically (parent folders are created)."""
    return write_rendered(path, svg)


__all__ = ["PALETTE", "line_chart", "nice_ticks", "save_svg"]
