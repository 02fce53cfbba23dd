"""Self-contained HTML reports (plus ``results.json`` and ``maps.npz``) of explanations.

Use :func:`build_report` (also exported as ``report``)::

    path = build_report([expl_a, expl_b], "out/", model=model, names=files)
"""

from __future__ import annotations

from .builder import build_report

report = build_report

__all__ = ["build_report", "report"]
