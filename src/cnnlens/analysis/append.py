"""Adding images to an existing index folder: checks that it is the same model and layers,
then grows every array and records the new paths.

The arrays are grown first (each copied into a longer ``.npy`` that then replaces it), and
only then are the new paths written to ``images.json``. An append stopped in between leaves
longer arrays behind a valid index of the old images (readers ignore rows past the paths),
and the next append grows them again from the recorded rows. The new rows are then computed
like any unfinished part of an index, after the last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..core.atomic import write_json_atomic
from .store import IndexFolderError

__all__ = ["check_same_model", "extend_index", "new_images", "weights_digest"]

_CHUNK_ROWS = 65536


def weights_digest(net: torch.nn.Module) -> str:
    """A short hash of the first and last parameter tensors: tells weights apart cheaply."""
    params = list(net.parameters())
    h = hashlib.sha256()
    for t in params[:1] + params[-1:]:
        h.update(t.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def check_same_model(root: Path, meta: dict, model: str, layers: Sequence[str], digest: str):
    """Raise :class:`IndexFolderError` unless the index at ``root`` was built by this model
    (name and, when recorded, weights) at exactly these layers."""
    old_layers = list(meta["layers"])
    same_weights = meta.get("weights") in (None, digest)
    if meta["model"] == model and old_layers == list(layers) and same_weights:
        return
    what = "" if same_weights or meta["model"] != model else " with other weights"
    raise IndexFolderError(
        f"{root} holds an index of {meta['model']} at layers {', '.join(old_layers)}, not of "
        f"{model}{what} at {', '.join(layers)}; resume or --append with the same model and "
        "layers, or choose a new --out folder"
    )


def new_images(old_paths: Sequence[str], files: Sequence[Path]) -> list[Path]:
    """The ``files`` not already in the index (compared as absolute, resolved paths)."""
    known = {os.path.realpath(p) for p in old_paths}
    return [f for f in files if os.path.realpath(f) not in known]


def _grow(path: Path, rows_kept: int, rows: int) -> None:
    """Replace the ``.npy`` at ``path`` by one with ``rows`` rows: its first ``rows_kept``
    rows, then zeros."""
    old = np.load(path, mmap_mode="r")
    if old.shape[0] == rows:
        return
    part = path.with_name(path.name + ".part")
    new = np.lib.format.open_memmap(part, mode="w+", dtype=old.dtype, shape=(rows, *old.shape[1:]))
    for start in range(0, rows_kept, _CHUNK_ROWS):
        stop = min(start + _CHUNK_ROWS, rows_kept)
        new[start:stop] = old[start:stop]
    new.flush()
    del new, old
    os.replace(part, path)


def extend_index(
    root: Path, new_paths: Sequence[str], new_labels: Sequence[str] | None, fingerprint
) -> list[str]:
    """Add ``new_paths`` (pending) to the index at ``root``; return every path.

    Args:
        root: the index folder.
        new_paths: paths to add, in order.
        new_labels: their labels, or None (empty labels when the index has labels).
        fingerprint: ``fingerprint(paths)`` for the new ``meta.json``.
    """
    images = json.loads((root / "images.json").read_text("utf-8"))
    old_paths, labels = list(images["paths"]), images.get("labels")
    paths = old_paths + list(new_paths)
    arrays = [root / "status.npy", root / "pred_index.npy", root / "pred_prob.npy"]
    arrays += [root / "thumbs.npy", *sorted((root / "layers").glob("**/*.npy"))]
    for array in arrays:
        _grow(array, len(old_paths), len(paths))
    if labels is not None or new_labels is not None:
        old = labels if labels is not None else [""] * len(old_paths)
        labels = list(old) + list(new_labels if new_labels is not None else [""] * len(new_paths))
    write_json_atomic(root / "images.json", {"paths": paths, "labels": labels})
    meta = json.loads((root / "meta.json").read_text("utf-8"))
    write_json_atomic(root / "meta.json", {**meta, "fingerprint": fingerprint(paths)})
    return paths
