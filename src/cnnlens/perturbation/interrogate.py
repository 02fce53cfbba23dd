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

Box checks and masks come from :mod:`cnnlens.core.boxes`, the compositing rule
and the fully perturbed image from :mod:`.editing`; both are re-exported here
under the names of earlier versions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core import progress
from ..core.batching import FastNet, chunks
from ..core.boxes import Box, box_masks, check_box, per_image_boxes
from ..core.hooks import preserved
from ..core.targets import resolve_targets
from ..core.tensors import check_batch_size, check_score, target_scores
from ..models.base import LoadedModel, Preprocess
from .editing import composite, fully_perturbed, normalized_score, score_images
from .operators import check_perturbation


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
    bs = batch_size or n
    with preserved(model.net), torch.no_grad(), progress.task("interrogate", 2) as advance:
        fast = FastNet.plain(model.net)  # two passes: no inference copy
        logits = torch.cat([fast(x[rows]) for rows in chunks(n, bs)]).float()
        targets = resolve_targets(target, n, logits)
        before = target_scores(logits, targets, score)
        advance(1)
        after = score_images(model.net, perturbed, targets, score, bs)
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
