"""The ``cnnlens`` command line: maps options to API calls, nothing more."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Explain image CNNs: attribution maps and HTML reports.",
)
console = Console(stderr=True)
out = Console()

# Model options shared by every command that loads a model.
MODEL_OPTION = typer.Option("efficientnet_lite0", "--model", "-m", help="Model name or checkpoint.")
WEIGHTS_OPTION = typer.Option("default", help="'default', 'none' or a weights file.")
TRUST_OPTION = typer.Option(False, help="Allow unpickling a trusted checkpoint.")
LABELS_OPTION = typer.Option(None, help="Class names file (one per line or JSON).")
DEVICE_OPTION = typer.Option(None, help="cpu, cuda, cuda:1 ... (default cpu).")


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


def progress_bar() -> Progress:
    """The rich progress display every long command uses (on stderr, removed when done)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def _load(
    model: str, weights: str, trust_checkpoint: bool, labels: Path | None, device: str | None
):
    from .core.errors import CnnlensError
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
    model: str = MODEL_OPTION,
    weights: str = WEIGHTS_OPTION,
    trust_checkpoint: bool = TRUST_OPTION,
    labels: Path = LABELS_OPTION,
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
    device: str = DEVICE_OPTION,
    title: str = typer.Option("cnnlens report", help="Report title."),
) -> None:
    """Explain images and write report.html, results.json and maps.npz."""
    from .core.errors import CnnlensError
    from .core.progress import reporting
    from .pipeline import explain_files, resolve_methods

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
    bar = progress_bar()
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
    from .methods import list_methods

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
    trust_checkpoint: bool = TRUST_OPTION,
) -> None:
    """List a model's layers: dotted name, type and output shape."""
    from .core.layers import default_layer
    from .models.base import list_layers

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


_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def parse_indices(text: str, what: str = "--channels") -> list[int]:
    """``"0-15,32,40-43"`` -> ``[0, ..., 15, 32, 40, 41, 42, 43]`` (order kept, no repeats)."""
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


def say(text: str) -> None:
    """Print plain text to stdout: no markup, no highlighting, long lines kept whole."""
    out.print(text, highlight=False, markup=False, soft_wrap=True)


def _fail(message: str) -> NoReturn:
    console.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    raise typer.Exit(2)


def _parse_box(text: str) -> tuple[int, int, int, int]:
    """``"x0,y0,x1,y1"`` -> four integers (validated for shape only)."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 4 or not all(parts):
        _fail(f"--box takes four numbers x0,y0,x1,y1 (pixels, end exclusive), got {text!r}")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        _fail(f"--box takes four numbers x0,y0,x1,y1, got {text!r}")
    if not all(v.is_integer() for v in values):
        _fail(f"--box takes whole pixel coordinates, got {text!r}")
    x0, y0, x1, y1 = (int(v) for v in values)
    if x1 <= x0 or y1 <= y0:
        _fail(
            f"--box {text!r} is empty or reversed: give the top-left corner x0,y0 first and "
            "the bottom-right corner x1,y1 second, with x0 < x1 and y0 < y1"
        )
    return x0, y0, x1, y1


def _parse_target(text: str | None):
    """``None`` (top-1), ``"967"``, ``"967,968"`` or ``"top5"`` -> a target specification."""
    if text is None or not text.strip():
        return None
    t = text.strip().lower()
    if t.startswith("top"):
        return t
    try:
        classes = [int(c) for c in t.split(",") if c.strip()]
    except ValueError:
        _fail(f"--target takes class indices like 967 or 967,968, or top5, got {text!r}")
    if not classes:
        _fail(f"--target takes class indices like 967 or 967,968, or top5, got {text!r}")
    return [classes]


@app.command()
def interrogate(
    image: Path = typer.Argument(..., help="Image file."),
    box: str = typer.Option(
        ...,
        "--box",
        "-b",
        help="x0,y0,x1,y1: top-left and bottom-right corners of the box to perturb, in pixels "
        "(end exclusive) of the photo, or of the model input with --coords input.",
    ),
    perturbation: str = typer.Option("blur", help="blur, constant or noise."),
    target: str = typer.Option(None, help="Class index or indices (967,968), or topK."),
    coords: str = typer.Option(
        "photo",
        help="'photo': the box is in pixels of the image file and is mapped through the "
        "model's resize and crop; 'input': pixels of the model input.",
    ),
    score: str = typer.Option("prob", help="prob, logit or logprob."),
    sigma: float = typer.Option(10.0, help="Blur sigma (pixels of the model input)."),
    seed: int = typer.Option(0, help="Noise seed."),
    model: str = MODEL_OPTION,
    weights: str = WEIGHTS_OPTION,
    trust_checkpoint: bool = TRUST_OPTION,
    labels: Path = LABELS_OPTION,
    device: str = DEVICE_OPTION,
    out_dir: Path = typer.Option(
        Path("cnnlens-interrogate"), "--out", "-o", help="Folder for the PNGs."
    ),
) -> None:
    """Perturb a box of an image and print the target scores before -> after (Fong & Vedaldi
    2017, fig. 6); saves the perturbed image and a side-by-side PNG."""
    import torch

    from .core.errors import ImageError
    from .io import load_image, save_png
    from .perturbation.interrogate import box_to_input, check_box, side_by_side
    from .perturbation.interrogate import interrogate as run_interrogate
    from .perturbation.operators import PERTURBATIONS

    if perturbation not in PERTURBATIONS:
        _fail(f"--perturbation must be one of {', '.join(PERTURBATIONS)}, got {perturbation!r}")
    if coords not in ("photo", "input"):
        _fail(f"--coords must be 'photo' or 'input', got {coords!r}")
    if score not in ("prob", "logit", "logprob"):
        _fail(f"--score must be prob, logit or logprob, got {score!r}")
    requested = _parse_box(box)
    spec_target = _parse_target(target)
    try:
        img = load_image(image)
    except ImageError as e:
        _fail(str(e))
    if coords == "photo":
        try:
            check_box(requested, (img.height, img.width), f"--box (in the {image.name} photo)")
        except ValueError as e:
            _fail(str(e))
    loaded = _load(model, weights, trust_checkpoint, labels, device)
    x = loaded.preprocess(img)
    try:
        if coords == "photo":
            mapped = box_to_input(requested, img.size, loaded.preprocess_spec)
            in_box = mapped.box
            if mapped.clipped:
                console.print(
                    f"[yellow]note:[/yellow] part of the box lies outside the centre crop the "
                    f"model sees; perturbing only the part inside: {in_box} in input pixels",
                    highlight=False,
                )
        else:
            in_box = check_box(requested, tuple(x.shape[-2:]), "--box")
        result = run_interrogate(
            loaded,
            x,
            in_box,
            spec_target,
            perturbation=perturbation,
            score=score,
            sigma=sigma,
            seed=seed,
        )
    except ValueError as e:  # malformed box, bad target (TargetError is a ValueError)
        _fail(str(e))
    size = f"{x.shape[-1]}x{x.shape[-2]}"
    say(
        f"{image.name}: {perturbation} box {requested} ({coords} pixels) = {in_box} in the "
        f"{size} model input",
    )
    lines = result.lines(loaded)[0]
    for line in lines:
        say(line)
    shown = loaded.display_images(torch.cat([x[:1], result.perturbed[:1]]))
    stem = image.stem
    saved = save_png(shown[1], out_dir / f"{stem}-{perturbation}.png")
    caption = f"{perturbation}: " + lines[0].replace("→", "->")
    pair = side_by_side(shown[0], shown[1], in_box, caption)
    both = save_png(pair, out_dir / f"{stem}-{perturbation}-compare.png")
    say(f"saved {saved} and {both}")


@app.command()
def boxes(
    inputs: list[Path] = typer.Argument(
        None, help="Image files or folders (default: bundled samples)."
    ),
    methods: str = typer.Option("gradient,gradcam,occlusion", help="Comma-separated methods."),
    target: str = typer.Option(None, help="Class index or indices, or topK (default top-1)."),
    sigma: float = typer.Option(10.0, help="Blur sigma (pixels of the model input)."),
    model: str = MODEL_OPTION,
    weights: str = WEIGHTS_OPTION,
    trust_checkpoint: bool = TRUST_OPTION,
    labels: Path = LABELS_OPTION,
    device: str = DEVICE_OPTION,
    out_dir: Path = typer.Option(
        None, "--out", "-o", help="Also write boxes.json and boxes.svg here."
    ),
) -> None:
    """Smallest deleting box per method (Fong & Vedaldi 2017, sec. 5.3 and fig. 8): the mean
    area of the smallest box, found by thresholding each map, whose blurring suppresses the
    class by 80/90/95/99 %."""
    import torch

    from .core.errors import CnnlensError
    from .core.progress import reporting
    from .methods import attribute
    from .perturbation.boxes import compare_deletion_boxes
    from .pipeline import gather_images, resolve_methods
    from .report.charts import save_svg
    from .report.serialize import write_json_atomic

    try:
        chosen = resolve_methods(methods)
    except CnnlensError as e:
        _fail(str(e))
    spec_target = _parse_target(target)
    names, images, errors = gather_images([str(p) for p in inputs or []])
    for err in errors:
        console.print(f"[yellow]{escape(err['image'])}[/yellow]: {escape(err['error'])}")
    if not images:
        _fail("no readable images")
    loaded = _load(model, weights, trust_checkpoint, labels, device)
    x = loaded.preprocess(images)
    if isinstance(spec_target, list):
        spec_target = spec_target * len(images)
    bar = progress_bar()
    try:
        with bar, reporting(RichReporter(bar)):
            expls = [attribute(loaded, x, m, target=spec_target) for m in chosen]
            table = compare_deletion_boxes(loaded, expls, x, sigma=sigma)
    except CnnlensError as e:
        _fail(str(e))
    n_pairs = int(torch.tensor(expls[0].targets.shape).prod())
    say(
        f"smallest deleting box, mean area as a fraction of the {x.shape[-1]}x{x.shape[-2]} "
        f"input ± standard error (image-target pairs reaching the level / {n_pairs})",
    )
    say(table.format())
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out_dir / "boxes.json", {"images": names, "methods": table.to_dict()})
        save_svg(table.svg(), out_dir / "boxes.svg")
        saved = f"saved {out_dir / 'boxes.json'} and {out_dir / 'boxes.svg'}"
        say(saved)


# The modules below add their commands to `app` when imported.
from . import cli_analysis, cli_benchmark, cli_featurevis, cli_siam  # noqa: E402,F401


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
