"""``cnnlens siam``: interpretable-by-design SIAM models (Marcos, Lobry & Tuia 2019).

``siam data`` writes a synthetic scenicness folder, ``siam train`` trains a model
(on that folder, any CSV folder, or scenes drawn in memory), ``siam evaluate``
prints the acceptance numbers and ``siam explain`` writes the HTML view.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from ..core.progress import reporting
from .common import RichReporter, app, fail, progress_bar, say

siam_app = typer.Typer(
    no_args_is_help=True,
    help="SIAM: attribute maps combined linearly into the output (interpretable by design).",
)
app.add_typer(siam_app, name="siam")

CHECKPOINT_OPTION = typer.Option(..., "--checkpoint", "-c", help="A checkpoint of siam train.")


@siam_app.command("data")
def data_cmd(
    out_dir: Path = typer.Argument(Path("scenic-data"), help="Folder to write."),
    n_train: int = typer.Option(1500, help="Training scenes."),
    n_val: int = typer.Option(300, help="Validation scenes."),
    n_test: int = typer.Option(500, help="Test scenes."),
    size: int = typer.Option(160, help="Image side in pixels."),
    seed: int = typer.Option(0, help="Dataset seed."),
) -> None:
    """Write synthetic scenicness scenes: images/, masks/, scenic.csv and truth.json."""
    from ..datasets.scenic import ScenicSpec, write_folder

    if min(n_train, n_val, n_test) < 0 or size < 32:
        fail("counts must be >= 0 and --size >= 32")
    counts = {"train": n_train, "val": n_val, "test": n_test}
    start = time.perf_counter()
    bar = progress_bar()
    with bar, reporting(RichReporter(bar)):
        path = write_folder(out_dir, counts, ScenicSpec(size=size, seed=seed))
    say(f"wrote {sum(counts.values())} scenes and {path} ({time.perf_counter() - start:.1f} s)")


def _scenic_data(folder: Path | None, split: str, n: int, size: int):
    from ..datasets.scenic import ScenicSpec, read_folder, scenic

    if folder is None:
        spec = ScenicSpec(size=size)
        return scenic(n, split, spec), spec
    if not (folder / "truth.json").exists():
        fail(f"{folder} has no truth.json: write it with 'cnnlens siam data {folder}'")
    return read_folder(folder, split)


@siam_app.command("train")
def train_cmd(
    data: Path = typer.Option(
        None, help="A CSV file or a 'siam data' folder (default: scenes drawn in memory)."
    ),
    attributes_data: Path = typer.Option(
        None, help="A second CSV with attribute labels only: its batches alternate."
    ),
    target: str = typer.Option("scenicness", metavar="COLUMN", help="Target column of the CSV."),
    task_kind: str = typer.Option(
        "regression",
        "--task",
        metavar="regression|classification",
        help="Loss: MSE, or cross-entropy over the target's classes.",
    ),
    n_train: int = typer.Option(1500, help="In-memory scenes when no --data is given."),
    checkpoint: Path = typer.Option(Path("siam.pt"), "--checkpoint", "-c", help="Output."),
    backbone: str = typer.Option(
        "efficientnet_lite0", metavar="MODEL", help="Backbone (load_model name)."
    ),
    layer: str = typer.Option(
        "blocks.4", metavar="LAYER", help="Trunk layer feeding the attribute maps."
    ),
    size: int = typer.Option(160, help="Input side in pixels."),
    pooling: str = typer.Option(
        "gap", metavar="gap|templates", help="Global average, or learned spatial templates."
    ),
    templates: int = typer.Option(1, help="Templates per attribute (--pooling templates)."),
    interactions: bool = typer.Option(
        False, "--interactions/--no-interactions", metavar="", help="Add pairwise interactions."
    ),
    border: int = typer.Option(0, help="Map cells zeroed on each border."),
    epochs: int = typer.Option(100, help="Epochs."),
    lr: float = typer.Option(0.01, help="Head learning rate (Adam)."),
    fine_tune: bool = typer.Option(
        False, "--fine-tune/--no-fine-tune", metavar="", help="Also train the backbone (slow)."
    ),
    resume: bool = typer.Option(
        False, "--resume/--no-resume", metavar="", help="Continue from --checkpoint."
    ),
    seed: int = typer.Option(0, help="Shuffling seed."),
) -> None:
    """Train a SIAM model: attribute presence (BCE) + the target (MSE), Adam, step schedule."""
    import torch

    from ..datasets.scenic import ATTRIBUTES
    from ..siam import SiamConfig, SiamModel, TrainSettings, curve_png, read_csv, train
    from ..siam.data import scenes_to_data
    from ..siam.scenic import cached

    torch.manual_seed(seed)
    bar = progress_bar()
    with bar:
        with reporting(RichReporter(bar)):
            outputs = ["score"]
            if task_kind not in ("regression", "classification"):
                fail(f"--task must be regression or classification, got {task_kind!r}")
            if data is None and task_kind != "regression":
                fail("the synthetic scenes have a regression target; give --data for classes")
            if data is None:
                scenes, _ = _scenic_data(None, "train", n_train, size)
                sets, names = [scenes_to_data(scenes)], list(ATTRIBUTES)
            else:
                csv_path = data / "scenic.csv" if data.is_dir() else data
                try:
                    loaded = read_csv(
                        csv_path, size, target=target, split=_split(csv_path), task_kind=task_kind
                    )
                except (ValueError, OSError) as e:
                    fail(str(e))
                sets, names = [loaded.data], loaded.attributes
                if loaded.classes:
                    outputs = loaded.classes
                if attributes_data is not None:
                    try:
                        extra = read_csv(attributes_data, size, attributes=names, target=None)
                    except (ValueError, OSError) as e:
                        fail(str(e))
                    sets.append(extra.data)
            try:
                config = SiamConfig(
                    attributes=names,
                    outputs=outputs,
                    task=task_kind,
                    backbone=backbone,
                    layer=layer,
                    size=size,
                    pooling=pooling,
                    templates=templates,
                    interactions=interactions,
                    border=border,
                )
                model = SiamModel(config)
            except Exception as e:  # unknown backbone, layer, pooling ...
                fail(str(e))
            settings = TrainSettings(epochs=epochs, lr=lr, freeze=not fine_tune, seed=seed)
            if settings.freeze:
                sets = [cached(model, s) for s in sets]
            bar_id = bar.add_task("training", total=1)

            def show(step: int, total: int, running: dict) -> None:
                text = " ".join(f"{k} {v:.4f}" for k, v in running.items() if k != "l1")
                bar.update(bar_id, completed=step, total=total, description=f"train {text}")

            start = time.perf_counter()
            try:
                history = train(
                    model, sets, settings, checkpoint=checkpoint, resume=resume, callback=show
                )
            except ValueError as e:  # a checkpoint of other settings, features for fine-tuning
                fail(str(e))
    curve = curve_png(history, checkpoint.with_suffix(".png"))
    last = history[-1] if history else {}
    losses = ", ".join(f"{k} {v:.4f}" for k, v in last.items() if k != "epoch")
    say(f"trained {len(history)} epochs in {time.perf_counter() - start:.1f} s: {losses}")
    say(f"saved {checkpoint} and {curve}")


def _split(csv_path: Path) -> str | None:
    with open(csv_path) as f:
        header = f.readline().strip().split(",")
    return "train" if "split" in header else None


def _load_checkpoint(checkpoint: Path):
    from ..siam import load_checkpoint

    if not checkpoint.exists():
        fail(f"no checkpoint at {checkpoint}: train one with 'cnnlens siam train -c {checkpoint}'")
    try:
        return load_checkpoint(checkpoint)
    except Exception as e:  # a file that is not a SIAM checkpoint
        fail(f"{checkpoint} is not a SIAM checkpoint: {e}")


@siam_app.command("evaluate")
def evaluate_cmd(
    checkpoint: Path = CHECKPOINT_OPTION,
    data: Path = typer.Option(None, help="A 'siam data' folder (default: scenes in memory)."),
    n_test: int = typer.Option(500, help="In-memory test scenes when no --data is given."),
    json_out: Path = typer.Option(None, "--json", help="Also write the numbers as JSON."),
) -> None:
    """Acceptance numbers on synthetic test scenes: R2, AUC, pointing game, weight recovery."""
    from ..siam import evaluate_scenic
    from ..siam.data import scenes_to_data
    from ..siam.scenic import cached

    state = _load_checkpoint(checkpoint)
    model = state["model"]
    bar = progress_bar()
    with bar, reporting(RichReporter(bar)):
        scenes, spec = _scenic_data(data, "test", n_test, model.config.size)
        if spec.size != model.config.size:
            fail(f"the scenes are {spec.size} px but the model takes {model.config.size} px")
        test = cached(model, scenes_to_data(scenes))
        scores = evaluate_scenic(model, test, scenes, spec.noise)
    for line in scores.lines():
        say(line)
    weights = ", ".join(
        f"{k} {v:+.2f} ({scores.true_coefficients[k]:+.2f})" for k, v in scores.weights.items()
    )
    say(f"weights (true): {weights}")
    if json_out is not None:
        from ..core.atomic import write_json_atomic

        json_out.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(json_out, scores.to_dict())
        say(f"saved {json_out}")


@siam_app.command("explain")
def explain_cmd(
    image: Path = typer.Argument(..., help="Image file."),
    checkpoint: Path = CHECKPOINT_OPTION,
    top: int = typer.Option(3, help="Top positive and negative attributes to show."),
    out_path: Path = typer.Option(None, "--out", "-o", help="HTML file (default IMAGE.siam.html)."),
) -> None:
    """Explain one image: prediction, contributions, attribute maps and the sum check."""
    from ..core.errors import ImageError
    from ..siam import write_explanation
    from ..siam.data import load_rgb, to_tensor
    from ..siam.train import images_to_input

    state = _load_checkpoint(checkpoint)
    model = state["model"]
    try:
        pixels = load_rgb(image, model.config.size)
    except ImageError as e:
        fail(str(e))
    x = images_to_input(model, to_tensor(pixels[None]))
    expl = model.explain(x)
    target = out_path or Path(f"{image.stem}.siam.html")
    from PIL import Image

    settings = {
        "image": image.name,
        "checkpoint": checkpoint.name,
        "backbone": f"{model.config.backbone} @ {model.config.layer}",
        "pooling": model.config.pooling,
    }
    write_explanation(target, Image.fromarray(pixels), expl, top=top, settings=settings)
    check = expl.check(0)
    say(f"{image.name}: {check.output_name} = {check.output:.4f}")
    for row in sorted(expl.rows(0), key=lambda r: -abs(r["contribution"]))[: 2 * top]:
        say(
            f"  {row['attribute']:<12} {row['contribution']:+.4f}  (presence {row['presence']:.3f})"
        )
    say(f"  check: {check.text()}")
    say(f"saved {target}")
