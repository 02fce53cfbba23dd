"""Stream an image folder through a model into an on-disk feature index (see :mod:`.store`).

Images are decoded and preprocessed by a ``torch.utils.data.DataLoader`` (in worker
processes when ``num_workers > 0``) and run in batches inside ``preserved(net)`` and
``torch.inference_mode()``; per chosen layer the outputs are reduced on the device to the
spatial mean (the pooled feature), the maximum and its position, and written into
memory-mapped ``.npy`` files. Memory use is one batch, whatever the folder's size.

Every ``checkpoint_every`` images (and when the run stops, by an error or Ctrl-C) the
arrays are flushed and ``state.json`` is replaced atomically; a new call on the same folder
continues after the last checkpoint. Unreadable files (and images above ``max_pixels``) are
recorded with their reason and skipped. ``append=True`` adds the images an index does not
hold yet, with the same model and layers (see :mod:`.append`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import astuple
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..core import progress
from ..core.atomic import write_json_atomic
from ..core.errors import ImageError
from ..core.hooks import capture, preserved
from ..core.names import resolve_layer
from ..io import DEFAULT_MAX_PIXELS, list_images
from ..models.base import LoadedModel
from .append import check_same_model, extend_index, new_images, weights_digest
from .images import ImageFiles
from .store import FORMAT_VERSION, TOP_K, FeatureIndex, IndexFolderError, layer_dir, open_index
from .writer import IndexWriter, compute_batch, index_views

__all__ = ["build_index", "read_label_csv"]


def read_label_csv(csv_path: str | os.PathLike, root: Path, paths: Sequence[Path]) -> list[str]:
    """Labels from a CSV with ``path`` and ``label`` columns (paths relative to ``root``).

    Images missing from the CSV get the empty label ``""``.
    """
    table: dict[str, str] = {}
    with open(csv_path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
            raise IndexFolderError(f"{csv_path}: needs a header with 'path' and 'label' columns")
        for row in reader:
            table[Path(row["path"]).as_posix()] = row["label"]
    out = []
    for p in paths:
        rel = p.relative_to(root).as_posix() if root.is_dir() and p.is_relative_to(root) else None
        out.append(table.get(rel, table.get(p.as_posix(), table.get(p.name, ""))))
    return out


def _fingerprint(paths: Sequence[str], layers: Sequence[str], model: str) -> str:
    h = hashlib.sha256(json.dumps([list(paths), list(layers), model]).encode("utf-8"))
    return h.hexdigest()[:16]


def _layer_shapes(loaded: LoadedModel, layers: Sequence[str]) -> dict[str, list[int]]:
    """Per layer ``[C, h, w]`` as the index stores it (channels-last and token layers
    read through :mod:`cnnlens.core.spatial`; a pooled vector is ``[C, 1, 1]``)."""
    spec = loaded.preprocess_spec
    views = index_views(loaded, layers)
    with preserved(loaded.net), torch.inference_mode(), capture(loaded.net, layers) as rec:
        loaded.net(torch.zeros(1, 3, spec.crop, spec.crop, device=loaded.device))
    return {name: list(views[name](rec.activations[name]).shape[1:]) for name in layers}


def _fields(loaded: LoadedModel, shapes: dict) -> dict:
    """Per layer the receptive field as JSON (``None`` for layers without positions)."""
    from .receptive import UnsupportedGraph, receptive_field

    size = (loaded.preprocess_spec.crop,) * 2
    out = {}
    for name, (_, h, w) in shapes.items():
        try:
            rf = receptive_field(loaded.net, name, size) if h * w > 1 else None
        except (UnsupportedGraph, RuntimeError):
            rf = None
        out[name] = (
            None
            if rf is None
            else {"y": list(astuple(rf.y)), "x": list(astuple(rf.x)), "method": rf.method}
        )
    return out


def _create(root: Path, n: int, shapes: dict, dtype: str, thumb: int) -> None:
    def new(path: Path, shape, dt) -> None:
        np.lib.format.open_memmap(path, mode="w+", dtype=dt, shape=shape).flush()

    new(root / "status.npy", (n,), np.uint8)
    new(root / "pred_index.npy", (n, TOP_K), np.int32)
    new(root / "pred_prob.npy", (n, TOP_K), np.float32)
    new(root / "thumbs.npy", (n, thumb, thumb, 3), np.uint8)
    for name, (c, _, _) in shapes.items():
        d = layer_dir(root, name)
        d.mkdir(parents=True, exist_ok=True)
        new(d / "features.npy", (n, c), dtype)
        new(d / "max.npy", (n, c), dtype)
        new(d / "argmax.npy", (n, c), np.int32)


def build_index(
    model: LoadedModel | torch.nn.Module,
    dataset: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike,
    layers: Sequence[str] | None = None,
    *,
    label_csv: str | os.PathLike | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    dtype: str = "float16",
    checkpoint_every: int = 1024,
    thumb_size: int = 32,
    recursive: bool = True,
    ray_address: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    append: bool = False,
) -> FeatureIndex:
    """Index every image of ``dataset`` into the folder ``out``, resuming an earlier run.

    Args:
        model: the classifier (a bare module gets ImageNet preprocessing).
        dataset: a folder (searched recursively), a file, or a list of them.
        out: the index folder; an unfinished index of the same images, layers and model
            there is continued after its last checkpoint.
        layers: dotted layer names (default: the layer before the classifier's global pool,
            as :func:`cnnlens.core.layers.default_layer` picks it; when ``out`` holds an
            index, its layers).
        label_csv: optional CSV with ``path,label`` columns (paths relative to ``dataset``).
        batch_size, num_workers: DataLoader settings (workers decode images in parallel).
        dtype: ``"float16"`` or ``"float32"`` for the feature arrays (a new index only).
        checkpoint_every: images between checkpoints (rounded up to whole batches).
        thumb_size: side of the stored thumbnails (pixel-space neighbours, embedding grids).
        ray_address: run on Ray instead (``"local"``, ``"auto"``, ``"ray://head:10001"``;
            see :mod:`cnnlens.analysis.distributed`); ``num_workers`` model actors are used.
        max_pixels: images with more pixels are recorded as unreadable (see
            :func:`cnnlens.io.load_image`); the index keeps the largest limit it was run with,
            which :func:`top_patches` and :func:`nearest` use when they reload images.
        append: add the images of ``dataset`` that ``out`` does not hold yet (same model,
            weights and layers, else :class:`IndexFolderError`), after the ones it has.

    Returns:
        The :class:`FeatureIndex` (unreadable images have status 2 and are in ``failures``).

    Raises:
        IndexFolderError: ``out`` holds an index of other images (without ``append``), or of
            another model or other layers.
        ImageError: a path does not exist, or the folders hold no image
            (:class:`cnnlens.io.NoImagesError`).
    """
    loaded = LoadedModel.wrap(model)
    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be 'float16' or 'float32', got {dtype!r}")
    root = Path(out)
    old_meta = _read_json(root / "meta.json")
    if old_meta is not None and layers is None:
        layers = list(old_meta["layers"])
    if layers is None:
        from ..core.layers import default_layer

        layers = [default_layer(loaded.net, (loaded.preprocess_spec.crop,) * 2)]
    layers = [resolve_layer(loaded.net, name)[0] for name in layers]
    files = list_images(dataset, recursive=recursive)
    if not files:
        raise IndexFolderError("no images given: name a folder or image files")
    missing = next((f for f in files if not f.exists()), None)
    if missing is not None:
        raise ImageError(missing, "no such file or directory")
    digest = weights_digest(loaded.net)

    def fingerprint(paths: Sequence[str]) -> str:
        return _fingerprint(paths, layers, loaded.name)

    def labels_of(chosen: Sequence[Path]) -> list[str] | None:
        if label_csv is None:
            return None
        base = Path(dataset) if isinstance(dataset, (str, os.PathLike)) else Path(".")
        return read_label_csv(label_csv, base, chosen)

    if old_meta is None:
        root.mkdir(parents=True, exist_ok=True)
        ids = {
            "fingerprint": fingerprint([str(f) for f in files]),
            "weights": digest,
            "max_pixels": max_pixels,
        }
        _new_index(loaded, root, files, layers, labels_of(files), dtype, thumb_size, ids)
    else:
        check_same_model(root, old_meta, loaded.name, layers, digest)
        old_paths = json.loads((root / "images.json").read_text("utf-8"))["paths"]
        if append:
            added = new_images(old_paths, files)
            if added:
                extend_index(root, [str(f) for f in added], labels_of(added), fingerprint)
        elif old_meta.get("fingerprint") != fingerprint([str(f) for f in files]):
            raise IndexFolderError(
                f"{root} holds an index of other images, layers or model; add new images "
                "with --append (append=True), or choose a new --out folder or delete it"
            )
        if max_pixels > int(old_meta.get("max_pixels", DEFAULT_MAX_PIXELS)):
            _update_meta(root, max_pixels=max_pixels)
    paths = json.loads((root / "images.json").read_text("utf-8"))["paths"]
    if ray_address is None:
        _run(loaded, root, paths, layers, batch_size, num_workers, checkpoint_every, max_pixels)
    else:
        from .distributed import run_on_ray

        run_on_ray(loaded, IndexWriter(root, paths, layers), paths, ray_address,
                   batch_size=batch_size, workers=max(1, num_workers),
                   checkpoint_every=checkpoint_every, max_pixels=max_pixels)  # fmt: skip
    return open_index(root)


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text("utf-8")) if path.is_file() else None


def _update_meta(root: Path, **changes) -> None:
    meta = json.loads((root / "meta.json").read_text("utf-8"))
    write_json_atomic(root / "meta.json", {**meta, **changes})


def _new_index(loaded, root, files, layers, labels, dtype, thumb_size, ids: dict) -> None:
    """Create the arrays and JSON files of an empty index of ``files`` (``meta.json`` last,
    with ``ids``: the fingerprint, the weights digest and the pixel limit)."""
    shapes = _layer_shapes(loaded, layers)
    _create(root, len(files), shapes, dtype, thumb_size)
    write_json_atomic(root / "images.json", {"paths": [str(f) for f in files], "labels": labels})
    write_json_atomic(root / "state.json", {"done": 0, "failures": []})
    spec = loaded.preprocess_spec
    meta = {
        "version": FORMAT_VERSION,
        **ids,
        "model": loaded.name,
        "layers": shapes,
        "dtype": dtype,
        "thumb_size": thumb_size,
        "input_size": [spec.crop, spec.crop],
        "preprocess": {"crop": spec.crop, "resize": spec.resize},
        "class_names": list(loaded.class_names),
        "receptive_fields": _fields(loaded, shapes),
    }
    write_json_atomic(root / "meta.json", meta)


def _run(loaded, root, paths, layers, batch_size, num_workers, checkpoint_every, max_pixels):
    writer = IndexWriter(root, paths, layers)
    views = index_views(loaded, layers)
    done = since = writer.done
    if done >= len(paths):
        return
    loader = DataLoader(
        ImageFiles(paths[done:], loaded.preprocess_spec, writer.thumb_size, done, max_pixels),
        batch_size=batch_size,
        num_workers=num_workers,
    )
    start = time.perf_counter()
    try:
        with (
            progress.task("index", len(paths) - done) as advance,
            preserved(loaded.net),
            torch.inference_mode(),
            capture(loaded.net, layers) as rec,
        ):
            for x, th, idx, errs in loader:
                result = compute_batch(loaded.net, x.to(loaded.device), rec, views)
                writer.write(idx.numpy(), result, th.numpy(), errs)
                done = int(idx[-1]) + 1
                advance(len(idx))
                if done - since >= checkpoint_every:
                    writer.checkpoint(done)
                    since = done
    finally:
        writer.checkpoint(done, seconds=time.perf_counter() - start)
