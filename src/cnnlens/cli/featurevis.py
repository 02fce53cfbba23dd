"""``cnnlens filters``, ``cnnlens activations`` and ``cnnlens dream``: what units learn.

Each command writes PNG grids and one self-contained HTML page per layer.
"""

from __future__ import annotations

from pathlib import Path

import typer

from .common import Opt, RichReporter, app, fail, load, parse_indices, progress_bar, say

OUT_OPTION = typer.Option(Path("cnnlens-featurevis"), "--out", "-o", help="Output folder.")


@app.command()
def filters(
    model: str = typer.Argument("efficientnet_lite0", help="Model name or checkpoint."),
    layer: list[str] = typer.Option(
        None, "--layer", "-l", help="Conv layer(s) (default: the first conv on the input)."
    ),
    max_filters: int = typer.Option(64, help="Show at most this many filters per layer."),
    max_inputs: int = typer.Option(32, help="Deeper layers: input channels per filter row."),
    weights: str = Opt.weights,
    trust_checkpoint: bool = Opt.trust,
    out_dir: Path = OUT_OPTION,
) -> None:
    """Learned filters as pictures: the first conv layer in colour (normalised jointly and per
    filter), deeper conv layers as grey grids (rows: filters, columns: input channels)."""
    from ..core.errors import CnnlensError
    from ..featurevis.filters import filter_bank
    from ..featurevis.page import Section, write_page
    from ..io import save_png

    loaded = load(model, weights, trust_checkpoint, None, None)
    for name in layer or [None]:
        try:
            bank = filter_bank(loaded, name)
        except (CnnlensError, ValueError) as e:
            fail(str(e))
        shape = "x".join(map(str, bank.weight.shape))
        sections, saved = [], []
        for norm, label in (("joint", "normalised jointly"), ("filter", "normalised per filter")):
            pic = bank.grid(norm, max_filters=max_filters, max_inputs=max_inputs)
            suffix = "" if norm == "joint" else "-per-filter"
            saved.append(save_png(pic, out_dir / f"filters-{bank.layer}{suffix}.png"))
            sections.append(Section(f"{bank.layer}: {shape}, {label}", bank.note, pic))
        page = write_page(
            out_dir / f"filters-{bank.layer}.html",
            f"Filters of {bank.layer} ({loaded.name})",
            sections,
            {"model": loaded.name, "layer": bank.layer, "weight shape": shape},
        )
        say(f"{bank.layer} ({shape}): {bank.note}")
        say(f"saved {saved[0]}, {saved[1]} and {page}")


@app.command()
def activations(
    image: Path = typer.Argument(..., help="Image file."),
    layer: list[str] = typer.Option(
        None, "--layer", "-l", help="Layer(s) to show (default: the middle preset)."
    ),
    max_channels: int = typer.Option(None, help="Show only the strongest channels."),
    normalize: str = typer.Option("joint", help="'joint' (one colour range) or 'channel'."),
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
        note = (
            f"{c} channels of {h}x{w}, sorted by mean activation (the number after each "
            f"channel index); colours {'share one range' if normalize == 'joint' else 'per map'}."
        )
        page = write_page(
            out_dir / f"activations-{stem}-{name}.html",
            f"Activations of {name} for {image.name}",
            [
                Section("Overview: RMS over channels, stage by stage", None, strip),
                Section(f"{name}: every channel", note, figures=list(zip(pics, caps))),
            ],
            {"model": loaded.name, "image": image.name, "top-3": top, "layer": name},
        )
        best = ", ".join(f"#{int(i)} ({float(m.means[i]):.3g})" for i in m.order[:5])
        say(f"{name} ({c}x{h}x{w}): strongest channels {best}")
        say(f"saved {grid_path} and {page}")
    say(f"overview strip: {strip_path}")


@app.command()
def dream(
    model: str = typer.Argument("efficientnet_lite0", help="Model name or checkpoint."),
    layer: str = typer.Option(None, "--layer", "-l", help="Layer whose units to render."),
    preset: str = typer.Option(
        None, help="shallow, middle, deep (comma-separated) or all, instead of --layer."
    ),
    channels: str = typer.Option("0-15", help="Channels, e.g. 0-15 or 3,7,40-43."),
    class_: str = typer.Option(
        None, "--class", "-c", help="Render classes instead (indices, e.g. 285 or 1,285,949)."
    ),
    objective: str = typer.Option("channel", help="channel, neuron (centre unit) or deepdream."),
    steps: int = typer.Option(512, help="Optimisation steps."),
    size: int = typer.Option(128, help="Image side in pixels."),
    lr: float = typer.Option(0.05, help="Adam learning rate."),
    param: str = typer.Option("fourier", help="fourier, pixel or dense."),
    decorrelate: bool = typer.Option(
        None,
        "--decorrelate/--no-decorrelate",
        help="Optimise in decorrelated colour space (default: yes, except for dense).",
    ),
    transforms: str = typer.Option("standard", help="standard or none."),
    seed: int = typer.Option(0, help="Seed: same seed, same images."),
    batch_size: int = typer.Option(None, help="Images per batch (default 32 CPU, 64 CUDA)."),
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
    rendered in one batch. Writes a PNG grid, a JSON summary and an HTML page per layer."""
    from ..core.errors import CnnlensError, ImageError
    from ..core.progress import reporting
    from ..featurevis import objectives as O
    from ..featurevis.presets import LEVELS, preset_layer
    from ..io import load_image

    if objective not in ("channel", "neuron", "deepdream"):
        fail(f"--objective must be channel, neuron or deepdream, got {objective!r}")
    if param not in ("fourier", "pixel", "dense"):
        fail(f"--param must be fourier, pixel or dense, got {param!r}")
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
    photo = None
    if image is not None:
        try:
            photo = load_image(image)
        except ImageError as e:
            fail(str(e))
    loaded = load(model, weights, trust_checkpoint, labels, device)
    if photo is not None:
        import numpy as np
        import torch

        pixels = np.asarray(photo.convert("RGB").resize((size, size)), dtype=np.float32) / 255
        photo = torch.from_numpy(pixels).permute(2, 0, 1)[None].to(loaded.device)
    jobs: list[tuple[str, list, list[str]]] = []
    try:
        if class_ is not None:
            objs = [O.class_logit(k) for k in indices]
            jobs.append(("logits", objs, [f"{k} {loaded.label(k)}" for k in indices]))
        else:
            if preset is not None:
                levels = LEVELS if preset == "all" else [p.strip() for p in preset.split(",")]
                names = [preset_layer(loaded, lv) for lv in levels]
            else:
                names = [layer]
            for name in names:
                if objective == "deepdream":
                    jobs.append((name, [O.deepdream(name)], ["deepdream"]))
                else:
                    make = O.channel if objective == "channel" else O.neuron
                    jobs.append(
                        (name, [make(name, c) for c in indices], [f"#{c}" for c in indices])
                    )
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
    for name, objs, short in jobs:
        try:
            with bar, reporting(RichReporter(bar)):
                paths = _dream_layer(loaded, name, objs, short, settings, out_dir)
        except (CnnlensError, ValueError) as e:
            fail(str(e))
        say(f"saved {', '.join(str(p) for p in paths)}")


def _dream_layer(
    loaded, name: str, objs: list, short: list[str], settings: dict, out_dir: Path
) -> list[Path]:
    """Render ``objs`` and write ``dream-<name>.png``, ``.json`` and ``.html``.

    ``short`` holds one short label per objective for the PNG grid (``#7``, ``285 Egyptian cat``).
    """
    from ..core.atomic import write_json_atomic
    from ..featurevis.grid import tile
    from ..featurevis.page import Section, write_page
    from ..featurevis.render import dream as run_dream
    from ..featurevis.render import evaluate
    from ..io import save_png

    result = run_dream(loaded, objs, **settings)
    final = evaluate(loaded, objs, result.images).tolist()
    start = result.scores[0].tolist() if len(result.scores) else [float("nan")] * len(objs)
    captions = [f"{o.description} = {v:.3g}" for o, v in zip(objs, final)]
    labels = [f"{s}: {v:.3g}" for s, v in zip(short, final)]
    grid = tile(list(result.images), ncol=min(8, len(objs)), captions=labels, pad=3)
    png = save_png(grid, out_dir / f"dream-{name}.png")
    meta = {"model": loaded.name, "layer": name, **result.params}
    meta["seconds"] = round(result.seconds, 2)
    write_json_atomic(
        out_dir / f"dream-{name}.json",
        {
            **meta,
            "objectives": [
                {"objective": o.description, "first_step": s, "final": v}
                for o, s, v in zip(objs, start, final)
            ],
        },
    )
    note = (
        "Each image was optimised to maximise its objective (value on the final image, "
        "untransformed, after the colon). Only the first layer's filters are directly "
        "interpretable; these images show what drives a unit, not what it 'means'."
    )
    page = write_page(
        out_dir / f"dream-{name}.html",
        f"Dreams of {name} ({loaded.name})",
        [Section(f"{len(objs)} objective(s)", note, figures=list(zip(result.images, captions)))],
        meta,
    )
    for label, caption in zip(short, captions):
        say(f"  {label}: {caption}")
    return [png, out_dir / f"dream-{name}.json", page]
