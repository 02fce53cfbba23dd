"""Progress display of the CLI: a rich bar with an ETA on a terminal, plain lines elsewhere.

Library code reports through :mod:`cnnlens.core.progress`; :class:`RichReporter`
turns those tasks into rows of the display :func:`progress_bar` returns. On a
terminal that is a live rich bar (done, total, elapsed, time left). Without a
terminal (a log file, CI, a pipe) a live bar prints nothing for minutes, so
:class:`PlainProgress` prints one line when a task starts, one at most every
``every`` seconds while it runs (count, percent, elapsed, estimated time left)
and one when it ends.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.text import Text

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.progress import Progress


def clock(seconds: float) -> str:
    """``75.3`` -> ``"1:15"``; ``3725`` -> ``"1:02:05"``."""
    s = max(0, int(round(seconds)))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class _Task:
    def __init__(self, description: str, total: float | None, now: float):
        self.description, self.total, self.completed = description, total, 0.0
        self.began = self.printed = now

    def line(self, now: float) -> str:
        elapsed = now - self.began
        if not self.total:
            return f"{self.description}: {self.completed:g} done, {clock(elapsed)} elapsed"
        share = min(1.0, self.completed / self.total)
        text = (
            f"{self.description}: {self.completed:g}/{self.total:g} ({share:.0%}), "
            f"{clock(elapsed)} elapsed"
        )
        if 0 < share < 1:
            text += f", about {clock(elapsed * (1 - share) / share)} left"
        return text


class PlainProgress:
    """The part of ``rich.progress.Progress`` cnnlens uses, printed as plain lines.

    Args:
        console: where the lines go (the CLI's stderr console).
        every: seconds between two lines of the same task.
        now: the clock (tests pass a fake one).
    """

    def __init__(self, console: Console, every: float = 10.0, now=time.monotonic):
        self.console, self.every, self.now = console, float(every), now
        self.tasks: dict[int, _Task] = {}
        self._next = 0

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def _print(self, text: str) -> None:
        self.console.print(Text(text), highlight=False, soft_wrap=True)

    def add_task(self, description: str, total: float | None = None, **_) -> int:
        task_id, self._next = self._next, self._next + 1
        self.tasks[task_id] = _Task(Text.from_markup(description).plain, total, self.now())
        steps = f" ({total:g} steps)" if total else ""
        self._print(f"{self.tasks[task_id].description}: started{steps}")
        return task_id

    def update(self, task_id: int, *, completed=None, total=None, description=None, **_) -> None:
        task = self.tasks[task_id]
        if description is not None:
            task.description = Text.from_markup(description).plain
        if total is not None:
            task.total = total
        if completed is not None:
            task.completed = completed
        self._maybe_print(task)

    def advance(self, task_id: int, advance: float = 1) -> None:
        task = self.tasks[task_id]
        task.completed += advance
        self._maybe_print(task)

    def _maybe_print(self, task: _Task) -> None:
        now = self.now()
        if now - task.printed >= self.every:
            task.printed = now
            self._print(task.line(now))

    def remove_task(self, task_id: int) -> None:
        task = self.tasks.pop(task_id)
        now = self.now()
        self._print(f"{task.description}: done in {clock(now - task.began)}")


class RichReporter:
    """Shows cnnlens progress tasks (:mod:`cnnlens.core.progress`) on a progress display."""

    def __init__(self, bar: Progress | PlainProgress):
        self.bar = bar
        self.tasks: dict[str, int] = {}

    def start(self, description: str, total: int) -> Callable[[int], None]:
        task_id = self.bar.add_task(escape(description), total=total)
        self.tasks[description] = task_id
        return lambda n=1: self.bar.advance(task_id, n)

    def finish(self, description: str) -> None:
        task_id = self.tasks.pop(description, None)
        if task_id is not None:
            self.bar.remove_task(task_id)


def progress_bar(console: Console) -> Progress | PlainProgress:
    """The display every long command uses: a live bar with an ETA on a terminal, else lines."""
    if not console.is_terminal:
        return PlainProgress(console)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
