"""The ``cnnlens`` command line: maps options to API calls, nothing more.

``app`` (the typer application, entry point ``cnnlens = "cnnlens.cli:app"``) lives
in :mod:`cnnlens.cli.common` with the options, output helpers and parsers every
command shares. Each command group is one module that adds its commands to
``app`` when imported; importing this package imports them all:

- :mod:`~cnnlens.cli.explain`: ``explain``, ``methods``, ``models``, ``layers``
- :mod:`~cnnlens.cli.perturbation`: ``interrogate``, ``boxes``
- :mod:`~cnnlens.cli.featurevis`: ``filters``, ``activations``, ``dream``
- :mod:`~cnnlens.cli.analysis`: ``index``, ``patches``, ``neighbours``, ``embed``
- :mod:`~cnnlens.cli.benchmark`: ``benchmark``
- :mod:`~cnnlens.cli.siam`: ``siam data|train|evaluate|explain``

No module imports torch at import time, so ``cnnlens --help`` is instant.
"""

from __future__ import annotations

from .common import app

# Imported for their side effect: each adds its commands to ``app``. The help lists
# commands in the order they are added, so keep this order (and keep isort out).
# isort: off
from . import explain, perturbation, analysis, benchmark, featurevis, siam  # noqa: F401
# isort: on

__all__ = ["app", "main"]


def main() -> None:  # pragma: no cover
    """Run the command line (what the ``cnnlens`` script does)."""
    app()
