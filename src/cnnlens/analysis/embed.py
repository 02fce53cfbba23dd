"""2-D maps of a layer's features: PCA, t-SNE and UMAP, and the thumbnail grid.

* PCA (scikit-learn): the two directions of largest variance.
* t-SNE (van der Maaten & Hinton, JMLR 2008) with openTSNE: FFT-accelerated gradients
  (Linderman et al., Nature Methods 2019) from 10,000 points, Barnes-Hut below, started
  from the PCA layout, which keeps the global arrangement and makes runs reproducible for a
  given ``seed``.
* UMAP (McInnes et al., 2018) with umap-learn.

t-SNE and UMAP first reduce the features to ``pca_dims`` dimensions with PCA (the usual
practice: it removes noise and speeds up the neighbour search). The thumbnail grid
(Karpathy's "t-SNE grid") divides the square around the layout into ``G x G`` cells and
shows each image at most once: the (cell, point) pairs less than one cell width apart are
taken nearest first, each cell and each point used once. Cells with no point left within one
cell width stay empty; with fewer points than cells, most cells do.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..core.optional import require
from .store import FeatureIndex

__all__ = ["METHODS", "embed", "embed_index", "grid_assignment", "thumbnail_grid"]

METHODS = ("pca", "tsne", "umap")


def embed(
    features: np.ndarray,
    method: str = "tsne",
    *,
    seed: int = 0,
    pca_dims: int = 50,
    perplexity: float = 30.0,
    n_neighbors: int = 15,
    n_jobs: int = 1,
    tsne_gradient: str = "auto",
) -> np.ndarray:
    """Lay out ``(N, D)`` features in 2-D.

    Args:
        features: one row per image.
        method: ``"pca"``, ``"tsne"`` or ``"umap"``.
        seed: random state of every step (same seed, same layout on one machine).
        pca_dims: dimensions kept before t-SNE / UMAP.
        perplexity: t-SNE perplexity (lowered automatically for tiny sets).
        n_neighbors: UMAP neighbourhood size (lowered automatically for tiny sets).
        n_jobs: threads for t-SNE / UMAP.
        tsne_gradient: ``"fft"`` (interpolation, Linderman et al.), ``"bh"`` (Barnes-Hut) or
            ``"auto"``: openTSNE's choice, Barnes-Hut below 10,000 points, FFT from there on.

    Returns:
        ``(N, 2)`` float32 coordinates.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    PCA = require("sklearn.decomposition", "2-D maps (cnnlens embed)").PCA

    x = np.asarray(features, dtype=np.float32)
    n = x.shape[0]
    if n < 3:
        raise ValueError(f"a 2-D map needs at least 3 images, got {n}")
    dims = min(2 if method == "pca" else pca_dims, n, x.shape[1])
    reduced = PCA(n_components=dims, random_state=seed).fit_transform(x).astype(np.float32)
    if method == "pca":
        return _pad2(reduced)
    if method == "tsne":
        TSNE = require("openTSNE", "t-SNE maps (cnnlens embed --method tsne)").TSNE

        perp = float(min(perplexity, max(1.0, (n - 1) / 3.0)))
        init = reduced[:, :2] / max(float(np.std(reduced[:, 0])), 1e-12) * 1e-4
        tsne = TSNE(
            perplexity=perp,
            initialization=_pad2(init).astype(np.float64),
            negative_gradient_method=tsne_gradient,
            random_state=seed,
            n_jobs=n_jobs,
            verbose=False,
        )
        return np.asarray(tsne.fit(reduced), dtype=np.float32)
    umap = require("umap", "UMAP maps (cnnlens embed --method umap)")

    reducer = umap.UMAP(
        n_neighbors=min(n_neighbors, n - 1), random_state=seed, n_jobs=n_jobs, init="random"
    )
    return np.asarray(reducer.fit_transform(reduced), dtype=np.float32)


def _pad2(a: np.ndarray) -> np.ndarray:
    if a.shape[1] >= 2:
        return a[:, :2]
    return np.concatenate([a, np.zeros((a.shape[0], 2 - a.shape[1]), a.dtype)], axis=1)


def embed_index(
    index: FeatureIndex, layer: str | None = None, method: str = "tsne", **kwargs
) -> tuple[np.ndarray, np.ndarray]:
    """Embed the indexed images of ``layer``; return ``(entries, coords)``.

    The layout is cached in the index as ``embeddings/<layer>-<method>-<settings hash>.npz``.
    """
    import hashlib
    import json

    layer = index.check_layer(layer)
    entries = index.ok
    key = hashlib.sha256(json.dumps(sorted(kwargs.items())).encode()).hexdigest()[:10]
    cache = index.root / "embeddings" / f"{layer}-{method}-{key}.npz"
    if cache.is_file():
        data = np.load(cache)
        if np.array_equal(data["entries"], entries):
            return data["entries"], data["coords"]
    coords = embed(np.asarray(index.features(layer)[entries]), method, **kwargs)
    from ..core.atomic import atomic_write

    cache.parent.mkdir(exist_ok=True)
    atomic_write(cache, lambda fh: np.savez(fh, entries=entries, coords=coords))
    return entries, coords


def grid_assignment(coords: np.ndarray, size: int, candidates: int = 9) -> np.ndarray:
    """``(size, size)`` array of point numbers, each point in at most one cell; ``-1``: empty.

    The layout is scaled into the unit square (aspect ratio kept), rows going top to bottom
    (y descending). Each cell considers its ``candidates`` nearest points within one cell
    width; over all cells these pairs are taken nearest first (ties: lower point number,
    then lower cell number), skipping a pair whose cell or point is already used. When there
    are no more points than cells, a point left out (its near cells went to nearer points)
    then takes the nearest free cell, the same way, so every point is shown once.
    """
    from scipy.spatial import cKDTree

    c = np.asarray(coords, np.float64)
    lo, hi = c.min(0), c.max(0)
    span = float(max((hi - lo).max(), 1e-12))
    unit = (c - lo) / span  # keep the aspect ratio
    # cell number = row * size + col, row 0 at the bottom; centres as (x, y)
    grid = np.stack(np.meshgrid(np.arange(size), np.arange(size)), -1).reshape(-1, 2)
    centres = (grid + 0.5) / size
    k = min(candidates, len(unit))
    d, near = cKDTree(unit).query(centres, k=k, distance_upper_bound=1.0 / size)
    flat = np.full(size * size, -1, np.int64)
    used = np.zeros(len(unit), bool)
    cells = np.repeat(np.arange(size * size), k)
    _take_nearest(flat, used, cells, near.ravel(), d.ravel())
    if len(unit) <= size * size and not used.all():
        left, free = np.flatnonzero(~used), np.flatnonzero(flat < 0)
        dist = np.linalg.norm(unit[left][:, None] - centres[free][None], axis=2)
        _take_nearest(
            flat, used, np.tile(free, len(left)), np.repeat(left, len(free)), dist.ravel()
        )
    return flat.reshape(size, size)[::-1].copy()  # rows top to bottom = y descending


def _take_nearest(flat, used, cells, points, dist) -> None:
    """Fill ``flat`` (cell -> point) from candidate pairs, nearest first, each cell and point
    once; pairs with infinite distance (no neighbour found) are skipped."""
    keep = np.isfinite(dist)
    cells, points, dist = cells[keep], points[keep], dist[keep]
    for j in np.lexsort((cells, points, dist)).tolist():
        if flat[cells[j]] < 0 and not used[points[j]]:
            flat[cells[j]], used[points[j]] = points[j], True


def thumbnail_grid(
    coords: np.ndarray,
    thumbs: np.ndarray,
    size: int = 20,
    cell: int = 32,
    entries: np.ndarray | None = None,
) -> tuple[Image.Image, np.ndarray]:
    """Paste the thumbnails :func:`grid_assignment` places (each image once) into one picture.

    Args:
        coords: ``(M, 2)`` layout.
        thumbs: ``(N, T, T, 3)`` uint8 (may be memory-mapped; only the chosen ones are read).
        entries: row of ``thumbs`` for each point (default: point ``k`` is row ``k``).

    Returns:
        The picture ``(size * cell)`` pixels square and the ``(size, size)`` assignment
        (point numbers, ``-1`` for empty cells).
    """
    assign = grid_assignment(coords, size)
    canvas = Image.new("RGB", (size * cell, size * cell), (255, 255, 255))
    for r in range(size):
        for col in range(size):
            k = int(assign[r, col])
            if k >= 0:
                row = k if entries is None else int(entries[k])
                tile = Image.fromarray(np.asarray(thumbs[row], np.uint8))
                canvas.paste(tile.resize((cell, cell), Image.BILINEAR), (col * cell, r * cell))
    return canvas, assign
