"""Nearest neighbours in feature space next to nearest neighbours in pixel space.

Exact search: the index's features are read in chunks of rows, moved to the device and
compared with the queries; a running top-k is kept, so memory stays at one chunk. Cosine
distance is ``1 - <a, b> / (|a| |b|)``, L2 is the Euclidean distance. Pixel space uses the
index's thumbnails (what the model saw, downsized) as flat vectors with L2, as in the
classic comparison of a CNN's fc7 neighbours with pixel neighbours (Krizhevsky et al. 2012).

"Why are these two neighbours?" :func:`explain_neighbours` maps, for the query and each
feature-space neighbour, the cosine similarity of their pooled layer features (what the
index ranks by) with any attribution method, on both images:
:class:`~cnnlens.targets.EmbeddingSimilarity` with the other image as the reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..core.hooks import capture, preserved
from ..io import load_image
from ..models.base import LoadedModel
from ..targets.embedding import EmbeddingSimilarity, pooled
from .store import FeatureIndex

__all__ = [
    "NeighbourMaps",
    "Neighbours",
    "explain_neighbours",
    "nearest",
    "query_features",
    "write_neighbours_page",
]


@dataclass
class Neighbours:
    """``indices`` and ``distances`` are ``(Q, k)``, nearest first."""

    indices: np.ndarray
    distances: np.ndarray
    metric: str


def _prepare(a: torch.Tensor, metric: str) -> torch.Tensor:
    a = a.float()
    return torch.nn.functional.normalize(a, dim=1) if metric == "cosine" else a


def search(
    queries: np.ndarray | torch.Tensor,
    data: np.ndarray,
    k: int = 8,
    metric: str = "cosine",
    *,
    valid: np.ndarray | None = None,
    exclude: Sequence[int | None] | None = None,
    chunk: int = 16384,
    device: str | torch.device = "cpu",
) -> Neighbours:
    """Exact k-nearest rows of ``data`` (``(N, D)``, may be memory-mapped) for each query.

    Args:
        queries: ``(Q, D)``.
        valid: boolean ``(N,)``; rows where it is False are never returned.
        exclude: per query an entry to leave out (the query itself) or ``None``.
        chunk: rows moved to ``device`` at a time.
    """
    if metric not in ("cosine", "l2"):
        raise ValueError(f"metric must be 'cosine' or 'l2', got {metric!r}")
    q = _prepare(torch.as_tensor(np.asarray(queries)).to(device), metric)
    n = data.shape[0]
    best_d = torch.full((q.shape[0], 0), float("inf"), device=device)
    best_i = torch.zeros((q.shape[0], 0), dtype=torch.long, device=device)
    for lo in range(0, n, chunk):
        block = torch.from_numpy(np.asarray(data[lo : lo + chunk], dtype=np.float32)).to(device)
        block = _prepare(block.reshape(block.shape[0], -1), metric)
        d = 1.0 - q @ block.T if metric == "cosine" else torch.cdist(q, block)
        if valid is not None:
            bad = torch.from_numpy(~np.asarray(valid[lo : lo + chunk], dtype=bool)).to(device)
            d[:, bad] = float("inf")
        for row, e in enumerate(exclude or []):
            if e is not None and lo <= e < lo + block.shape[0]:
                d[row, e - lo] = float("inf")
        idx = torch.arange(lo, lo + block.shape[0], device=device).expand(q.shape[0], -1)
        all_d, all_i = torch.cat([best_d, d], 1), torch.cat([best_i, idx], 1)
        kk = min(k, all_d.shape[1])
        best_d, pos = all_d.topk(kk, dim=1, largest=False)
        best_i = all_i.gather(1, pos)
    keep = torch.isfinite(best_d)
    if not bool(keep.all()):
        kk = int(keep.sum(1).min())
        best_d, best_i = best_d[:, :kk], best_i[:, :kk]
    return Neighbours(best_i.cpu().numpy(), best_d.cpu().numpy(), metric)


def query_features(
    model: LoadedModel, index: FeatureIndex, layer: str, image: Image.Image
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled ``layer`` features ``(1, C)`` and thumbnail vector of a new image."""
    loaded = LoadedModel.wrap(model)
    spec = loaded.preprocess_spec
    geo = spec.geometry(image)
    x = spec.to_tensor(geo).unsqueeze(0).to(loaded.device)
    with preserved(loaded.net), torch.inference_mode(), capture(loaded.net, [layer]) as rec:
        loaded.net(x)
    feat = pooled(rec.activations[layer].float()).cpu().numpy()
    t = int(index.meta["thumb_size"])
    thumb = np.asarray(geo.resize((t, t), Image.BILINEAR), np.float32).reshape(1, -1)
    return feat, thumb


def nearest(
    index: FeatureIndex,
    query: int | str | Path | Image.Image,
    layer: str | None = None,
    k: int = 8,
    metric: str = "cosine",
    model: LoadedModel | None = None,
    device: str | torch.device = "cpu",
) -> tuple[Neighbours, Neighbours]:
    """k nearest entries of ``query`` in feature space and in pixel space.

    Args:
        index: the index to search.
        query: an entry number (then the entry itself is left out), or an image file / PIL
            image (then ``model`` computes its features; it must be the indexed model).
        layer: indexed layer (default: the first).
        metric: ``"cosine"`` or ``"l2"`` for features (pixels always use L2).

    Returns:
        ``(feature_neighbours, pixel_neighbours)``, each with ``(1, k)`` arrays.
    """
    layer = index.check_layer(layer)
    valid = np.asarray(index.status) == 1
    if isinstance(query, (int, np.integer)):
        e = int(query)
        if not (0 <= e < len(index) and valid[e]):
            raise ValueError(f"entry {e} is not an indexed image (0-{len(index) - 1})")
        feat = np.asarray(index.features(layer)[e : e + 1], np.float32)
        pix = np.asarray(index.thumbnails()[e : e + 1], np.float32).reshape(1, -1)
        exclude = [e]
    else:
        if model is None:
            raise ValueError("a query image needs the model that built the index (model=...)")
        img = query if isinstance(query, Image.Image) else load_image(query, index.max_pixels)
        feat, pix = query_features(model, index, layer, img)
        exclude = None
    by_feat = search(
        feat, index.features(layer), k, metric, valid=valid, exclude=exclude, device=device
    )
    by_pix = search(pix, index.thumbnails(), k, "l2", valid=valid, exclude=exclude, device=device)
    return by_feat, by_pix


@dataclass
class NeighbourMaps:
    """Why the query and each neighbour are similar, explained by ``method``.

    ``query_maps[j]`` maps what in the query makes it like neighbour ``j``,
    ``neighbour_maps[j]`` what in neighbour ``j`` makes it like the query (``(k, H, W)``
    each, at the model's input size); ``similarity[j]`` is their cosine similarity;
    ``images`` the ``(1 + k, 3, H, W)`` inputs in [0, 1], the query first.
    """

    method: str
    query_maps: torch.Tensor
    neighbour_maps: torch.Tensor
    similarity: torch.Tensor
    images: torch.Tensor
    signed: bool


def _entry_path(index: FeatureIndex, query) -> str:
    return index.paths[int(query)] if isinstance(query, (int, np.integer)) else str(query)


def explain_neighbours(
    model: LoadedModel,
    index: FeatureIndex,
    query: int | str | Path,
    by_feat: Neighbours,
    layer: str,
    method: str = "gradcam",
    **params,
) -> NeighbourMaps:
    """Map why ``query`` and each of its feature-space neighbours are similar.

    Args:
        model: the model that built the index.
        query: an entry number or an image file, as given to :func:`nearest`.
        by_feat: :func:`nearest`'s feature-space neighbours of ``query``.
        layer: the indexed layer they were found at.
        method: any method that takes non-class targets (``cl.list_methods``).
        **params: the method's parameters.
    """
    from ..methods import attribute

    loaded = LoadedModel.wrap(model)
    spec = loaded.preprocess_spec

    def tensor(path: str) -> torch.Tensor:
        return spec.to_tensor(spec.geometry(load_image(path, index.max_pixels)))

    paths = [_entry_path(index, query)] + [index.paths[e] for e in by_feat.indices[0].tolist()]
    x = torch.stack([tensor(p) for p in paths]).to(loaded.device)
    q, near = x[:1], x[1:]
    names = [Path(p).name for p in paths]
    to_query = EmbeddingSimilarity(q, layer, name=names[0])
    to_each = [EmbeddingSimilarity(near[j], layer, name=names[1 + j]) for j in range(len(near))]
    by_nb = attribute(loaded, near, method, target=to_query, **params)
    by_q = attribute(loaded, q, method, target=[to_each], **params)
    with preserved(loaded.net), torch.no_grad():
        to_query.prepare(loaded.net, near)
        sim = to_query(loaded.net, near).float().cpu()
    return NeighbourMaps(
        by_nb.method, by_q.maps[0].detach(), by_nb.maps[:, 0].detach(), sim,
        loaded.display_images(x).cpu(), by_nb.signed,
    )  # fmt: skip


def _why_sections(explained: NeighbourMaps, paths: list[str], layer: str, size: int) -> list:
    from ..colormaps import overlay
    from ..featurevis.page import Section

    def pic(i: int, values: torch.Tensor) -> Image.Image:
        img = overlay(explained.images[i], values.float().numpy(), signed=explained.signed)
        img.thumbnail((size, size))
        return img

    query = Path(paths[0]).name
    sections = []
    for j, path in enumerate(paths[1:]):
        name = Path(path).name
        figs = [
            (pic(0, explained.query_maps[j]), f"{query}: what is like {name}"),
            (pic(1 + j, explained.neighbour_maps[j]), f"{name}: what is like {query}"),
        ]
        note = (
            f"{explained.method} of the cosine similarity "
            f"{float(explained.similarity[j]):.3f} of pooled {layer} features"
        )
        sections.append(Section(f"why {name} is a neighbour", note, None, figs, size))
    return sections


def write_neighbours_page(
    index: FeatureIndex,
    query: int | str | Path,
    by_feat: Neighbours,
    by_pix: Neighbours,
    out: str | Path,
    layer: str,
    size: int = 128,
    explained: NeighbourMaps | None = None,
) -> Path:
    """HTML page: the query, its feature-space row and its pixel-space row, with distances;
    with ``explained`` (:func:`explain_neighbours`), a section per neighbour mapping why."""
    from ..featurevis.page import Section, write_page

    def pic(path: str) -> Image.Image:
        img = load_image(path, index.max_pixels)
        img.thumbnail((size, size))
        return img

    qpath = _entry_path(index, query)
    rows = []
    for title, nb in (
        (f"feature space ({layer}, {by_feat.metric})", by_feat),
        ("pixel space (thumbnails, L2)", by_pix),
    ):
        figs = [
            (pic(index.paths[e]), f"{d:.3g} · {Path(index.paths[e]).name}")
            for e, d in zip(nb.indices[0].tolist(), nb.distances[0].tolist())
        ]
        rows.append(Section(title, None, None, figs, figure_width=size))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sections = [Section("query", None, None, [(pic(qpath), Path(qpath).name)], size), *rows]
    settings = {"index": str(index.root), "layer": layer, "k": by_feat.indices.shape[1]}
    if explained is not None:
        paths = [qpath] + [index.paths[e] for e in by_feat.indices[0].tolist()]
        sections += _why_sections(explained, paths, layer, size)
        settings["explained by"] = explained.method
    return write_page(out, f"Nearest neighbours of {Path(qpath).name}", sections, settings)
