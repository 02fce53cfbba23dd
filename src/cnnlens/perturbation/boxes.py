"""Smallest deleting box: how small a region a saliency map points to really suppresses the class.

Fong & Vedaldi ("Interpretable Explanations of Black Boxes by Meaningful
Perturbation", ICCV 2017, sec. 5.3 and fig. 8) compare saliency methods by how
compact a region that actually deletes the evidence they find. For each
saliency map ``S`` of an image ``x0`` and target ``c``:

1. normalise the map to [0, 1]: ``S' = (S - min S) / (max S - min S)``
   (signed maps included: their most negative value becomes 0);
2. for each threshold ``h`` in {0, 0.1, ..., 1} take the pixels with
   ``S'(u) >= h`` and fit the tightest axis-aligned box ``B_h`` around them
   (at ``h = 0`` this is the whole image; a constant map gives no box above 0);
3. blur the image inside ``B_h`` only, ``x_h = Φ(x0; m_{B_h})`` with the blur
   perturbation (``σ0 = 10`` px) and a binary mask ``m_B`` (0 in the box), and
   read the target score ``p = s_c(x_h)``;
4. normalise it between the original image's score ``p0 = s_c(x0)`` and the
   fully blurred image's score ``p_b = s_c(Φ(x0; 0))``:

       p' = (p - p_b) / (p0 - p_b)

   so 1 means untouched and 0 means as suppressed as blurring everything (the
   paper's footnote prints the numerator as ``p - p0``; that is a typo: with it
   the untouched image would score 0). Where ``p0 <= p_b`` blurring does not
   suppress the class at all and ``p'`` is NaN;
5. for each suppression level ``s`` in {80, 90, 95, 99 %} report the smallest
   box area (fraction of the image) among the thresholds with ``p' <= 1 - s``;
   NaN when no threshold reaches it.

Smaller is better: the method located a region that is both small and
sufficient to delete. :func:`compare_deletion_boxes` runs this for several
methods on the same images and gives the fig. 8 table: per method and level
the mean smallest-box area over the (image, target) pairs that reached the
level, its standard error, and how many pairs reached it. Averages only cover
the pairs that reached a level, so always read them with the counts.

All boxes of one image (every threshold, target and method, plus the original
and the fully blurred image, duplicates removed) go through the network in
one batch unless ``batch_size`` splits it (:mod:`.box_engine`). The box
geometry is :mod:`cnnlens.core.boxes` (re-exported here under the names of
earlier versions) and the result types are :mod:`.box_results`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ..core.boxes import THRESHOLDS, box_areas, normalize_maps, tightest_boxes
from ..core.explanation import Explanation
from .box_engine import score_boxes
from .box_results import BoxComparison, DeletionBoxes, LevelSummary

LEVELS: tuple[float, ...] = (0.8, 0.9, 0.95, 0.99)


def _as_maps(item, x: torch.Tensor | None):
    """``(maps, targets, inputs, method)`` from an Explanation or a ``(maps, targets)`` pair."""
    if isinstance(item, Explanation):
        return item.maps, item.targets, item.inputs, item.method
    if isinstance(item, torch.Tensor):
        return item, None, None, None
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return item[0], item[1], None, None
    raise TypeError(
        "expected an Explanation, a maps tensor or a (maps, targets) pair, "
        f"got {type(item).__name__}"
    )


def deletion_boxes(
    model,
    x: torch.Tensor | None,
    maps,
    target=None,
    *,
    thresholds: Sequence[float] = THRESHOLDS,
    levels: Sequence[float] = LEVELS,
    sigma: float = 10.0,
    score: str = "prob",
    batch_size: int | None = None,
) -> DeletionBoxes:
    """Smallest deleting boxes of saliency maps (sec. 5.3 of Fong & Vedaldi 2017).

    Args:
        model: a :class:`LoadedModel` or a bare ``nn.Module``.
        x: ``(N, 3, H, W)`` normalised images the maps explain; may be None when
            ``maps`` is an :class:`Explanation` that kept its inputs.
        maps: an :class:`Explanation` or a ``(N, T, H, W)`` tensor of saliency
            maps (larger = more salient; other sizes are resized bilinearly).
        target: the maps' classes, ``(N, T)`` or any :mod:`cnnlens.core.targets`
            specification; taken from the Explanation when one is given.
        thresholds: the values ``h`` (default 0, 0.1, ..., 1).
        levels: suppression levels (default 0.8, 0.9, 0.95, 0.99).
        sigma: ``σ0`` of the blur in pixels.
        score: ``"prob"`` (default), ``"logit"`` or ``"logprob"``.
        batch_size: images per forward pass (default: all boxes of one image at once).

    Returns:
        A :class:`DeletionBoxes`, tensors on ``x``'s device.
    """
    m, t, inputs, method = _as_maps(maps, x)
    x = _inputs(x, [inputs])
    if t is None:
        t = target
    res = score_boxes(
        model,
        x,
        [(m, t)],
        thresholds=thresholds,
        levels=levels,
        sigma=sigma,
        score=score,
        batch_size=batch_size,
    )[0]
    res.method = method
    return res


def _inputs(x: torch.Tensor | None, inputs: list[torch.Tensor | None]) -> torch.Tensor:
    known = [t for t in inputs if t is not None]
    if x is None:
        if not known:
            raise ValueError("pass the images x: the maps do not carry their inputs")
        x = known[0]
    for t in known:
        if t is not x and (t.shape != x.shape or not torch.equal(t.to(x.device), x)):
            raise ValueError(
                "the explanations were computed on different images: compare methods on "
                "the same batch x"
            )
    return x


def compare_deletion_boxes(
    model,
    explanations: Sequence[Explanation] | Mapping[str, object],
    x: torch.Tensor | None = None,
    *,
    thresholds: Sequence[float] = THRESHOLDS,
    levels: Sequence[float] = LEVELS,
    sigma: float = 10.0,
    score: str = "prob",
    batch_size: int | None = None,
) -> BoxComparison:
    """Fig. 8 of Fong & Vedaldi 2017: smallest deleting boxes of several methods.

    Args:
        model: a :class:`LoadedModel` or a bare ``nn.Module``.
        explanations: :class:`Explanation` objects of the same images (named by
            their method; repeats get ``-2``, ``-3``), or a mapping from a name to
            an Explanation, a maps tensor or a ``(maps, targets)`` pair.
        x: the images; optional when the explanations kept their inputs.
        thresholds, levels, sigma, score, batch_size: as in :func:`deletion_boxes`.

    Returns:
        A :class:`BoxComparison`: ``results[name]`` per method, ``rows[name]``
        the per-level summaries, ``format()`` a text table, ``svg()`` a chart.
    """
    if isinstance(explanations, Mapping):
        named = list(explanations.items())
    else:
        named, seen = [], set()
        for e in explanations:
            base = e.method if isinstance(e, Explanation) else "maps"
            key, c = base, 2
            while key in seen:
                key, c = f"{base}-{c}", c + 1
            seen.add(key)
            named.append((key, e))
    if not named:
        raise ValueError("nothing to compare: pass at least one explanation")
    parsed = [_as_maps(item, x) for _, item in named]
    x = _inputs(x, [p[2] for p in parsed])
    items = []
    for name, (m, t, _, _) in zip((k for k, _ in named), parsed):
        if t is None:
            raise ValueError(f"{name}: pass (maps, targets) so the classes are known")
        items.append((m, t))
    results = score_boxes(
        model,
        x,
        items,
        thresholds=thresholds,
        levels=levels,
        sigma=sigma,
        score=score,
        batch_size=batch_size,
    )
    for (name, _), (_, _, _, method), r in zip(named, parsed, results):
        r.method = method or name
    return BoxComparison(
        results={name: r for (name, _), r in zip(named, results)},
        levels=tuple(float(v) for v in levels),
        size=tuple(x.shape[-2:]),
    )


__all__ = [
    "LEVELS",
    "THRESHOLDS",
    "BoxComparison",
    "DeletionBoxes",
    "LevelSummary",
    "box_areas",
    "compare_deletion_boxes",
    "deletion_boxes",
    "normalize_maps",
    "tightest_boxes",
]
