"""What every ``cnnlens`` command shares: the typer app, options, output and parsing.

The command modules (``explain``, ``perturbation``, ``analysis``, ``benchmark``,
``featurevis``, ``siam``) import from here and nowhere else in ``cli``. Nothing
here imports torch or a feature package at module level, so ``cnnlens --help``
stays instant: heavy imports happen inside the functions that need them.

Output rules: text that can hold user input (paths, names, messages that quote
them) is never read as rich markup. :func:`say` and :func:`note` print it
verbatim; table cells and progress descriptions go through :func:`escape`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer
from rich.console import Console
from rich.markup import escape as escape  # re-exported for command modules
from rich.text import Text

from .progress import PlainProgress
from .progress import RichReporter as RichReporter  # re-exported
from .progress import progress_bar as _progress_bar

if TYPE_CHECKING:
    from rich.progress import Progress

    from ..models.base import LoadedModel

app = typer.Typer(
    add_completion=False,
    rich_markup_mode=None,  # plain click help: flags show no "<bool>", types show as words
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Explain image CNNs: attribution maps and HTML reports.",
)
console = Console(stderr=True)
out = Console()


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        out.print(f"cnnlens {__version__}", markup=False, highlight=False)
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def main_options(
    ctx: typer.Context,
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Explain image CNNs: attribution maps and HTML reports."""
    if ctx.invoked_subcommand is None:  # bare `cnnlens`: the help, and success
        out.print(ctx.get_help(), markup=False, highlight=False)
        raise typer.Exit()


class Opt:
    """Options of every command that loads a model (typer reads them as parameter defaults).

    A flag (a bool option) gets an empty metavar: it takes no value, so the help shows no
    ``<bool>`` after it.
    """

    model = typer.Option(
        "efficientnet_lite0",
        "--model",
        "-m",
        metavar="NAME|FILE",
        help="Model name, checkpoint, or hf:DIR.",
    )
    weights = typer.Option(
        "default", metavar="default|none|FILE", help="The library's weights, none, or a file."
    )
    trust = typer.Option(
        False,
        "--trust-checkpoint",
        metavar="",
        help="Allow unpickling a checkpoint you trust (it can run code).",
    )
    labels = typer.Option(None, metavar="FILE", help="Class names file (one per line or JSON).")
    device = typer.Option(None, metavar="DEVICE", help="cpu, cuda, cuda:1 ... (default cpu).")
    # 100 million, as cnnlens.io.DEFAULT_MAX_PIXELS (not imported: the CLI starts without PIL)
    max_pixels = typer.Option(
        100_000_000,
        "--max-pixels",
        min=1,
        metavar="N",
        help="Refuse images with more pixels than this, unread (decompression bombs).",
    )


def say(text: str) -> None:
    """Print plain text to stdout: no markup, no highlighting, long lines kept whole."""
    out.print(text, highlight=False, markup=False, soft_wrap=True)


def note(prefix: str, message: str, style: str = "yellow") -> None:
    """Print ``prefix message`` on one line of stderr, the prefix in ``style``.

    Neither part is read as markup, so paths like ``runs/[best]/model.pt`` print verbatim.
    """
    console.print(Text.assemble((prefix, style), " ", message), highlight=False, soft_wrap=True)


def fail(message: str) -> NoReturn:
    """Print ``error: message`` to stderr and exit with status 2 (a usage error)."""
    note("error:", message, style="red")
    raise typer.Exit(2)


def load(
    model: str, weights: str, trust_checkpoint: bool, labels: Path | None, device: str | None
) -> LoadedModel:
    """:func:`cnnlens.models.load_model`, turning a refusal into :func:`fail`."""
    import warnings

    from ..core.errors import CnnlensError
    from ..models import LabelsWarning, load_model

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LabelsWarning)
        try:
            loaded = load_model(
                model, weights, trust_checkpoint=trust_checkpoint, labels=labels, device=device
            )
        except CnnlensError as e:
            fail(str(e))
    for w in caught:
        if issubclass(w.category, LabelsWarning):
            note("warning:", str(w.message))
        else:  # not ours: shown as Python would have
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return loaded


def parse_target(text: str | None, *, default=None, top: bool = True):
    """Read a ``--target`` option.

    Args:
        text: the option as typed: class indices ``"285"`` or ``"285,281"``, or (when
            ``top``) ``"top5"``; None or blank means ``default``.
        default: what no ``--target`` means (None: each method's top-1 class).
        top: whether ``topK`` is accepted.

    Returns:
        ``default``, ``"topK"``, or ``[[c0, c1, ...]]``: one list of classes for one image
        (a caller explaining N images at once repeats it N times).
    """
    if text is None or not text.strip():
        return default
    t = text.strip().lower()
    if top and t.startswith("top"):
        k = t[3:].lstrip("-_")
        if not k.isdigit() or int(k) < 1:
            fail(f"--target {text!r}: write topK with K of 1 or more, e.g. top5")
        return f"top{int(k)}"
    try:
        classes = [int(c) for c in t.split(",") if c.strip()]
    except ValueError:
        classes = []
    if not classes:
        example = "967 or 967,968, or top5" if top else "285,281"
        fail(f"--target takes class indices like {example}, got {text!r}")
    return [classes]


_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def parse_indices(text: str, what: str = "--channels") -> list[int]:
    """``"0-15,32,40-43"`` -> ``[0, ..., 15, 32, 40, 41, 42, 43]`` (order kept, no repeats).

    Raises:
        ValueError: a part that is not an index or a range, a backwards range, or no index.
    """
    result: list[int] = []
    for part in text.split(","):
        if not part.strip():
            continue
        match = _RANGE.match(part)
        if not match:
            raise ValueError(f"{what} takes indices and ranges like 0-15,32; got {text!r}")
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.group(2) is not None else lo
        if hi < lo:
            raise ValueError(f"{what}: range {part.strip()!r} runs backwards")
        result.extend(i for i in range(lo, hi + 1) if i not in result)
    if not result:
        raise ValueError(f"{what} takes indices and ranges like 0-15,32; got {text!r}")
    return result


def progress_bar() -> Progress | PlainProgress:
    """The display every long command uses (on stderr): a bar with an ETA, or plain lines
    when stderr is not a terminal; see :mod:`cnnlens.cli.progress`."""
    return _progress_bar(console)
