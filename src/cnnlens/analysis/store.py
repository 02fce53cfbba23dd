"""The on-disk layout of a feature index and :class:`FeatureIndex`, its reader.

An index is a folder::

    meta.json            model, layers (shape per layer), dtype, input size, preprocessing,
                         receptive field per layer, the pixel limit images were loaded with
    images.json          image paths (as given) and labels (or null), in index order
    state.json           how many images are done, the failures (path, reason)
    status.npy           (N,) uint8: 0 pending, 1 indexed, 2 unreadable
    pred_index.npy       (N, 5) int32 top-5 classes;  pred_prob.npy (N, 5) float32
    thumbs.npy           (N, T, T, 3) uint8 thumbnails of what the model saw
    layers/<layer>/features.npy   (N, C) pooled (spatial mean) activations
    layers/<layer>/max.npy        (N, C) maximum over positions
    layers/<layer>/argmax.npy     (N, C) int32 flat position (row * W + col) of the maximum

Every array is a ``.npy`` file opened with ``np.load(mmap_mode=...)``, so nothing is read
into memory until it is used, and indexes far larger than memory work. Arrays may hold more
rows than ``images.json`` has paths (an append stopped before it recorded its new paths);
the rows past the paths are ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import CnnlensError
from ..io import DEFAULT_MAX_PIXELS

__all__ = ["FeatureIndex", "IndexFolderError", "open_index"]

TOP_K = 5
FORMAT_VERSION = 1


class IndexFolderError(CnnlensError, ValueError):
    """A feature index folder is missing, incomplete or does not match the request."""


def layer_dir(root: Path, layer: str) -> Path:
    return root / "layers" / layer


@dataclass
class FeatureIndex:
    """Read access to an index folder (arrays are memory-mapped, read-only).

    Attributes:
        root: the folder.
        meta: ``meta.json`` (``model``, ``layers``: name -> ``[C, H, W]``, ``dtype``...).
        paths: image path per entry; ``labels``: label per entry or ``None``.
        status: ``(N,)`` uint8, 1 where the image was indexed.
    """

    root: Path
    meta: dict
    paths: list[str]
    labels: list[str] | None
    status: np.ndarray
    failures: list[dict]

    @property
    def layers(self) -> list[str]:
        return list(self.meta["layers"])

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def ok(self) -> np.ndarray:
        """Indices of the entries that were indexed (unreadable and pending ones left out)."""
        return np.flatnonzero(np.asarray(self.status) == 1)

    @property
    def complete(self) -> bool:
        return not bool((np.asarray(self.status) == 0).any())

    def check_layer(self, layer: str | None) -> str:
        """``layer`` if indexed; the first indexed layer for ``None``; else a helpful error."""
        if layer is None:
            return self.layers[0]
        if layer not in self.meta["layers"]:
            raise IndexFolderError(
                f"layer {layer!r} is not in the index {self.root}; indexed layers: "
                f"{', '.join(self.layers)} (run `cnnlens index` with --layers {layer})"
            )
        return layer

    @property
    def max_pixels(self) -> int:
        """The pixel limit the images were loaded with (reloading them uses it too)."""
        return int(self.meta.get("max_pixels", DEFAULT_MAX_PIXELS))

    def field_size(self, layer: str) -> tuple[int, int] | None:
        """``(height, width)`` in input pixels of one position's receptive field in ``layer``,
        or ``None`` when the index does not know it (the field is then the whole image)."""
        rf = (self.meta.get("receptive_fields") or {}).get(self.check_layer(layer))
        if rf is None:
            return None
        return rf["y"][2] - rf["y"][1] + 1, rf["x"][2] - rf["x"][1] + 1

    def layer_shape(self, layer: str) -> tuple[int, int, int]:
        c, h, w = self.meta["layers"][self.check_layer(layer)]
        return int(c), int(h), int(w)

    def _array(self, *parts: str) -> np.ndarray:
        return np.load(self.root.joinpath(*parts), mmap_mode="r")[: len(self.paths)]

    def features(self, layer: str | None = None) -> np.ndarray:
        """``(N, C)`` pooled features of ``layer`` (memory-mapped)."""
        return self._array("layers", self.check_layer(layer), "features.npy")

    def max_activations(self, layer: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(N, C)`` max over positions and ``(N, C)`` flat argmax position of ``layer``."""
        name = self.check_layer(layer)
        return self._array("layers", name, "max.npy"), self._array("layers", name, "argmax.npy")

    def predictions(self) -> tuple[np.ndarray, np.ndarray]:
        """``(N, 5)`` top-5 class indices and probabilities."""
        return self._array("pred_index.npy"), self._array("pred_prob.npy")

    def thumbnails(self) -> np.ndarray:
        """``(N, T, T, 3)`` uint8 thumbnails of the model input."""
        return self._array("thumbs.npy")

    def colour_labels(self) -> list[str]:
        """Per entry: its label when the index has labels, else its top-1 class name."""
        if self.labels is not None:
            return [str(v) for v in self.labels]
        names = self.meta.get("class_names") or []
        top1 = np.asarray(self.predictions()[0][:, 0])
        return [names[i] if 0 <= i < len(names) else f"class_{i}" for i in top1.tolist()]


def open_index(path: str | Path) -> FeatureIndex:
    """Open an index folder written by :func:`cnnlens.analysis.build_index`.

    Raises:
        IndexFolderError: the folder holds no index.
    """
    root = Path(path)
    if not (root / "meta.json").is_file() or not (root / "images.json").is_file():
        raise IndexFolderError(f"{root} is not a cnnlens index (no meta.json); run `cnnlens index`")
    meta = json.loads((root / "meta.json").read_text("utf-8"))
    images = json.loads((root / "images.json").read_text("utf-8"))
    state_file = root / "state.json"
    state = json.loads(state_file.read_text("utf-8")) if state_file.is_file() else {}
    return FeatureIndex(
        root=root,
        meta=meta,
        paths=images["paths"],
        labels=images.get("labels"),
        status=np.load(root / "status.npy", mmap_mode="r")[: len(images["paths"])],
        failures=state.get("failures", []),
    )
