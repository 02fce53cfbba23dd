"""The ``cnnlens`` command line: maps options to API calls, nothing more."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Explain image CNNs: attribution maps and HTML reports.",
)
console = Console(stderr=True)
out = Console()


class RichReporter:
    """Shows cnnlens progress tasks as rich progress bars."""

    def __init__(self, bar: Progress):
        self.bar = bar
        self.tasks: dict[str, int] = {}

    def start(self, description: str, total: int):
        task_id = self.bar.add_task(description, total=total)
        self.tasks[description] = task_id
        return lambda n=1: self.bar.advance(task_id, n)

    def finish(self, description: str) -> None:
        task_id = self.tasks.pop(description, None)
        if task_id is not None:
            self.bar.remove_task(task_id)


def _load(
    model: str, weights: str, trust_checkpoint: bool, labels: Path | None, device: str | None
):
    from .errors import CnnlensError
    from .models import load_model

    try:
        return load_model(
            model, weights, trust_checkpoint=trust_checkpoint, labels=labels, device=device
        )
    except CnnlensError as e:
        console.print(f"[red]error:[/red] {e}", markup=True, highlight=False)
        raise typer.Exit(2) from None


def _target(top_k: int, target: str | None):
    if target:
        try:
            classes = [int(c) for c in target.split(",") if c.strip()]
        except ValueError:
            console.print(
                f"[red]error:[/red] --target takes class indices like 285,281, got {target!r}"
            )
            raise typer.Exit(2) from None
        return [classes]  # the same classes for each image (images run one at a time)
    return f"top{top_k}"


@app.command()
def explain(
    inputs: list[Path] = typer.Argument(
        None, help="Image files or folders (default: bundled samples)."
    ),
    model: str = typer.Option(
        "efficientnet_lite0", "--model", "-m", help="Model name or checkpoint."
    ),
    weights: str = typer.Option("default", help="'default', 'none' or a weights file."),
    trust_checkpoint: bool = typer.Option(False, help="Allow unpickling a trusted checkpoint."),
    labels: Path = typer.Option(None, help="Class names file (one per line or JSON)."),
    methods: str = typer.Option(
        "gradient,cam,gradcam,occlusion", help="Comma-separated method names, or 'all'."
    ),
    top_k: int = typer.Option(1, "--top-k", "-k", help="Explain each image's top-k classes."),
    target: str = typer.Option(None, help="Explain these class indices instead (e.g. 285,281)."),
    layer: str = typer.Option(None, help="Layer for CAM methods (default: last conv block)."),
    window: int = typer.Option(32, help="Occlusion window (pixels)."),
    stride: int = typer.Option(16, help="Occlusion stride (pixels)."),
    batch_size: int = typer.Option(None, help="Forward passes per batch for occlusion."),
    out_dir: Path = typer.Option(Path("cnnlens-report"), "--out", "-o", help="Report folder."),
    device: str = typer.Option(None, help="cpu, cuda, cuda:1 ... (default cpu)."),
    title: str = typer.Option("cnnlens report", help="Report title."),
) -> None:
    """Explain images and write report.html, results.json and maps.npz."""
    from .errors import CnnlensError
    from .pipeline import explain_files, resolve_methods
    from .progress import reporting

    try:
        chosen = resolve_methods(methods)
    except CnnlensError as e:
        console.print(f"[red]error:[/red] {e}", highlight=False)
        raise typer.Exit(2) from None
    params: dict[str, dict] = {"occlusion": {"window": window, "stride": stride}}
    if batch_size:
        params["occlusion"]["batch_size"] = batch_size
    if layer:
        for m in ("cam", "gradcam"):
            params.setdefault(m, {})["layer"] = layer
    params = {k: v for k, v in params.items() if k in chosen}
    loaded = _load(model, weights, trust_checkpoint, labels, device)
    start = time.perf_counter()
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    with bar, reporting(RichReporter(bar)):
        run = explain_files(
            loaded,
            [str(p) for p in inputs or []],
            methods=chosen,
            target=_target(top_k, target),
            out_dir=out_dir,
            method_params=params,
            title=title,
        )
    _summary(run, time.perf_counter() - start)
    if not run.ok:
        raise typer.Exit(1)


def _summary(run, seconds: float) -> None:
    table = Table(title="cnnlens explain", show_lines=False)
    table.add_column("image")
    table.add_column("top-1")
    table.add_column("p", justify="right")
    failed = {(e["image"], e["method"]) for e in run.errors}
    methods = [e.method for e in run.explanations]
    for m in methods:
        table.add_column(m, justify="center")
    for i, name in enumerate(run.names):
        pred = run.predictions.to_list()[i][0] if run.predictions is not None else None
        row = [name, pred["label"] if pred else "-", f"{pred['prob']:.3f}" if pred else "-"]
        row += [
            "[red]failed[/red]" if (name, m) in failed else "[green]ok[/green]" for m in methods
        ]
        table.add_row(*row)
    for err in run.errors:
        if err["method"] is None:
            table.add_row(str(err["image"]), "[red]unreadable[/red]", "", *["" for _ in methods])
    out.print(table)
    for err in run.errors:
        console.print(
            f"[yellow]{err['image']}[/yellow] {err['method'] or ''}: {err['error']}",
            highlight=False,
            markup=True,
        )
    if run.report_path is not None:
        out.print(f"report: {run.report_path}  ({seconds:.1f} s)")
    else:
        out.print("nothing could be explained")


@app.command()
def methods() -> None:
    """List the attribution methods."""
    from .registry import list_methods

    table = Table(title="attribution methods")
    for col in ("name", "family", "signed", "parameters", "summary"):
        table.add_column(col)
    for m in list_methods():
        params = ", ".join(f"{k}={v!r}" for k, v in m.defaults.items())
        table.add_row(m.name, m.family, "yes" if m.signed else "no", params, m.summary)
    out.print(table)


@app.command()
def models(
    pattern: str = typer.Argument("*", help="Shell-style filter, e.g. 'resnet*'."),
) -> None:
    """List model names: the bundled model, torchvision and timm architectures."""
    import fnmatch

    from .models import list_models

    for source, names in list_models().items():
        chosen = [n for n in names if fnmatch.fnmatch(n, pattern)]
        out.print(f"[bold]{source}[/bold] ({len(chosen)})")
        out.print("  " + ", ".join(chosen) if chosen else "  -")


@app.command()
def layers(
    model: str = typer.Argument("efficientnet_lite0", help="Model name or checkpoint."),
    weights: str = typer.Option("none", help="Weights are not needed to list layers."),
    trust_checkpoint: bool = typer.Option(False, help="Allow unpickling a trusted checkpoint."),
) -> None:
    """List a model's layers: dotted name, type and output shape."""
    from .layer_lookup import default_layer, list_layers

    loaded = _load(model, weights, trust_checkpoint, None, None)
    size = loaded.preprocess_spec.crop
    default = default_layer(loaded.net, (size, size))
    table = Table(title=f"{loaded.name} at {size}x{size} (default CAM layer: {default})")
    for col in ("name", "type", "output", "params"):
        table.add_column(col)
    for info in list_layers(loaded):
        if info.output_shape is None and info.params == 0:
            continue  # a module that never runs (e.g. drop-path at inference)
        shape = "x".join(map(str, info.output_shape)) if info.output_shape else "-"
        mark = " *" if info.name == default else ""
        table.add_row(info.name + mark, info.type, shape, f"{info.params:,}")
    out.print(table)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
