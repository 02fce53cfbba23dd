"""``cnnlens explain``, ``methods``, ``models`` and ``layers``: maps and what they run on."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.markup import escape

from .checks import check_layer, check_target, parse_params, pick_model
from .common import Opt, RichReporter, app, fail, load, note, out, parse_target, progress_bar, say


@app.command()
def explain(
    inputs: list[Path] = typer.Argument(
        None, help="Image files or folders (default: bundled samples).", metavar="IMAGES"
    ),
    model: str = Opt.model,
    weights: str = Opt.weights,
    trust_checkpoint: bool = Opt.trust,
    labels: Path = Opt.labels,
    methods: str = typer.Option(
        "gradient,cam,gradcam,occlusion",
        metavar="NAMES",
        help="Comma-separated method names, or 'all' (`cnnlens methods` lists them).",
    ),
    top_k: int = typer.Option(
        1, "--top-k", "-k", min=1, help="Explain each image's top-k classes."
    ),
    target: str = typer.Option(
        None,
        metavar="CLASSES|topK|KIND:VALUE",
        help="Explain these class indices (e.g. 285,281) or each image's top K (e.g. top3) "
        "instead of --top-k; or a target kind: logit:C, prob:C, multilabel:C, output:I "
        "(regression), sim:REF.png (embedding similarity to REF), seg:C[:x0,y0,x1,y1] "
        "(segmentation model), det:x0,y0,x1,y1[:LABEL] (detection model); boxes in input "
        "pixels.",
    ),
    layer: str = typer.Option(
        None,
        metavar="LAYER",
        help="Layer of every method that takes one (default: each method's own, the last "
        "conv block). CAM only takes the layer feeding the classifier's pooling.",
    ),
    window: int = typer.Option(32, min=1, help="Occlusion window (pixels)."),
    stride: int = typer.Option(16, min=1, help="Occlusion stride (pixels)."),
    batch_size: int = typer.Option(None, min=1, help="Forward passes per batch for occlusion."),
    param: list[str] = typer.Option(
        None,
        "--param",
        "-p",
        metavar="METHOD.KEY=VALUE",
        help="Any method parameter, repeatable: integrated_gradients.steps=64, "
        "smoothgrad.samples=50, occlusion.baseline=blur (`cnnlens methods` lists them).",
    ),
    out_dir: Path = typer.Option(Path("cnnlens-report"), "--out", "-o", help="Report folder."),
    device: str = Opt.device,
    title: str = typer.Option("cnnlens report", help="Report title."),
    max_pixels: int = Opt.max_pixels,
) -> None:
    """Explain images and write report.html, results.json and maps.npz."""
    from ..core.errors import CnnlensError
    from ..core.progress import reporting
    from ..io import NoImagesError
    from ..methods import get_method
    from ..pipeline import explain_files, resolve_methods

    try:
        chosen = resolve_methods(methods)
    except CnnlensError as e:
        fail(str(e))
    from ..targets.spec import parse_kind

    try:
        kind = parse_kind(target)
    except CnnlensError as e:
        fail(str(e))
    spec_target = parse_target(target, default=f"top{top_k}") if kind is None else None
    given = parse_params(param, chosen)
    params: dict[str, dict] = {"occlusion": {"window": window, "stride": stride}}
    if batch_size:
        params["occlusion"]["batch_size"] = batch_size
    names = [get_method(m).name for m in chosen]
    if layer:
        for m in names:
            if "layer" in get_method(m).defaults:
                params.setdefault(m, {})["layer"] = layer
    for m, values in given.items():  # --param wins over the shortcut options
        params.setdefault(m, {}).update(values)
    params = {k: v for k, v in params.items() if k in names}
    loaded = load(model, weights, trust_checkpoint, labels, device)
    check_target(spec_target, loaded)
    if kind is not None:
        try:
            spec_target, loaded = kind.build(loaded, max_pixels)
        except CnnlensError as e:
            fail(str(e))
    check_layer(loaded, layer)
    for values in params.values():
        if isinstance(values.get("layer"), str):
            check_layer(loaded, values["layer"])
    start = time.perf_counter()
    bar = progress_bar()
    try:
        with bar, reporting(RichReporter(bar)):
            run = explain_files(
                loaded,
                [str(p) for p in inputs or []],
                methods=chosen,
                target=spec_target,
                out_dir=out_dir,
                method_params=params,
                title=title,
                max_pixels=max_pixels,
            )
    except NoImagesError as e:
        fail(str(e))
    _summary(run, time.perf_counter() - start)
    if run.interrupted:
        kept = f"the report holds the {len(chosen) - len(run.interrupted)} finished methods"
        note(
            "interrupted:",
            f"{kept if run.report_path else 'no method had finished, nothing written'}; "
            f"not run: {', '.join(run.interrupted)}. Rerun with --methods "
            f"{','.join(run.interrupted)} --out ANOTHER_FOLDER to get those.",
        )
        raise typer.Exit(130)
    if not run.ok:
        raise typer.Exit(1)


def _summary(run, seconds: float) -> None:
    """One row per image (which maps failed, by full method name), then each failure once."""
    from rich.table import Table

    if run.names:
        methods = [e.method for e in run.explanations]
        failed: dict[str, list[str]] = {}
        for e in run.errors:
            if e["method"] is not None:
                failed.setdefault(e["image"], []).append(e["method"])
        table = Table(title="cnnlens explain", show_lines=False)
        # identifiers users type or click are folded onto more lines, never cut
        table.add_column("image", overflow="fold")
        table.add_column("top-1", overflow="fold")
        table.add_column("p", justify="right", no_wrap=True)
        table.add_column("maps", overflow="fold")
        preds = run.predictions.to_list() if run.predictions is not None else []
        for i, name in enumerate(run.names):
            pred = preds[i][0] if i < len(preds) else None
            bad = failed.get(name, [])
            total = len(set(methods) | set(bad))
            cell = f"[green]{total - len(bad)}/{total} ok[/green]"
            if bad:
                cell += f" [red]failed: {escape(', '.join(bad))}[/red]"
            table.add_row(
                escape(name),
                escape(pred["label"]) if pred else "-",
                f"{pred['prob']:.3f}" if pred else "-",
                cell,
            )
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
        size = run.report_path.stat().st_size / 1e6
        say(f"report: {run.report_path}  ({size:.1f} MB, {seconds:.1f} s)")
    elif not run.interrupted:
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
    pattern: str = typer.Argument("*", help="Shell-style filter, e.g. 'resnet*' or 'timm/*'."),
) -> None:
    """List model names: bundled, torchvision and timm names, and timm pretrained tags."""
    from ..models import describe_sources

    listing = describe_sources(pattern)
    for source, names in listing.groups:
        out.print(f"[bold]{escape(source)}[/bold] ({len(names)})")
        out.print("  " + escape(", ".join(names)) if names else "  -")
    for line in listing.notes:
        say(line)


@app.command()
def layers(
    model_arg: str = typer.Argument(
        None, metavar="MODEL", help="Model name or checkpoint (or --model)."
    ),
    model: str = typer.Option(
        None,
        "--model",
        "-m",
        metavar="NAME|FILE",
        help="Model name or checkpoint [default: efficientnet_lite0].",
    ),
    weights: str = typer.Option("none", help="Weights are not needed to list layers."),
    trust_checkpoint: bool = Opt.trust,
) -> None:
    """List a model's layers: dotted name, type and output shape."""
    from rich.table import Table

    from ..core.layers import default_layer
    from ..models.base import list_layers

    name = pick_model(model_arg, model, "efficientnet_lite0")
    loaded = load(name, weights, trust_checkpoint, None, None)
    size = loaded.preprocess_spec.crop
    default = default_layer(loaded.net, (size, size))
    title = f"{loaded.name} at {size}x{size} (default CAM layer: {default})"
    table = Table(title=escape(title))
    table.add_column("name", overflow="fold")  # folded, never cut: users copy these names
    for col in ("type", "output", "params"):
        table.add_column(col)
    for info in list_layers(loaded):
        if info.output_shape is None and info.params == 0:
            continue  # a module that never runs (e.g. drop-path at inference)
        shape = "x".join(map(str, info.output_shape)) if info.output_shape else "-"
        mark = " *" if info.name == default else ""
        table.add_row(escape(info.name + mark), escape(info.type), shape, f"{info.params:,}")
    out.print(table)
