"""Saliency maps for a benchmark, computed in chunks and kept on disk so a run can resume.

A benchmark explains the same images with many methods, some of which take
minutes (learned masks, RISE). :class:`MapStore` computes one method's maps
for a split ``chunk`` images at a time and writes every finished chunk to
``root/<split>/<method>/<start>-<stop>.pt`` atomically, with the seconds it
took. A run that is interrupted and started again with the same settings
loads the finished chunks and computes only the rest; a chunk written under
other settings (method parameters, image count, model) is ignored, because the
settings' fingerprint is part of the folder name.

Baselines that need no model are "methods" too: ``centre`` (a map peaked at the
image centre) and ``random`` (seeded uniform noise) go through the same store
so every table has their rows.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..core import progress
from ..core.atomic import atomic_write
from ..methods import attribute
from .baselines import centre_map, random_map

BASELINES = ("centre", "random")


def fingerprint(settings: dict) -> str:
    """A short stable hash of JSON-able ``settings`` (what must match for a chunk to be reused)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def baseline_maps(name: str, n: int, size: tuple[int, int], seed: int, start: int) -> torch.Tensor:
    """``(n, H, W)`` maps of baseline ``name`` for images ``start .. start + n``."""
    h, w = size
    if name == "centre":
        return centre_map(n, h, w)
    # one seed per image so a chunked run gives the same maps as a single one
    return torch.cat([random_map(1, h, w, seed=seed * 1_000_003 + start + i) for i in range(n)])


class MapStore:
    """Maps of many methods on one split, cached per chunk under ``root``.

    Args:
        root: folder for the cached chunks (created on demand).
        model: the model every method explains.
        chunk: images per :func:`cnnlens.attribute` call (and per cached file).
        params: per-method keyword arguments, e.g. ``{"rise": {"masks": 1000}}``.
        seed: seed passed to stochastic methods and the random baseline.
        tag: anything else that identifies the run (model name, data settings).
    """

    def __init__(self, root, model, *, chunk=25, params=None, seed=0, tag=""):
        self.root = Path(root)
        self.model, self.chunk, self.seed, self.tag = model, int(chunk), int(seed), str(tag)
        self.params = {k: dict(v) for k, v in (params or {}).items()}

    def method_params(self, method: str) -> dict:
        from ..methods import get_method

        params = dict(self.params.get(method, {}))
        if method not in BASELINES and "seed" in get_method(method).defaults:
            params.setdefault("seed", self.seed)
        return params

    def folder(self, split: str, method: str, n: int, targets: torch.Tensor | None = None) -> Path:
        """Where the chunks of ``method`` on ``split`` live; other settings, other folder.

        The key covers the method's parameters, the run's tag, chunk size and seed, and
        the targets when given, so maps of another class are never read back.
        """
        settings = {
            "params": self.method_params(method),
            "n": n,
            "tag": self.tag,
            "chunk": self.chunk,
            "seed": self.seed,
        }
        if targets is not None:
            settings["targets"] = targets.detach().cpu().tolist()
        return self.root / split / f"{method}-{fingerprint(settings)}"

    def maps(
        self,
        split: str,
        method: str,
        x: torch.Tensor,
        targets: torch.Tensor,
        on_chunk: Callable[[int], None] | None = None,
    ) -> tuple[torch.Tensor, float]:
        """``(N, H, W)`` maps of ``method`` for ``x`` and one target per image, and seconds/image.

        Seconds count only the chunks computed in this call when some were
        loaded from disk; if all were loaded, the seconds recorded with them.
        """
        n = x.shape[0]
        folder = self.folder(split, method, n, targets)
        folder.mkdir(parents=True, exist_ok=True)
        parts, seconds = [], 0.0
        params = self.method_params(method)
        starts = range(0, n, self.chunk)
        with progress.task(f"{method} ({split})", len(starts)) as advance:
            for start in starts:
                stop = min(n, start + self.chunk)
                path = folder / f"{start:06d}-{stop:06d}.pt"
                if path.exists():
                    saved = torch.load(path, map_location="cpu", weights_only=True)
                    maps, secs = saved["maps"].float(), float(saved["seconds"])
                else:
                    maps, secs = self._compute(
                        method, x[start:stop], targets[start:stop], params, start
                    )
                    _save(path, {"maps": maps.half(), "seconds": torch.tensor(secs)})
                    maps = maps.half().float()  # identical to what a resumed run would load
                parts.append(maps)
                seconds += secs
                advance(1)
                if on_chunk is not None:
                    on_chunk(stop)
        return torch.cat(parts).to(x.device), seconds / max(n, 1)

    def _compute(self, method, x, targets, params, start) -> tuple[torch.Tensor, float]:
        began = time.perf_counter()
        if method in BASELINES:
            maps = baseline_maps(method, x.shape[0], tuple(x.shape[-2:]), self.seed, start)
        else:
            expl = attribute(self.model, x, method, target=targets.view(-1, 1), **params)
            maps = expl.maps[:, 0]
        maps = torch.nan_to_num(maps.detach().float().cpu(), nan=0.0)
        return maps, time.perf_counter() - began


def _save(path: Path, payload: dict) -> None:
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write(path, lambda fh: fh.write(buf.getvalue()))


__all__ = ["BASELINES", "MapStore", "baseline_maps", "fingerprint"]
