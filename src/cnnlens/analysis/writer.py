"""Writing computed rows into an index folder (shared by the local and the Ray paths)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..core.atomic import write_json_atomic
from ..core.spatial import layer_views
from .store import TOP_K

__all__ = ["IndexWriter", "compute_batch", "index_views"]


def index_views(loaded, layers: Sequence[str]) -> dict:
    """How each indexed layer's output reads as ``(N, C, h, w)`` at the model's input size."""
    crop = loaded.preprocess_spec.crop
    return layer_views(loaded.net, layers, (3, crop, crop))


def compute_batch(net, x: torch.Tensor, rec, views: dict) -> dict[str, np.ndarray]:
    """One batch through ``net`` (inside ``capture(net, layers)`` as ``rec``) -> the rows to
    store: ``pred_index``, ``pred_prob`` and per layer ``f:``, ``m:``, ``a:`` + name.

    ``views`` maps each layer to the reading of its output as ``(N, C, h, w)``
    (:func:`cnnlens.core.spatial.layer_views`), so ``a:`` is a row-major position on
    the layer's own grid whatever its layout."""
    logits = net(x)
    probs, top = torch.softmax(logits.float(), 1).topk(min(TOP_K, logits.shape[1]), 1)
    out = {"pred_index": top.cpu().numpy(), "pred_prob": probs.cpu().numpy()}
    for name, view in views.items():
        a = view(rec.activations[name]).flatten(2)
        m, arg = a.max(2)
        out["f:" + name] = a.float().mean(2).cpu().numpy()
        out["m:" + name], out["a:" + name] = m.float().cpu().numpy(), arg.cpu().numpy()
    return out


class IndexWriter:
    """Writes computed rows into an index folder's memory maps and keeps its checkpoints."""

    def __init__(self, root: Path, paths: Sequence[str], layers: Sequence[str]):
        def rw(*parts):
            return np.load(root.joinpath(*parts), mmap_mode="r+")

        state = json.loads((root / "state.json").read_text("utf-8"))
        self.root, self.paths, self.layers = root, paths, list(layers)
        self.done, self.failures = int(state["done"]), list(state["failures"])
        self.thumb_size = json.loads((root / "meta.json").read_text("utf-8"))["thumb_size"]
        self.arrays = {n[:-4]: rw(n) for n in ("status.npy", "pred_index.npy", "pred_prob.npy")}
        self.arrays["thumbs"] = rw("thumbs.npy")
        for name in layers:
            for key, f in (("f:", "features"), ("m:", "max"), ("a:", "argmax")):
                self.arrays[key + name] = rw("layers", name, f + ".npy")

    def write(self, rows: np.ndarray, result: dict, thumbs: np.ndarray, errors) -> None:
        """Store ``result`` (see :func:`compute_batch`) for the entries ``rows``."""
        for key, value in result.items():
            self.arrays[key][rows, : value.shape[1]] = value
        self.arrays["thumbs"][rows] = thumbs
        for r, err in zip(rows.tolist(), errors):
            self.arrays["status"][r] = 2 if err else 1
            if err:
                self.failures.append({"path": self.paths[r], "reason": str(err)})

    def checkpoint(self, done: int, **extra) -> None:
        for arr in self.arrays.values():
            arr.flush()
        self.done = done
        state = {"done": done, "failures": self.failures, **extra}
        write_json_atomic(self.root / "state.json", state)
