"""The report page itself: the template's context, and the rendered page with its size.

:func:`page_context` gathers what ``report.html.j2`` shows (from the dicts that
:mod:`cnnlens.report.views` makes); :func:`render_page` renders it, with the page's
own size in the footer and the hash that lets its one script run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import torch

from ..core.explanation import Explanation
from . import views
from .pictures import colorbars, human_size, picture_uri
from .templating import render, source_hash

TEMPLATE_NAME = "report.html.j2"
SCRIPT_NAME = "zoom.js.j2"
# Stands in for the page size while the page is rendered; the footer is the page's
# last text, so the last occurrence is the one replaced.
_SIZE_MARK = "@@cnnlens-page-size@@"


def page_context(
    title: str,
    model_name: str | None,
    now: datetime,
    names: list[str],
    photos: list[Any],
    pred_lists: list[list[dict[str, Any]]],
    explanations: Sequence[Explanation],
    keys: list[str],
    method_json: dict[str, Any],
    label: views.LabelFn,
    errors: list[dict[str, Any]],
    max_targets: int,
    to_display: Callable[[torch.Tensor], torch.Tensor | None] = lambda batch: None,
) -> dict[str, Any]:
    """Everything the template needs, as plain dicts, lists and strings."""
    photo_src = [picture_uri(p) if p is not None else None for p in photos]
    methods = [
        views.method_header(e, k, j, method_json[k]["params"])
        for j, (k, e) in enumerate(zip(keys, explanations, strict=True))
    ]
    cells = [views.method_cells(e, photos, label, max_targets) for e in explanations]
    edits = [views.edit_panels(e, to_display, label, max_targets) for e in explanations]
    page_images = []
    for i, name in enumerate(names):
        preds = views.prediction_rows(pred_lists[i])
        page_images.append(
            {
                "anchor": f"image-{i}",
                "name": name,
                "src": photo_src[i],
                "top1": preds[0] if preds else None,
                "predictions": preds,
                "methods": [
                    {
                        "header": m,
                        "cells": c[i],
                        "edits": ed[i] if ed is not None else [],
                        "hidden": max(0, len(e.targets[i]) - max_targets),
                    }
                    for m, c, ed, e in zip(methods, cells, edits, explanations, strict=True)
                ],
            }
        )
    return {
        "title": title,
        "model_name": model_name,
        "created": now.strftime("%Y-%m-%d %H:%M"),
        "n_images": len(names),
        "n_methods": len(explanations),
        "methods": methods,
        "images": page_images,
        "errors": errors,
        "colorbars": colorbars(),
    }


def render_page(context: dict[str, Any]) -> str:
    """The report page for ``context`` (see :func:`page_context`), its footer giving its size.

    The size is that of the returned text in UTF-8 (as written to disk), in the
    words of :func:`cnnlens.report.pictures.human_size`.
    """
    text = render(TEMPLATE_NAME, **context, script_hash=source_hash(SCRIPT_NAME),
                  page_size=_SIZE_MARK)  # fmt: skip
    head, _, tail = text.rpartition(_SIZE_MARK)
    rest = len(head.encode("utf-8")) + len(tail.encode("utf-8"))
    size = human_size(rest)
    for _ in range(3):  # the size's own text counts too; settles at once in practice
        size, before = human_size(rest + len(size.encode("utf-8"))), size
        if size == before:
            break
    return head + size + tail


__all__ = ["page_context", "render_page"]
