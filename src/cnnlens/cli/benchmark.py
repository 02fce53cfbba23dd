"""``cnnlens benchmark``: every method x every trust metric on data with known evidence."""

from __future__ import annotations

from pathlib import Path

import typer

from .checks import parse_params
from .common import Opt, RichReporter, app, fail, load, note, progress_bar, say

SUITES = ("planted", "voc", "coco")


@app.command()
def benchmark(
    suite: str = typer.Option("planted", help="planted, voc or coco."),
    methods: str = typer.Option("all", help="Comma-separated method names, or 'all'."),
    images: int = typer.Option(100, help="Test images (planted; a cap for voc/coco)."),
    val_images: int = typer.Option(50, "--val-images", help="Held-out images (planted)."),
    cue_images: int = typer.Option(60, "--cue-images", help="Confounded images (planted)."),
    sanity_images: int = typer.Option(8, help="Images for the randomisation check (0: skip)."),
    epochs: int = typer.Option(None, help="Training epochs of the planted models (default 8)."),
    train_images: int = typer.Option(
        None, "--train-images", help="Training images of the planted models (default 4000)."
    ),
    param: list[str] = typer.Option(
        None,
        "--param",
        "-p",
        metavar="METHOD.KEY=VALUE",
        help="Any method parameter, repeatable, e.g. rise.masks=1000 (as in explain).",
    ),
    root: Path = typer.Option(None, help="VOC root (Annotations/, JPEGImages/, ImageSets/)."),
    annotations: Path = typer.Option(None, help="COCO instances JSON."),
    image_dir: Path = typer.Option(None, help="COCO image folder."),
    model: str = typer.Option(
        None, "--model", "-m", help="Model for voc/coco (class names must match the annotations)."
    ),
    weights: str = Opt.weights,
    trust_checkpoint: bool = Opt.trust,
    labels: Path = Opt.labels,
    device: str = Opt.device,
    out_dir: Path = typer.Option(Path("cnnlens-benchmark"), "--out", "-o", help="Output folder."),
    seed: int = typer.Option(0, help="Seed of the data and of stochastic methods."),
    cue_target: str = typer.Option(
        "prediction",
        "--cue-target",
        help="Spurious-cue maps explain each model's 'prediction' or the 'cue' class.",
    ),
) -> None:
    """Score every method's maps: pointing game, localisation, relevance mass, deletion and
    insertion, smallest deleting box, sanity check and spurious cue. Writes benchmark.md,
    benchmark.json and benchmark.html; rerun the same command to resume an interrupted run."""
    from ..core.errors import CnnlensError
    from ..core.progress import reporting
    from ..evaluation.sources import coco_suite, planted_suite, voc_suite
    from ..evaluation.suite import CUE_TARGETS, run_benchmark
    from ..evaluation.tables import markdown, write_outputs
    from ..pipeline import resolve_methods

    if suite not in SUITES:
        fail(f"--suite must be one of {', '.join(SUITES)}, got {suite!r}")
    if cue_target not in CUE_TARGETS:
        fail(f"--cue-target must be one of {', '.join(CUE_TARGETS)}, got {cue_target!r}")
    try:
        chosen = resolve_methods(methods)
    except CnnlensError as e:
        fail(str(e))
    params = parse_params(param, chosen)
    bar = progress_bar()
    try:
        with bar, reporting(RichReporter(bar)):
            if suite == "planted":
                train = {"epochs": epochs, "n_train": train_images}
                train = {k: v for k, v in train.items() if v is not None}
                data = planted_suite(images, val_images, cue_images, seed=seed, train=train)
            else:
                if model is None:
                    fail(f"--suite {suite} needs --model: a classifier of the dataset's classes")
                loaded = load(model, weights, trust_checkpoint, labels, device)
                if suite == "voc":
                    if root is None:
                        fail("--suite voc needs --root PATH (the VOCdevkit/VOC2007 folder)")
                    data = voc_suite(root, loaded, n_images=images)
                else:
                    if annotations is None or image_dir is None:
                        fail("--suite coco needs --annotations FILE and --image-dir DIR")
                    data = coco_suite(annotations, image_dir, loaded, n_images=images)
            result = run_benchmark(
                data,
                chosen,
                out_dir,
                params=params,
                sanity_images=sanity_images,
                seed=seed,
                cue_target=cue_target,
            )
    except CnnlensError as e:
        fail(str(e))
    except KeyboardInterrupt:
        note(
            "interrupted:",
            f"the finished maps and method scores are kept in {out_dir / 'maps'}; "
            "rerun the same command to resume from them",
        )
        raise typer.Exit(130) from None
    for f in result.failures:
        note(f["method"], f"failed: {f['error']}")
    paths = write_outputs(result, out_dir)
    say(markdown(result))
    say(f"wrote {paths['md']}, {paths['json']} and {paths['html']}")
    if not result.rows or len(result.failures) == len(chosen):
        raise typer.Exit(1)
