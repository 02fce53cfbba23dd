"""Self-contained HTML reports (plus ``results.json`` and ``maps.npz``) of explanations.

Use :func:`report` (also named ``build_report``; it runs
:func:`cnnlens.report.builder.build_report`)::

    path = cl.report([expl_a, expl_b], "out/", model=model, names=files)

Every page and chart of cnnlens renders from a template in ``report/templates/``
through :mod:`cnnlens.report.templating` (one autoescaping environment).

This module stays light (no torch): ``cnnlens/__init__`` imports it up front, so
that the name ``cnnlens.report`` is bound to the function :func:`report` after
Python has bound it to this package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def report(*args: Any, **kwargs: Any) -> Path:
    """Write ``report.html``, ``results.json`` and ``maps.npz``; see
    :func:`cnnlens.report.builder.build_report` for the arguments. Returns the page's path."""
    from .builder import build_report

    return build_report(*args, **kwargs)


build_report = report  # the package's two names for one function


__all__ = ["build_report", "report"]
