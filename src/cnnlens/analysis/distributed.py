"""Indexing on a Ray cluster: the same index, with decoding and inference spread over workers.

The image list is cut into chunks of ``checkpoint_every`` entries. Each chunk becomes a Ray
Data dataset of ``(entry, path)`` rows, mapped with ``map_batches`` by a pool of actors that
each hold one copy of the model (shipped once through the object store); every actor loads
and preprocesses its images exactly as the local path does and runs
:func:`cnnlens.analysis.writer.compute_batch`. The driver writes the returned rows into the
memory-mapped index and checkpoints after each chunk, so an interrupted run resumes the same
way, and the arrays match a local run within float tolerance.

Image paths must be readable from every node (a shared file system). ``address`` is passed to
``ray.init``: ``"local"`` starts a private instance, ``"auto"`` joins the cluster this
machine belongs to, ``"ray://head:10001"`` connects through Ray Client.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from ..core.optional import require
from ..io import DEFAULT_MAX_PIXELS

__all__ = ["run_on_ray"]


class _Worker:
    """A Ray Data actor: one model, many batches."""

    def __init__(self, model_ref, layers: Sequence[str], thumb: int, max_pixels: int):
        import ray

        from ..models.base import LoadedModel
        from .writer import index_views

        loaded = model_ref if isinstance(model_ref, LoadedModel) else ray.get(model_ref)
        self.loaded, self.layers, self.thumb = loaded, list(layers), thumb
        self.views = index_views(loaded, self.layers)
        self.max_pixels = max_pixels

    def __call__(self, batch: dict) -> dict:
        import torch

        from ..core.hooks import capture, preserved
        from .images import ImageFiles
        from .writer import compute_batch

        paths = [str(p) for p in batch["path"]]
        ds = ImageFiles(paths, self.loaded.preprocess_spec, self.thumb, 0, self.max_pixels)
        items = [ds[i] for i in range(len(paths))]
        x = torch.stack([it[0] for it in items]).to(self.loaded.device)
        net = self.loaded.net
        with preserved(net), torch.inference_mode(), capture(net, self.layers) as rec:
            out = compute_batch(net, x, rec, self.views)
        out["entry"] = np.asarray(batch["entry"], dtype=np.int64)
        out["thumb"] = np.stack([it[1].numpy() for it in items])
        out["error"] = np.asarray([it[3] for it in items], dtype=object)
        return out


def run_on_ray(
    loaded,
    writer,
    paths: Sequence[str],
    address: str,
    *,
    batch_size: int = 32,
    workers: int = 2,
    checkpoint_every: int = 1024,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> None:
    """Fill ``writer`` (an :class:`~cnnlens.analysis.writer.IndexWriter`) using Ray.

    Args:
        loaded: the :class:`~cnnlens.LoadedModel` (pickled once into the object store).
        writer: the index being written; work starts after its last checkpoint.
        paths: every image path of the index.
        address: ``ray.init`` address (``"local"``, ``"auto"``, ``"ray://host:10001"``).
        workers: model actors (one model copy each).
        max_pixels: images with more pixels are recorded as unreadable.
    """
    ray = require("ray", "indexing on Ray (cnnlens index --ray)")
    from ..core import progress

    if loaded.device.type != "cpu":
        raise ValueError("indexing on Ray uses CPU actors; load the model on the CPU")
    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, include_dashboard=False,
                 log_to_driver=False)  # fmt: skip
    ray.data.DataContext.get_current().enable_progress_bars = False
    model_ref = ray.put(loaded)
    done, start = writer.done, time.perf_counter()
    with progress.task("index (ray)", len(paths) - done) as advance:
        try:
            while done < len(paths):
                hi = min(len(paths), done + checkpoint_every)
                rows = [{"entry": i, "path": paths[i]} for i in range(done, hi)]
                ds = ray.data.from_items(rows).map_batches(
                    _Worker,
                    fn_constructor_kwargs={"model_ref": model_ref, "layers": writer.layers,
                                           "thumb": writer.thumb_size,
                                           "max_pixels": max_pixels},
                    batch_size=batch_size,
                    batch_format="numpy",
                    concurrency=workers,
                )  # fmt: skip
                for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                    entries = np.asarray(batch.pop("entry"))
                    order = np.argsort(entries)
                    thumbs, errors = batch.pop("thumb"), batch.pop("error")
                    result = {k: np.asarray(v)[order] for k, v in batch.items()}
                    writer.write(entries[order], result, thumbs[order], errors[order].tolist())
                    advance(len(entries))
                done = hi
                writer.checkpoint(done)
        finally:
            writer.checkpoint(done, seconds=time.perf_counter() - start)
