"""``cnnlens index``, ``patches``, ``neighbours`` and ``embed``: representations over a dataset."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from .common import Opt, RichReporter, app, fail, load, note, parse_indices, progress_bar, say


def _open(index: Path):
    from ..analysis import IndexFolderError, open_index

    try:
        return open_index(index)
    except IndexFolderError as e:
        fail(str(e))


@app.command()
def index(
    dataset: Path = typer.Argument(..., help="Image folder (searched recursively) or file."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Index folder (resumed if unfinished)."),
    layers: str = typer.Option(
        None,
        "--layers",
        help="Comma-separated layers (default: last conv, or the layers of the index in --out).",
    ),
    label_csv: Path = typer.Option(None, help="CSV with 'path,label' columns."),
    batch_size: int = typer.Option(32, help="Images per forward pass."),
    workers: int = typer.Option(1, help="DataLoader worker processes decoding images."),
    dtype: str = typer.Option("float16", help="float16 or float32 feature arrays."),
    checkpoint_every: int = typer.Option(1024, help="Images between checkpoints."),
    ray: str = typer.Option(
        None, "--ray", help="Run on Ray: 'local', 'auto' or ray://head:10001 (--workers actors)."
    ),
    append: bool = typer.Option(
        False,
        "--append",
        metavar="",
        help="Add the images the index does not hold yet (same model and layers).",
    ),
    max_pixels: int = Opt.max_pixels,
    model: str = Opt.model,
    weights: str = Opt.weights,
    trust_checkpoint: bool = Opt.trust,
    labels: Path = Opt.labels,
    device: str = Opt.device,
) -> None:
    """Stream a folder through the model into a memory-mapped feature index."""
    from ..analysis import build_index
    from ..core import progress
    from ..core.errors import CnnlensError

    before = _indexed(out_dir) if append else (0, 0, 0)
    loaded = load(model, weights, trust_checkpoint, labels, device)
    names = [s.strip() for s in layers.split(",") if s.strip()] if layers else None
    start = time.perf_counter()
    try:
        with progress_bar() as bar, progress.reporting(RichReporter(bar)):
            idx = build_index(
                loaded, dataset, out_dir, names, label_csv=label_csv, batch_size=batch_size,
                num_workers=workers, dtype=dtype, checkpoint_every=checkpoint_every,
                ray_address=ray, max_pixels=max_pixels, append=append,
            )  # fmt: skip
    except (CnnlensError, ValueError) as e:
        fail(str(e))
    seconds = time.perf_counter() - start
    n_ok = len(idx.ok)
    if append:
        n_new = len(idx) - before[0]
        say(f"added {n_new} new image{'' if n_new == 1 else 's'} ({before[0]} were in the index)")
    speed = (n_ok - before[1]) / seconds
    say(f"indexed {n_ok} of {len(idx)} images into {idx.root} ({speed:.1f} images/s)")
    for f in idx.failures[before[2] :]:
        say(f"skipped {f['path']}: {f['reason']}")


def _indexed(root: Path) -> tuple[int, int, int]:
    """Entries, indexed entries and failures of the index at ``root`` (zeros if none)."""
    from ..analysis import IndexFolderError, open_index

    try:
        idx = open_index(root)
    except IndexFolderError:
        return 0, 0, 0
    return len(idx), len(idx.ok), len(idx.failures)


@app.command()
def patches(
    index_dir: Path = typer.Argument(..., help="Index folder."),
    layer: str = typer.Option(
        None,
        "--layer",
        "-l",
        help="Indexed layer (default: the deepest whose receptive field is smaller than the "
        "input).",
    ),
    units: str = typer.Option("0-15", help="Units like 0-15,32."),
    k: int = typer.Option(9, "-k", "--top", help="Patches per unit."),
    out_dir: Path = typer.Option(Path("cnnlens-analysis"), "--out", "-o", help="Output folder."),
) -> None:
    """Top-k activating patches per unit with their receptive fields; PNG strips + HTML."""
    from ..analysis import patch_layer, whole_image_warning, write_patch_pages
    from ..core.errors import CnnlensError

    idx = _open(index_dir)
    try:
        name = patch_layer(idx) if layer is None else idx.check_layer(layer)
        chosen = parse_indices(units, "--units")
    except (CnnlensError, ValueError) as e:
        fail(str(e))
    warning = whole_image_warning(idx, name)
    if warning:
        note("warning:", warning)
    try:
        page = write_patch_pages(idx, name, chosen, out_dir, k=k)
    except (CnnlensError, ValueError) as e:
        fail(str(e))
    say(f"saved {page}")


@app.command()
def neighbours(
    index_dir: Path = typer.Argument(..., help="Index folder."),
    query: str = typer.Argument(..., help="Entry number in the index, or an image file."),
    layer: str = typer.Option(None, "--layer", "-l", help="Indexed layer (default: first)."),
    k: int = typer.Option(8, "-k", "--top", help="Neighbours to show."),
    metric: str = typer.Option("cosine", help="cosine or l2."),
    out_file: Path = typer.Option(None, "--out", "-o", help="HTML file."),
    explain: str = typer.Option(
        None,
        "--explain",
        metavar="METHOD",
        help="Also map, with METHOD (e.g. gradcam), why the query and each feature-space "
        "neighbour are similar: the cosine similarity of their pooled --layer features, "
        "explained on both images (needs the index's model).",
    ),
    model: str = Opt.model,
    weights: str = Opt.weights,
    trust_checkpoint: bool = Opt.trust,
    device: str = Opt.device,
) -> None:
    """k nearest images in feature space next to k nearest in pixel space."""
    from ..analysis import nearest, write_neighbours_page
    from ..analysis.neighbours import explain_neighbours
    from ..core.errors import CnnlensError

    idx = _open(index_dir)
    q: int | Path = int(query) if query.isdigit() else Path(query)
    needed = explain or not isinstance(q, int)
    loaded = load(model, weights, trust_checkpoint, None, device) if needed else None
    if explain and loaded.name != idx.meta["model"]:
        fail(
            f"--explain needs the model that built the index ({idx.meta['model']}), not "
            f"{loaded.name}: pass it with --model"
        )
    try:
        name = idx.check_layer(layer)
        by_feat, by_pix = nearest(idx, q, name, k, metric, model=loaded)
        why = explain_neighbours(loaded, idx, q, by_feat, name, explain) if explain else None
        target = out_file or Path("cnnlens-analysis") / f"neighbours-{Path(str(q)).stem}.html"
        page = write_neighbours_page(idx, q, by_feat, by_pix, target, name, explained=why)
    except (CnnlensError, ValueError) as e:
        fail(str(e))
    for title, nb in (("feature", by_feat), ("pixel", by_pix)):
        for e, d in zip(nb.indices[0].tolist(), nb.distances[0].tolist()):
            say(f"{title}\t{d:.4f}\t{idx.paths[e]}")
    say(f"saved {page}")


@app.command()
def embed(
    index_dir: Path = typer.Argument(..., help="Index folder."),
    layer: str = typer.Option(None, "--layer", "-l", help="Indexed layer (default: first)."),
    method: str = typer.Option("tsne", help="pca, tsne or umap."),
    seed: int = typer.Option(0, help="Random seed."),
    grid: int = typer.Option(24, help="Thumbnail grid cells per side (0: none)."),
    out_file: Path = typer.Option(None, "--out", "-o", help="HTML file."),
) -> None:
    """2-D map of a layer's features: zoomable scatter and thumbnail grid (HTML)."""
    from ..analysis import embed_index, thumbnail_grid, write_map_page
    from ..core.errors import CnnlensError

    idx = _open(index_dir)
    try:
        name = idx.check_layer(layer)
        start = time.perf_counter()
        entries, coords = embed_index(idx, name, method, seed=seed)
        seconds = time.perf_counter() - start
        pic = (
            thumbnail_grid(coords, idx.thumbnails(), grid, entries=entries)[0] if grid > 0 else None
        )
        labels = idx.colour_labels()
        target = out_file or Path("cnnlens-analysis") / f"map-{name}-{method}.html"
        page = write_map_page(
            target, coords, [idx.paths[e] for e in entries], [labels[e] for e in entries],
            f"{method} of {name} ({idx.meta['model']})", pic,
            {"index": str(idx.root), "layer": name, "method": method, "seed": seed,
             "seconds": round(seconds, 2)},
        )  # fmt: skip
    except (CnnlensError, ValueError) as e:
        fail(str(e))
    say(f"{method}: {len(entries)} points in {seconds:.1f} s; saved {page}")
