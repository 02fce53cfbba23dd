"""Self-contained HTML pages for filters, activation maps and dreams.

One page per layer: every picture is an inline PNG ``data:`` URI, the style
sheet is inline, and every piece of text is escaped, so the file can be mailed
or archived and opened offline without requesting anything.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image

from ..io import data_uri
from ..report.serialize import write_text_atomic

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; max-width: 1400px; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.1rem; margin-top: 2rem; }
.note { color: #555; max-width: 60rem; }
.grid { display: flex; flex-wrap: wrap; gap: 8px; }
figure { margin: 0; text-align: center; }
figure img { image-rendering: pixelated; border: 1px solid #ddd; }
figcaption { font-size: 0.75rem; color: #444; max-width: 160px; overflow-wrap: anywhere; }
img.wide { max-width: 100%; image-rendering: pixelated; border: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.8rem; margin-top: 0.5rem; }
td, th { border: 1px solid #ddd; padding: 2px 6px; text-align: left; }
"""


@dataclass
class Section:
    """A heading, an optional note, an optional wide picture and captioned figures."""

    heading: str
    note: str | None = None
    picture: Image.Image | None = None
    figures: Sequence[tuple[Image.Image, str]] = field(default_factory=list)
    figure_width: int = 128


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _section(s: Section) -> str:
    parts = [f"<h2>{_e(s.heading)}</h2>"]
    if s.note:
        parts.append(f'<p class="note">{_e(s.note)}</p>')
    if s.picture is not None:
        parts.append(f'<img class="wide" alt="{_e(s.heading)}" src="{data_uri(s.picture)}">')
    if s.figures:
        parts.append('<div class="grid">')
        for pic, caption in s.figures:
            parts.append(
                f'<figure><img width="{s.figure_width}" alt="{_e(caption)}" '
                f'src="{data_uri(pic)}"><figcaption>{_e(caption)}</figcaption></figure>'
            )
        parts.append("</div>")
    return "\n".join(parts)


def render_page(
    title: str, sections: Sequence[Section], settings: Mapping[str, Any] | None = None
) -> str:
    """The HTML text of a page (see :func:`write_page`)."""
    rows = "".join(
        f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in (settings or {}).items()
    )
    table = f"<table>{rows}</table>" if rows else ""
    stamp = datetime.now().isoformat(timespec="seconds")
    body = "\n".join(_section(s) for s in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1>{table}\n{body}\n"
        f'<p class="note">Written by cnnlens on {_e(stamp)}.</p></body></html>\n'
    )


def write_page(
    path: str | Path,
    title: str,
    sections: Sequence[Section],
    settings: Mapping[str, Any] | None = None,
) -> Path:
    """Write one self-contained page atomically (parent folders are created).

    Args:
        path: the ``.html`` file.
        title: page title and heading.
        sections: the content, in order.
        settings: shown as a key/value table under the title (model, layer, steps...).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(target, render_page(title, sections, settings))
    return target
