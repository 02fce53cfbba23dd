"""The one way cnnlens writes HTML and SVG: jinja templates with autoescaping.

Every page (the explanation report, the benchmark table, the feature-visualisation
and image-analysis pages, the SIAM explanation, the 2-D map) and every SVG chart is
a small Python function that prepares plain values plus one template in
``report/templates/``, rendered by :func:`render`. Pages share ``base.html.j2``
(the document skeleton) and ``macros.html.j2`` (the settings table).

Escaping happens in one place: the environment autoescapes every ``{{ value }}``,
and :func:`escape` (the environment's ``finalize`` step) turns ``& < > " '`` into
``&amp; &lt; &gt; &quot; &#x27;`` (the spelling the pages had before they were
templates; autoescape alone would write ``&#34; &#39;``). A value that is already
markup, i.e. one of our own templates' output, passes through unchanged; user text
never does, so a file name such as ``<script>alert(1)</script>.png`` is shown,
never run. Undefined names raise (``StrictUndefined``) instead of printing nothing.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from ..core.atomic import write_text_atomic

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"


def escape(value: Any) -> Markup:
    """``value`` as HTML/XML text: ``& < > " '`` become entities; markup passes through.

    Args:
        value: anything; it is converted with ``str`` unless it is already markup
            (has ``__html__``, as template output and ``Markup`` do).

    Returns:
        Safe markup.
    """
    if hasattr(value, "__html__"):
        return Markup(value.__html__())
    return Markup(html.escape(str(value), quote=True))


def number(value: Any, spec: str = ".3f") -> str:
    """Template filter ``num``: ``value`` formatted with ``spec`` (``"+.3f"``, ``".1f"``).

    Args:
        value: a number.
        spec: a format specification, as in ``format(value, spec)``.

    Returns:
        The text.
    """
    return format(value, spec)


def wrap_parts(name: Any) -> list[str]:
    """Template filter ``wrap_parts``: ``name`` cut after each ``_``, ``-`` and ``.``.

    Joined with ``<wbr>``, the parts let a long method name such as
    ``contrastive_excitation_backprop`` wrap at those places and nowhere else.

    Args:
        name: the text.

    Returns:
        The pieces, in order; they join to ``str(name)``.
    """
    text = str(name)
    return [p for p in re.split(r"(?<=[_.\-])", text) if p] or [text]


@lru_cache(maxsize=1)
def environment() -> Environment:
    """The shared environment: templates from ``TEMPLATE_DIR``, autoescape, strict undefined."""
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=select_autoescape(enabled_extensions=("html", "svg", "j2"), default=True),
        undefined=StrictUndefined,
        finalize=escape,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["num"] = number
    env.filters["wrap_parts"] = wrap_parts
    return env


def render(name: str, **context: Any) -> str:
    """Render template ``name`` (a file in ``TEMPLATE_DIR``) with ``context``.

    Args:
        name: the template file, e.g. ``"report.html.j2"``.
        **context: the values the template reads; strings are escaped on output.

    Returns:
        The rendered text.
    """
    return environment().get_template(name).render(**context)


def source_hash(name: str) -> str:
    """The Content-Security-Policy source (``sha256-...``) that allows template ``name``
    inlined verbatim as a ``<script>`` (``<script>{% include name %}</script>``).

    Args:
        name: a template without variables, e.g. ``"zoom.js.j2"``.

    Returns:
        ``"sha256-"`` and the base64 SHA-256 digest of the rendered text.
    """
    digest = hashlib.sha256(render(name).encode("utf-8")).digest()
    return "sha256-" + base64.b64encode(digest).decode("ascii")


def write_rendered(path: str | Path, text: str) -> Path:
    """Write rendered ``text`` to ``path`` atomically, creating parent folders.

    Args:
        path: destination file.
        text: the page or drawing.

    Returns:
        The destination path.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(target, text)
    return target


__all__ = ["TEMPLATE_DIR", "environment", "escape", "number", "render", "source_hash",
           "wrap_parts", "write_rendered"]  # fmt: skip
