"""``cnnlens filters``, ``cnnlens activations`` and ``cnnlens dream``: what units learn.

Each command writes PNG grids and one self-contained HTML page per layer. The
model is ``--model``/``-m`` as everywhere else; ``filters`` and ``dream`` still take
it as their first argument too (old scripts), and refuse two different models.
"""

from __future__ import annotations

from pathlib import Path

import typer

from .checks import pick_model
from .common import Opt, RichReporter, app, fail, load, parse_indices, progress_bar, say

OUT_OPTION = typer.Option(Path("cnnlens-featurevis"), "--out", "-o", help="Output folder.")
DEFAULT_MODEL = "efficientnet_lite0"
MODEL_ARGUMENT = typer.Argument(
    None, metavar="MODEL", show_default=False, help="Same as --model (kept for old scripts)."
)
MODEL_OPTION = typer.Option(
    None,
    "--model",
    "-m",
    metavar="NAME|FILE",
    help=f"Model name or checkpoint (default {DEFAULT_MODEL}).",
)


@app.command()
def filters(
    model_arg: str = MODEL_ARGUMENT,
    model: str = MODEL_OPTION,
    layer: list[str] = typer.Option(
        None,
        "--layer",
        "-l",
        metavar="LAYER",
        help="Conv layer, repeatable (default: the first conv on the input).",
    ),
    max_filters: int = typer.Option(64, min=1, help="Show at most this many filters per layer."),
    max_inputs: int = typer.Option(32, min=1, help="Deeper layers: input channels per filter row."),
    weights: str = Opt.weights,
    trust_checkpoint: bool = Opt.trust,
    out_dir: Path = OUT_OPTION,
) -> None:
    """Learned filters as pictures: the first conv layer in colour (normalised jointly and per
    filter), deeper conv layers as grey grids (rows: filters, columns: input channels).
    Small grids are enlarged (nearest-neighbour) to at least 512 px for viewing; the
    compact grids are kept as *-compact.png."""
    from ..core.errors import CnnlensError
    from ..featurevis.filters import filter_bank
    from ..featurevis.grid import upscale
    from ..featurevis.page import Section, write_page
    from ..io import save_png

    loaded = load(
        pick_model(model_arg, model, DEFAULT_MODEL), weights, trust_checkpoint, None, None
    )
    for name in layer or [None]:
        try:
            bank = filter_bank(loaded, name)
        except (CnnlensError, ValueError) as e:
            fail(str(e))
        shape = "x".join(map(str, bank.weight.shape))
        sections, saved = [], []
        for norm, label in (("joint", "normalised jointly"), ("filter", "normalised per filter")):
            compact = bank.grid(norm, max_filters=max_filters, max_inputs=max_inputs)
            view, factor = upscale(compact)
            base = f"filters-{bank.layer}{'' if norm == 'joint' else '-per-filter'}"
            saved.append(save_png(view, out_dir / f"{base}.png"))
            save_png(compact, out_dir / f"{base}-compact.png")
            size = f"{view.width}x{view.height} px" + (
                f", enlarged {factor}x" if factor > 1 else ""
            )
            sections.append(Section(f"{bank.layer}: {shape}, {label} ({size})", bank.note, view))
        page = write_page(
            out_dir / f"filters-{bank.layer}.html",
            f"Filters of {bank.layer} ({loaded.name})",
            sections,
            {"model": loaded.name, "layer": bank.layer, "weight shape": shape},
        )
        say(f"{bank.layer} ({shape}): {bank.note}")
        say(f"saved {saved[0]}, {saved[1]} and {page}; the unenlarged grids as *-compact.png")


@app.command()
def activations(
    image: Path = typer.Argument(..., help="Image file."),
    layer: list[str] = typer.Option(
        None,
        "--layer",
        "-l",
        metavar="LAYER",
        help="Layer to show, repeatable (default: the middle preset).",
    ),
    max_channels: int = typer.Option(None, min=1, help="Show only the strongest channels."),
    normalize: str = typer.Option(
        "joint", metavar="joint|channel", help="One colour range for all maps, or one per map."
    ),
    model: str = Opt.model,
    weights: str = Opt.weights,
    trust_checkpoint: bool = Opt.trust,
    labels: Path = Opt.labels,
    device: str = Opt.device,
    out_dir: Path = OUT_OPTION,
) -> None:
    """Every channel of a layer for one image (sorted by mean activation, with values), and an
    overview strip through all stages of the network."""
    from ..core.errors import CnnlensError, ImageError
    from ..featurevis.activations import overview, overview_strip
    from ..featurevis.page import Section, write_page
    from ..featurevis.presets import preset_layer, stages
    from ..io import load_image, save_png

    if normalize not in ("joint", "channel"):
        fail(f"--normalize must be 'joint' or 'channel', got {normalize!r}")
    try:
        img = load_image(image)
    except ImageError as e:
        fail(str(e))
    loaded = load(model, weights, trust_checkpoint, labels, device)
    x = loaded.preprocess(img)
    try:
        chosen = list(layer) if layer else [preset_layer(loaded, "middle")]
        stage_names = stages(loaded, x.shape[-1])
        maps = overview(loaded, x, stage_names + [n for n in chosen if n not in stage_names])
    except (CnnlensError, ValueError) as e:
        fail(str(e))
    by_name = {m.layer: m for m in maps}
    strip = overview_strip([by_name[n] for n in stage_names], loaded.display_images(x)[0])
    stem = image.stem
    strip_path = save_png(strip, out_dir / f"overview-{stem}.png")
    pred = loaded.predict(x, top_k=3).to_list()[0]
    top = ", ".join(f"{p['label']} ({p['prob']:.2f})" for p in pred)
    for name in chosen:
        m = by_name[name]
        c, h, w = m.maps.shape
        grid = m.grid(max_channels, normalize)
        grid_path = save_png(grid, out_dir / f"activations-{stem}-{name}.png")
        pics, caps = m.tiles(max_channels, normalize)
        scale = m.scale(normalize)
        note = f"{c} channels of {h}x{w}, sorted by mean activation (the number after each "
        note += "channel index). " + _colour_note(scale, normalize)
        page = write_page(
            out_dir / f"activations-{stem}-{name}.html",
            f"Activations of {name} for {image.name}",
            [
                Section("Overview: RMS over channels, stage by stage", None, strip),
                Section(
                    f"{name}: every channel",
                    note,
                    m.colorbar(normalize),
                    figures=list(zip(pics, caps)),
                ),
            ],
            {"model": loaded.name, "image": image.name, "top-3": top, "layer": name},
        )
        best = ", ".join(f"#{int(i)} ({float(m.means[i]):.3g})" for i in m.order[:5])
        say(f"{name} ({c}x{h}x{w}): strongest channels {best}")
        say(f"saved {grid_path} and {page}")
    say(f"overview strip: {strip_path}")


def _colour_note(scale, normalize: str) -> str:
    """One sentence on what the colours of an activation grid mean."""
    if not scale.signed:
        kind = "non-negative values (after a ReLU) on a sequential map (dark low, bright high)"
    else:
        kind = "signed values on a diverging map (blue negative, white 0, red positive)"
    if normalize == "joint":
        return f"Colours: {kind}, one range for all channels, {scale.low:.3g} to {scale.high:.3g}."
    return f"Colours: {kind}, each channel stretched to its own range."


@app.command()
def dream(
    model_arg: str = MODEL_ARGUMENT,
    model: str = MODEL_OPTION,
    layer: str = typer.Option(
        None, "--layer", "-l", metavar="LAYER", help="Layer whose units to render."
    ),
    preset: str = typer.Option(
        None,
        metavar="shallow|middle|deep|all",
        help="Preset layer(s), comma-separated, or all, instead of --layer.",
    ),
    channels: str = typer.Option(
        "0-15", metavar="INDICES", help="Channels, e.g. 0-15 or 3,7,40-43."
    ),
    class_: str = typer.Option(
        None,
        "--class",
        metavar="INDICES",
        help="Render classes instead (indices, e.g. 285 or 1,285,949).",
    ),
    objective: str = typer.Option(
        "channel",
        metavar="channel|neuron|deepdream",
        help="A channel's mean, its centre unit, or a whole layer (deepdream).",
    ),
    steps: int = typer.Option(512, min=0, help="Optimisation steps."),
    size: int = typer.Option(128, min=8, help="Image side in pixels."),
    lr: float = typer.Option(0.05, help="Adam learning rate."),
    param: str = typer.Option(
        "fourier",
        "--parameterization",
        metavar="fourier|pixel|dense",
        help="How the image is optimised (not --param, which sets method parameters).",
    ),
    decorrelate: bool = typer.Option(
        None,
        "--decorrelate/--no-decorrelate",
        metavar="",
        help="Optimise in decorrelated colour space (default: yes, except for dense).",
    ),
    transforms: str = typer.Option(
        "standard", metavar="standard|none", help="Random jitter, scale and rotation, or none."
    ),
    seed: int = typer.Option(0, help="Seed: same seed, same images."),
    batch_size: int = typer.Option(None, min=1, help="Images per batch (default 32 CPU, 64 CUDA)."),
    image: Path = typer.Option(
        None, help="Start from this photo (resized to --size) instead of noise: DeepDream."
    ),
    weights: str = Opt.weights,
    trust_checkpoint: bool = Opt.trust,
    labels: Path = Opt.labels,
    device: str = Opt.device,
    out_dir: Path = OUT_OPTION,
) -> None:
    """Activation maximisation: images that excite chosen channels, units or classes, all
    rendered in one batch. Writes a PNG grid, a JSON summary and an HTML page per layer
    (class dreams: also one PNG per class, named after it). Progress shows every step."""
    from ..core.errors import CnnlensError, ImageError
    from ..core.progress import reporting
    from ..io import load_image

    if objective not in ("channel", "neuron", "deepdream"):
        fail(f"--objective must be channel, neuron or deepdream, got {objective!r}")
    if param not in ("fourier", "pixel", "dense"):
        fail(f"--parameterization must be fourier, pixel or dense, got {param!r}")
    if transforms not in ("standard", "none"):
        fail(f"--transforms must be standard or none, got {transforms!r}")
    if sum(x is not None for x in (layer, preset, class_)) != 1:
        fail("give exactly one of --layer L, --preset shallow|middle|deep|all, --class K")
    try:
        indices = parse_indices(
            class_ if class_ is not None else channels,
            "--class" if class_ is not None else "--channels",
        )
    except ValueError as e:
        fail(str(e))
    name = pick_model(model_arg, model, DEFAULT_MODEL)
    photo = None
    if image is not None:
        try:
            photo = load_image(image)
        except ImageError as e:
            fail(str(e))
    loaded = load(name, weights, trust_checkpoint, labels, device)
    if photo is not None:
        import numpy as np
        import torch

        pixels = np.asarray(photo.convert("RGB").resize((size, size)), dtype=np.float32) / 255
        photo = torch.from_numpy(pixels).permute(2, 0, 1)[None].to(loaded.device)
    try:
        jobs = _dream_jobs(loaded, layer, preset, class_ is not None, objective, indices)
    except (CnnlensError, ValueError) as e:
        fail(str(e))
    settings = dict(
        steps=steps,
        size=size,
        lr=lr,
        param=param,
        decorrelate=decorrelate,
        transforms=transforms,
        seed=seed,
        batch_size=batch_size,
        init=photo,
    )
    bar = progress_bar()
    for job in jobs:
        try:
            with bar, reporting(RichReporter(bar)):
                paths = _dream_layer(loaded, *job, settings, out_dir)
        except (CnnlensError, ValueError) as e:
            fail(str(e))
        say(f"saved {', '.join(str(p) for p in paths)}")


def class_label(loaded, k: int) -> str:
    """``"285 Egyptian cat"`` where the model names its classes, else ``"class 285"``."""
    name = loaded.label(k)
    return f"class {k}" if name == f"class_{k}" else f"{k} {name}"


def _slug(text: str) -> str:
    """``"285 Egyptian cat"`` -> ``"285-egyptian-cat"``: safe in any file name."""
    return "-".join("".join(c if c.isalnum() else " " for c in text.lower()).split())[:60]


def _dream_jobs(loaded, layer, preset, classes: bool, objective: str, indices: list[int]):
    """``(layer, objectives, labels)`` per picture grid: one per layer, or one of classes."""
    from ..featurevis import objectives as O
    from ..featurevis.presets import LEVELS, preset_layer

    if classes:
        objs = [O.class_logit(k) for k in indices]
        return [("logits", objs, [class_label(loaded, k) for k in indices])]
    if preset is not None:
        levels = LEVELS if preset == "all" else [p.strip() for p in preset.split(",")]
        names = [preset_layer(loaded, lv) for lv in levels]
    else:
        names = [layer]
    if objective == "deepdream":
        return [(n, [O.deepdream(n)], ["deepdream"]) for n in names]
    make = O.channel if objective == "channel" else O.neuron
    return [(n, [make(n, c) for c in indices], [f"#{c}" for c in indices]) for n in names]


def _dream_layer(
    loaded, name: str, objs: list, short: list[str], settings: dict, out_dir: Path
) -> list[Path]:
    """Render ``objs`` and write ``dream-<name>.png``, ``.json`` and ``.html``; for classes
    (``name == "logits"``) also ``dream-class-<index>-<name>.png`` per class.

    ``short`` holds one label per objective (``#7``, ``285 Egyptian cat``): grid captions,
    page captions and the JSON's ``label``.
    """
    from ..core.atomic import write_json_atomic
    from ..featurevis.grid import tile
    from ..featurevis.page import Section, write_page
    from ..featurevis.render import dream as run_dream
    from ..featurevis.render import evaluate
    from ..io import save_png

    classes = name == "logits"
    result = run_dream(loaded, objs, **settings)
    final = evaluate(loaded, objs, result.images).tolist()
    start = result.scores[0].tolist() if len(result.scores) else [float("nan")] * len(objs)
    captions = [f"{s}: {o.description} = {v:.3g}" for s, o, v in zip(short, objs, final)]
    labels = [f"{s}: {v:.3g}" for s, v in zip(short, final)]
    grid = tile(list(result.images), ncol=min(8, len(objs)), captions=labels, pad=3)
    paths = [save_png(grid, out_dir / f"dream-{name}.png")]
    if classes:
        for label, picture in zip(short, result.images):
            paths.append(save_png(picture, out_dir / f"dream-class-{_slug(label)}.png"))
    meta = {"model": loaded.name, "layer": name, **result.params}
    meta["seconds"] = round(result.seconds, 2)
    write_json_atomic(
        out_dir / f"dream-{name}.json",
        {
            **meta,
            "objectives": [
                {"objective": o.description, "label": s, "first_step": a, "final": v}
                for o, s, a, v in zip(objs, short, start, final)
            ],
        },
    )
    note = (
        "Each image was optimised to maximise its objective (value on the final image, "
        "untransformed, after the equals sign). Only the first layer's filters are directly "
        "interpretable; these images show what drives a unit, not what it 'means'."
    )
    if classes:
        shown = ", ".join(short[:4]) + (f" and {len(short) - 4} more" if len(short) > 4 else "")
        title, heading = f"Class dreams: {shown} ({loaded.name})", f"{len(objs)} class(es)"
    else:
        title, heading = f"Dreams of {name} ({loaded.name})", f"{len(objs)} objective(s)"
    page = write_page(
        out_dir / f"dream-{name}.html",
        title,
        [Section(heading, note, figures=list(zip(result.images, captions)))],
        meta,
    )
    for caption in captions:
        say(f"  {caption}")
    return [*paths, out_dir / f"dream-{name}.json", page]
