"""Self-contained HTML pages for filters, activation maps and dreams.

One page per layer: every picture is an inline PNG ``data:`` URI, the style
sheet is inline, and every piece of text is escaped (the page renders from
``report/templates/sections.html.j2``), so the file can be mailed or archived
and opened offline without requesting anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image

from ..io import data_uri
from ..report.templating import render, write_rendered


@dataclass
class Section:
    """A heading, an optional note, an optional wide picture and captioned figures."""

    heading: str
    note: str | None = None
    picture: Image.Image | None = None
    figures: Sequence[tuple[Image.Image, str]] = field(default_factory=list)
    figure_width: int = 128


def _section_view(s: Section) -> dict[str, Any]:
    """The template's view of one section: pictures as ``data:`` URIs."""
    return {
        "heading": s.heading,
        "note": s.note,
        "picture": data_uri(s.picture) if s.picture is not None else None,
        "figures": [(data_uri(pic), caption) for pic, caption in s.figures],
        "width": s.figure_width,
    }


def render_page(
    title: str, sections: Sequence[Section], settings: Mapping[str, Any] | None = None
) -> str:
    """The HTML text of a page (see :func:`write_page`)."""
    return render(
        "sections.html.j2",
        title=title,
        settings=settings or {},
        sections=[_section_view(s) for s in sections],
        stamp=datetime.now().isoformat(timespec="seconds"),
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

    Returns:
        The path of the written page.
    """
    return write_rendered(path, render_page(title, sections, settings))
