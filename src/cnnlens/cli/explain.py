"""``cnnlens explain``, ``methods``, ``models`` and ``layers``: maps and what they run on."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.markup import escape

from .common import Opt, RichReporter, app, fail, load, note, out, parse_target, progress_bar, say


@app.command()
def explain(
    inputs: list[Path] = typer.Argument(
        None, help="Image files or folders (default: bundled samples)."
    ),
    model: str = Opt.model,
    weights: str = Opt.weights,
    trust_checkpoint: bool = Opt.trust,
    labels: Path = Opt.labels,
    methods: str = typer.Option(
        "gradient,cam,gradcam,occlusion", help="Comma-separated method names, or 'all'."
    ),
    top_k: int = typer.Option(
        1, "--top-k", "-k", min=1, help="Explain each image's top-k classes."
    ),
    target: str = typer.Option(None, help="Explain these class indices instead (e.g. 285,281)."),
    layer: str = typer.Option(
        None,
        help="Layer for cam and gradcam (default: last conv block). CAM only takes the layer "
        "feeding the classifier's pooling; use gradcam for others.",
    ),
    window: int = typer.Option(32, help="Occlusion window (pixels)."),
    stride: int = typer.Option(16, help="Occlusion stride (pixels)."),
    batch_size: int = typer.Option(None, help="Forward passes per batch for occlusion."),
    out_dir: Path = typer.Option(Path("cnnlens-report"), "--out", "-o", help="Report folder."),
    device: str = Opt.device,
    title: str = typer.Option("cnnlens report", help="Report title."),
) -> None:
    """Explain images and write report.html, results.json and maps.npz."""
    from ..core.errors import CnnlensError
    from ..core.progress import reporting
    from ..pipeline import explain_files, resolve_methods

    try:
        chosen = resolve_methods(methods)
    except CnnlensError as e:
        fail(str(e))
    spec_target = parse_target(target, default=f"top{top_k}", top=False)
    params: dict[str, dict] = {"occlusion": {"window": window, "stride": stride}}
    if batch_size:
        params["occlusion"]["batch_size"] = batch_size
    if layer:
        for m in ("cam", "gradcam"):
            params.setdefault(m, {})["layer"] = layer
    params = {k: v for k, v in params.items() if k in chosen}
    loaded = load(model, weights, trust_checkpoint, labels, device)
    start = time.perf_counter()
    bar = progress_bar()
    with bar, reporting(RichReporter(bar)):
        run = explain_files(
            loaded,
            [str(p) for p in inputs or []],
            methods=chosen,
            target=spec_target,
            out_dir=out_dir,
            method_params=params,
            title=title,
        )
    _summary(run, time.perf_counter() - start)
    if not run.ok:
        raise typer.Exit(1)


def _summary(run, seconds: float) -> None:
    """The per-image table, then each distinct failure once (with how many images it hit)."""
    from rich.table import Table

    table = Table(title="cnnlens explain", show_lines=False)
    table.add_column("image")
    table.add_column("top-1")
    table.add_column("p", justify="right")
    failed = {(e["image"], e["method"]) for e in run.errors}
    methods = [e.method for e in run.explanations]
    for m in methods:
        table.add_column(escape(m), justify="center")
    for i, name in enumerate(run.names):
        pred = run.predictions.to_list()[i][0] if run.predictions is not None else None
        row = [escape(name), escape(pred["label"]) if pred else "-"]
        row.append(f"{pred['prob']:.3f}" if pred else "-")
        row += [
            "[red]failed[/red]" if (name, m) in failed else "[green]ok[/green]" for m in methods
        ]
        table.add_row(*row)
    for err in run.errors:
        if err["method"] is None:
            table.add_row(escape(err["image"]), "[red]unreadable[/red]", "", *["" for _ in methods])
    out.print(table)
    for group in run.error_groups():
        images, method = group["images"], group["method"]
        if method is None:  # unreadable files: each one named
            for image in images:
                note(f"{image}:", group["error"])
        elif len(images) == 1:
            note(images[0], f"{method}: {group['error']}")
        else:
            note(f"{method} failed on {len(images)} of {len(run.names)} images:", group["error"])
    if run.report_path is not None:
        say(f"report: {run.report_path}  ({seconds:.1f} s)")
    else:
        say("nothing could be explained")


@app.command()
def methods() -> None:
    """List the attribution methods."""
    from rich.table import Table

    from ..methods import list_methods

    infos = list_methods()
    table = Table(title="attribution methods")
    # the name is what users type: never wrapped or cut, whatever the terminal's width
    table.add_column("name", no_wrap=True, min_width=max(len(m.name) for m in infos))
    for col in ("family", "signed", "parameters", "summary"):
        table.add_column(col)
    for m in infos:
        params = ", ".join(f"{k}={v!r}" for k, v in m.defaults.items())
        row = (m.name, m.family, "yes" if m.signed else "no", params, m.summary)
        table.add_row(*map(escape, row))
    out.print(table)


@app.command()
def models(
    pattern: str = typer.Argument("*", help="Shell-style filter, e.g. 'resnet*'."),
) -> None:
    """List model names: the bundled model, torchvision and timm architectures."""
    import fnmatch

    from ..models import list_models

    for source, names in list_models().items():
        chosen = [n for n in names if fnmatch.fnmatch(n, pattern)]
        out.print(f"[bold]{escape(source)}[/bold] ({len(chosen)})")
        out.print("  " + escape(", ".join(chosen)) if chosen else "  -")


@app.command()
def layers(
    model: str = typer.Argument("efficientnet_lite0", help="Model name or checkpoint."),
    weights: str = typer.Option("none", help="Weights are not needed to list layers."),
    trust_checkpoint: bool = Opt.trust,
) -> None:
    """List a model's layers: dotted name, type and output shape."""
    from rich.table import Table

    from ..core.layers import default_layer
    from ..models.base import list_layers

    loaded = load(model, weights, trust_checkpoint, None, None)
    size = loaded.preprocess_spec.crop
    default = default_layer(loaded.net, (size, size))
    title = f"{loaded.name} at {size}x{size} (default CAM layer: {default})"
    table = Table(title=escape(title))
    for col in ("name", "type", "output", "params"):
        table.add_column(col)
    for info in list_layers(loaded):
        if info.output_shape is None and info.params == 0:
            continue  # a module that never runs (e.g. drop-path at inference)
        shape = "x".join(map(str, info.output_shape)) if info.output_shape else "-"
        mark = " *" if info.name == default else ""
        table.add_row(escape(info.name + mark), escape(info.type), shape, f"{info.params:,}")
    out.print(table)
