"""``cnnlens interrogate`` and ``boxes``: meaningful perturbation's analyses (Fong & Vedaldi 2017).

``interrogate`` perturbs one box of one image and prints the target scores before and after
(fig. 6); ``boxes`` finds, per method, the smallest box whose blurring deletes the class
(sec. 5.3, fig. 8).
"""

from __future__ import annotations

from pathlib import Path

import typer

from .checks import check_target
from .common import Opt, RichReporter, app, fail, load, note, parse_target, progress_bar, say


def parse_box(text: str) -> tuple[int, int, int, int]:
    """``"x0,y0,x1,y1"`` -> four integers (validated for shape only; :func:`fail` otherwise)."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 4 or not all(parts):
        fail(f"--box takes four numbers x0,y0,x1,y1 (pixels, end exclusive), got {text!r}")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        fail(f"--box takes four numbers x0,y0,x1,y1, got {text!r}")
    if not all(v.is_integer() for v in values):
        fail(f"--box takes whole pixel coordinates, got {text!r}")
    x0, y0, x1, y1 = (int(v) for v in values)
    if x1 <= x0 or y1 <= y0:
        fail(
            f"--box {text!r} is empty or reversed: give the top-left corner x0,y0 first and "
            "the bottom-right corner x1,y1 second, with x0 < x1 and y0 < y1"
        )
    return x0, y0, x1, y1


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
    sigma: float = typer.Option(10.0, min=0.0, help="Blur sigma (pixels of the model input)."),
    seed: int = typer.Option(0, help="Noise seed."),
    model: str = Opt.model,
    weights: str = Opt.weights,
    trust_checkpoint: bool = Opt.trust,
    labels: Path = Opt.labels,
    device: str = Opt.device,
    out_dir: Path = typer.Option(
        Path("cnnlens-interrogate"), "--out", "-o", help="Folder for the PNGs."
    ),
) -> None:
    """Perturb a box of an image and print the target scores before -> after (Fong & Vedaldi
    2017, fig. 6); saves the perturbed image and a side-by-side PNG."""
    import torch

    from ..core.errors import ImageError
    from ..io import load_image, save_png
    from ..perturbation.interrogate import box_to_input, check_box, side_by_side
    from ..perturbation.interrogate import interrogate as run_interrogate
    from ..perturbation.operators import PERTURBATIONS

    if perturbation not in PERTURBATIONS:
        fail(f"--perturbation must be one of {', '.join(PERTURBATIONS)}, got {perturbation!r}")
    if coords not in ("photo", "input"):
        fail(f"--coords must be 'photo' or 'input', got {coords!r}")
    if score not in ("prob", "logit", "logprob"):
        fail(f"--score must be prob, logit or logprob, got {score!r}")
    requested = parse_box(box)
    spec_target = parse_target(target)
    try:
        img = load_image(image)
    except ImageError as e:
        fail(str(e))
    if coords == "photo":
        try:
            check_box(requested, (img.height, img.width), f"--box (in the {image.name} photo)")
        except ValueError as e:
            fail(str(e))
    loaded = load(model, weights, trust_checkpoint, labels, device)
    check_target(spec_target, loaded)
    x = loaded.preprocess(img)
    try:
        if coords == "photo":
            mapped = box_to_input(requested, img.size, loaded.preprocess_spec)
            in_box = mapped.box
            if mapped.clipped:
                note(
                    "note:",
                    "part of the box lies outside the centre crop the model sees; perturbing "
                    f"only the part inside: {in_box} in input pixels",
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
        fail(str(e))
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
    sigma: float = typer.Option(10.0, min=0.0, help="Blur sigma (pixels of the model input)."),
    model: str = Opt.model,
    weights: str = Opt.weights,
    trust_checkpoint: bool = Opt.trust,
    labels: Path = Opt.labels,
    device: str = Opt.device,
    out_dir: Path = typer.Option(
        None, "--out", "-o", help="Also write boxes.json and boxes.svg here."
    ),
) -> None:
    """Smallest deleting box per method (Fong & Vedaldi 2017, sec. 5.3 and fig. 8): the mean
    area of the smallest box, found by thresholding each map, whose blurring suppresses the
    class by 80/90/95/99 %."""
    import torch

    from ..core.atomic import write_json_atomic
    from ..core.errors import CnnlensError
    from ..core.progress import reporting
    from ..methods import attribute
    from ..perturbation.boxes import compare_deletion_boxes
    from ..pipeline import gather_images, resolve_methods
    from ..report.charts import save_svg

    try:
        chosen = resolve_methods(methods)
    except CnnlensError as e:
        fail(str(e))
    spec_target = parse_target(target)
    names, images, errors = gather_images([str(p) for p in inputs or []])
    for err in errors:
        note(f"{err['image']}:", err["error"])
    if not images:
        fail("no readable images")
    loaded = load(model, weights, trust_checkpoint, labels, device)
    check_target(spec_target, loaded)
    x = loaded.preprocess(images)
    if isinstance(spec_target, list):
        spec_target = spec_target * len(images)
    bar = progress_bar()
    try:
        with bar, reporting(RichReporter(bar)):
            expls = [attribute(loaded, x, m, target=spec_target) for m in chosen]
            table = compare_deletion_boxes(loaded, expls, x, sigma=sigma)
    except CnnlensError as e:
        fail(str(e))
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
