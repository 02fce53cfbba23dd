"""Progress reporting that long-running methods use and front ends display.

Library code calls :func:`task`; by default nothing is shown. A front end (the
CLI) installs a reporter with :func:`reporting`, e.g. one backed by rich.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol


class Reporter(Protocol):
    def start(self, description: str, total: int) -> Callable[[int], None]: ...

    def finish(self, description: str) -> None: ...


_CURRENT: ContextVar[Reporter | None] = ContextVar("cnnlens_progress", default=None)


def _noop(_: int = 1) -> None:
    return None


@contextmanager
def task(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """Yield an ``advance(n=1)`` callable for ``total`` steps of work."""
    reporter = _CURRENT.get()
    if reporter is None:
        yield _noop
        return
    advance = reporter.start(description, total)
    try:
        yield advance
    finally:
        reporter.finish(description)


@contextmanager
def reporting(reporter: Reporter) -> Iterator[None]:
    """Show every :func:`task` started inside the block through ``reporter``."""
    token = _CURRENT.set(reporter)
    try:
        yield
    finally:
        _CURRENT.reset(token)
