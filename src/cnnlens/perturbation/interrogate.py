"""Box interrogation: what happens to a class score when one chosen box is perturbed.

Fong & Vedaldi ("Interpretable Explanations of Black Boxes by Meaningful
Perturbation", ICCV 2017, sec. 5.1 and fig. 6) check a saliency explanation by
editing the image directly: pick a box ``B`` (from a heat map, from the learned
mask, or out of curiosity), delete it with one of the perturbations of sec. 4.1
and read the target score before and after,

    s_c(x0)  ->  s_c(Φ(x0; m_B)),    m_B(u) = 0 for u in B, 1 elsewhere.

A score that collapses says the box holds evidence the network needs; a score
that stays put (or rises: the paper's truck goes from 0.717 to 0.850 when its
bumper is blurred) says it does not. With a binary mask the three operators of
:mod:`.operators` reduce to pasting the fully perturbed image inside the box,
``Φ(x0; m_B) = m_B x0 + (1 - m_B) Φ(x0; 0)``: the mean colour, Gaussian noise,
or the image blurred with ``σ0`` (pixels inside the box are blurred from their
neighbourhood, which reaches outside the box, as the paper's operator does).

Boxes are ``(x0, y0, x1, y1)`` in pixels of the model input, end exclusive
(``x1 - x0`` columns wide). :func:`box_to_input` maps a box given in pixels of
the original photograph through the model's resize and centre crop
(:class:`cnnlens.models.base.Preprocess`); the part of a box outside the crop is
cut off and flagged, and a box that misses the crop entirely is refused.

This module also holds the small helpers the other analyses of the paper share:
binary box masks, batched scoring of perturbed images, and the compositing rule
above.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..core import progress
from ..core.hooks import preserved
from ..core.targets import resolve_targets
from ..core.tensors import check_batch_size, check_score, gather_scores, to_scores
from ..models.base import LoadedModel, Preprocess
from .operators import Perturbation, check_perturbation

Box = tuple[int, int, int, int]


# ----------------------------------------------------------------------------- boxes


def check_box(box, size: tuple[int, int], what: str = "box") -> Box:
    """Validate ``box = (x0, y0, x1, y1)`` (integers, end exclusive) against ``size = (H, W)``.

    Raises:
        ValueError: not four integers, empty, reversed or reaching outside the image;
            the message says which rule failed and the allowed range.
    """
    if hasattr(box, "tolist"):  # a tensor or a NumPy array
        box = box.tolist()
    if isinstance(box, (str, bytes)) or not isinstance(box, Sequence) or len(box) != 4:
        raise ValueError(f"{what} must be four numbers (x0, y0, x1, y1), got {box!r}")
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in box):
        ok = all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) and float(v).is_integer()
            for v in box
        )
        if ok:
            box = [int(v) for v in box]
        else:
            raise ValueError(f"{what} must hold integer pixel coordinates, got {box!r}")
    x0, y0, x1, y1 = box
    h, w = size
    if x1 <= x0 or y1 <= y0:
        raise ValueError(
            f"{what} {tuple(box)} is empty or reversed: need x0 < x1 and y0 < y1 "
            "(corners (x0, y0) top-left and (x1, y1) bottom-right, end exclusive)"
        )
    if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
        raise ValueError(
            f"{what} {tuple(box)} reaches outside the {w}x{h} image: need 0 <= x0 < x1 <= {w} "
            f"and 0 <= y0 < y1 <= {h}"
        )
    return (int(x0), int(y0), int(x1), int(y1))


def per_image_boxes(box, n: int, size: tuple[int, int]) -> torch.Tensor:
    """One box for every image, or one per image, as an ``(N, 4)`` long tensor (validated)."""
    if hasattr(box, "tolist"):  # a tensor or a NumPy array
        box = box.tolist()
    nested = (
        isinstance(box, Sequence)
        and not isinstance(box, (str, bytes))
        and len(box) > 0
        and isinstance(box[0], (Sequence, torch.Tensor))
        and not isinstance(box[0], (str, bytes))
    )
    if nested:
        if len(box) != n:
            raise ValueError(f"got {len(box)} boxes for {n} images: pass one box or one per image")
        boxes = [check_box(b, size, f"box {i}") for i, b in enumerate(box)]
    else:
        boxes = [check_box(box, size)] * n
    return torch.tensor(boxes, dtype=torch.long).view(n, 4)


def box_masks(boxes: torch.Tensor, size: tuple[int, int], device=None) -> torch.Tensor:
    """``(K, 1, H, W)`` keep-masks: 0 inside each box ``(x0, y0, x1, y1)``, 1 elsewhere.

    A box with ``x1 <= x0`` or ``y1 <= y0`` is empty and gives an all-ones mask.
    """
    h, w = size
    boxes = boxes.to(device=device, dtype=torch.long).view(-1, 4)
    ys = torch.arange(h, device=device).view(1, h, 1)
    xs = torch.arange(w, device=device).view(1, 1, w)
    x0, y0, x1, y1 = (boxes[:, i].view(-1, 1, 1) for i in range(4))
    inside = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
    return (~inside).float().unsqueeze(1)


def composite(x: torch.Tensor, base: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``m x + (1 - m) base``: ``Φ(x; m)`` for binary masks (``x``, ``base`` broadcast)."""
    return masks * x + (1 - masks) * base


def fully_perturbed(
    x: torch.Tensor,
    kind: str,
    *,
    sigma: float = 10.0,
    noise_std: float = 1.0,
    seed: int = 0,
) -> torch.Tensor:
    """``Φ(x; 0)`` for every image of ``x``: blurred with ``σ0``, the mean colour or noise.

    Binary masks only ever pick level 0 (the image) or the last level (``σ0``) of
    the blur stack, so two levels are enough and the result equals
    ``Perturbation(x, kind)(m)`` at any number of levels.
    """
    return Perturbation(
        x, kind, sigma=sigma, levels=2, noise_std=noise_std, seed=seed
    ).fully_perturbed()


@dataclass(frozen=True)
class MappedBox:
    """A box mapped from photo pixels to model-input pixels.

    ``box`` is in input pixels (end exclusive); ``clipped`` says part of the
    requested box fell outside the centre crop and was cut off; ``exact`` is the
    box in input pixels before rounding and clipping (floats).
    """

    box: Box
    clipped: bool
    exact: tuple[float, float, float, float]


def box_to_input(box, image_size: tuple[int, int], spec: Preprocess) -> MappedBox:
    """Map a box in pixels of the original photo to pixels of the model input.

    Args:
        box: ``(x0, y0, x1, y1)`` in photo pixels, end exclusive, inside the photo.
        image_size: the photo's ``(width, height)`` (PIL's ``image.size``).
        spec: the model's preprocessing; the same geometry as
            :meth:`Preprocess.geometry`: resize (whole photo to ``crop x crop``
            when ``spec.resize`` is None, else shorter side to ``spec.resize``),
            then a centre crop of ``spec.crop``.

    Pixel ``i`` covers ``[i, i + 1)``; edges are scaled, shifted by the crop
    offset, rounded to the nearest pixel edge (at least one pixel wide) and
    clipped to the crop.

    Raises:
        ValueError: malformed box, or one that lies entirely outside the crop.
    """
    w, h = image_size
    x0, y0, x1, y1 = check_box(box, (h, w), "box")
    if spec.resize is None:
        nw = nh = spec.crop
        left = top = 0
    else:
        scale = spec.resize / min(w, h)
        nw, nh = max(spec.crop, round(w * scale)), max(spec.crop, round(h * scale))
        left, top = (nw - spec.crop) // 2, (nh - spec.crop) // 2
    sx, sy = nw / w, nh / h
    exact = (x0 * sx - left, y0 * sy - top, x1 * sx - left, y1 * sy - top)
    c = spec.crop
    if exact[2] <= 0 or exact[3] <= 0 or exact[0] >= c or exact[1] >= c:
        raise ValueError(
            f"box {(x0, y0, x1, y1)} lies entirely outside the part of the {w}x{h} photo the "
            f"model sees: the centre crop spans x {left / sx:.0f}..{(left + c) / sx:.0f}, "
            f"y {top / sy:.0f}..{(top + c) / sy:.0f} in photo pixels"
        )
    ex0, ey0, ex1, ey1 = (round(v) for v in exact)
    ex1, ey1 = max(ex1, ex0 + 1), max(ey1, ey0 + 1)
    clipped = ex0 < 0 or ey0 < 0 or ex1 > c or ey1 > c
    b = (max(ex0, 0), max(ey0, 0), min(ex1, c), min(ey1, c))
    if b[2] <= b[0] or b[3] <= b[1]:  # rounding pushed a sliver off the crop
        raise ValueError(f"box {(x0, y0, x1, y1)} covers less than one pixel of the model input")
    return MappedBox(box=b, clipped=clipped, exact=tuple(float(v) for v in exact))


# ----------------------------------------------------------------------------- scoring


def score_images(
    net: torch.nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    score: str,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Scores ``(B, T)`` of ``images (B, 3, H, W)`` for ``targets (B, T)``, in chunks.

    ``batch_size=None`` runs everything in one pass. The caller sets eval mode
    and ``no_grad``.
    """
    bs = batch_size or max(1, images.shape[0])
    parts = []
    for start in range(0, images.shape[0], bs):
        logits = net(images[start : start + bs]).float()
        parts.append(gather_scores(to_scores(logits, score), targets[start : start + bs]))
    return torch.cat(parts) if parts else images.new_zeros(0, targets.shape[1])


def normalized_score(
    p: torch.Tensor, p0: torch.Tensor, pb: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """``(p - p_b) / (p0 - p_b)``: 1 = untouched score, 0 = as low as the fully perturbed image.

    ``p0`` and ``pb`` broadcast against ``p``. Where perturbing the whole image
    does not lower the score (``p0 - p_b <= eps``) the ratio means nothing and
    is NaN.
    """
    den = p0 - pb
    out = (p - pb) / den.clamp_min(eps)
    return torch.where(den > eps, out, torch.full_like(out, math.nan))


# ----------------------------------------------------------------------------- interrogate


@dataclass
class Interrogation:
    """Scores before and after perturbing one box per image.

    Attributes:
        before: ``(N, T)`` target scores of the original images.
        after: ``(N, T)`` target scores of the perturbed images.
        targets: ``(N, T)`` class indices.
        boxes: ``(N, 4)`` boxes ``(x0, y0, x1, y1)`` in input pixels, end exclusive.
        perturbed: ``(N, 3, H, W)`` the perturbed (normalised) inputs.
        masks: ``(N, 1, H, W)`` the keep-masks used (0 inside the box).
        perturbation, score: what was applied and what was measured.
    """

    before: torch.Tensor
    after: torch.Tensor
    targets: torch.Tensor
    boxes: torch.Tensor
    perturbed: torch.Tensor
    masks: torch.Tensor
    perturbation: str
    score: str

    @property
    def change(self) -> torch.Tensor:
        """``after - before`` (negative: the box held evidence for the class)."""
        return self.after - self.before

    def lines(self, model=None, digits: int = 3) -> list[list[str]]:
        """Per image, one ``"label: before → after"`` line per target."""
        label = model.label if isinstance(model, LoadedModel) else (lambda i: f"class_{i}")
        rows = []
        for t_row, b_row, a_row in zip(
            self.targets.tolist(), self.before.tolist(), self.after.tolist()
        ):
            rows.append(
                [
                    f"{label(t)}: {b:.{digits}f} → {a:.{digits}f}"
                    for t, b, a in zip(t_row, b_row, a_row)
                ]
            )
        return rows


def interrogate(
    model,
    x: torch.Tensor,
    box,
    target=None,
    *,
    perturbation: str = "blur",
    score: str = "prob",
    sigma: float = 10.0,
    noise_std: float = 1.0,
    seed: int = 0,
    batch_size: int | None = None,
) -> Interrogation:
    """Perturb a box of each image and report the target scores before and after.

    Args:
        model: a :class:`LoadedModel` or a bare ``nn.Module``.
        x: ``(N, 3, H, W)`` normalised images on the model's device.
        box: ``(x0, y0, x1, y1)`` for every image, or a list of N such boxes, in
            input pixels, end exclusive (see :func:`box_to_input` for photo pixels).
        target: target specification (:mod:`cnnlens.core.targets`); ``None`` = top-1.
        perturbation: ``"blur"``, ``"constant"`` or ``"noise"``.
        score: ``"prob"`` (default), ``"logit"`` or ``"logprob"``.
        sigma: ``σ0`` of the blur, in pixels (10 in the paper).
        noise_std: standard deviation of the noise, in model-input units.
        seed: seeds the noise.
        batch_size: images per forward pass (default: all N at once).

    Returns:
        An :class:`Interrogation` (tensors on ``x``'s device).
    """
    check_perturbation(perturbation)
    check_score(score)
    check_batch_size(batch_size)
    model = LoadedModel.wrap(model)
    if x.dim() != 4:
        raise ValueError(f"x must be (N, 3, H, W), got shape {tuple(x.shape)}")
    if x.device != model.device:
        raise ValueError(f"x is on {x.device} but the model is on {model.device}; move one of them")
    n, _, h, w = x.shape
    boxes = per_image_boxes(box, n, (h, w))
    masks = box_masks(boxes, (h, w), device=x.device)
    base = fully_perturbed(x, perturbation, sigma=sigma, noise_std=noise_std, seed=seed)
    perturbed = composite(x, base, masks)
    with preserved(model.net), torch.no_grad(), progress.task("interrogate", 2) as advance:
        bs = batch_size or n
        logits = torch.cat([model.net(x[s : s + bs]) for s in range(0, n, bs)]).float()
        targets = resolve_targets(target, n, logits)
        before = gather_scores(to_scores(logits, score), targets)
        advance(1)
        after = score_images(model.net, perturbed, targets, score, batch_size)
        advance(1)
    return Interrogation(
        before=before.clone(),
        after=after.clone(),
        targets=targets.clone(),
        boxes=boxes.to(x.device),
        perturbed=perturbed,
        masks=masks,
        perturbation=perturbation,
        score=score,
    )


def side_by_side(
    original: torch.Tensor,
    perturbed: torch.Tensor,
    box: Box,
    caption: str = "",
    gap: int = 6,
):
    """A PIL image: the original with the box outlined in red, then the perturbed image.

    Args:
        original, perturbed: ``(3, H, W)`` display images in [0, 1]
            (``model.display_images(x)[i]``).
        box: ``(x0, y0, x1, y1)`` in their pixels, end exclusive.
        caption: one line of text under the pair (non-ASCII characters are replaced).
    """
    from PIL import Image, ImageDraw, ImageFont

    from ..io import to_pil

    left, right = to_pil(original.detach().cpu()), to_pil(perturbed.detach().cpu())
    w, h = left.size
    strip = 16 if caption else 0
    canvas = Image.new("RGB", (2 * w + gap, h + strip), (255, 255, 255))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (w + gap, 0))
    x0, y0, x1, y1 = box
    width = max(1, round(min(w, h) / 112))
    ImageDraw.Draw(canvas).rectangle((x0, y0, x1 - 1, y1 - 1), outline=(230, 20, 20), width=width)
    if caption:
        text = caption.encode("ascii", "replace").decode("ascii")
        ImageDraw.Draw(canvas).text((4, h + 2), text, fill=(0, 0, 0), font=ImageFont.load_default())
    return canvas


__all__ = [
    "Interrogation",
    "MappedBox",
    "box_masks",
    "box_to_input",
    "check_box",
    "composite",
    "fully_perturbed",
    "interrogate",
    "normalized_score",
    "per_image_boxes",
    "score_images",
    "side_by_side",
]
