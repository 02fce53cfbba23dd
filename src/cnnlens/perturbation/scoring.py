"""Scoring the images a mask optimiser makes: the engine both mask-learning methods share.

Meaningful perturbation (:mod:`.game`) and extremal perturbations
(:mod:`.extremal`) optimise one mask per row of a :class:`MaskRows` (an image,
target and area). Every step edits the images with the current masks,
``Φ(x; m)`` (:class:`.operators.Perturbation`), and reads the rows' target
scores from the prepared model (:class:`cnnlens.core.batching.FastNet`), summed
over the classes of a row (one class, or all targets of a joint mask):

    s(row) = Σ_{c in classes(row)} f_c(Φ(x_owner(row); m_row))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.batching import FastNet, MaskRows
from .operators import Perturbation

Rows = slice | torch.Tensor


@dataclass(frozen=True)
class MaskScorer:
    """Edits and scores for the masks of :class:`MaskRows`, one batch of rows at a time.

    Attributes:
        fast: the prepared model.
        op: the perturbation ``Φ``, built on the ``N`` images (``per_image=True``:
            rows share their image's operator, noise included) or on the ``B`` rows.
        rows: the mask rows (owner image and classes of each mask).
        score: ``"logit"``, ``"prob"`` or ``"logprob"``.
        per_image: whether ``op`` holds one entry per image rather than per row.
    """

    fast: FastNet
    op: Perturbation
    rows: MaskRows
    score: str
    per_image: bool = True

    def edit(
        self, masks: torch.Tensor, rows: Rows, shift: tuple[int, int] = (0, 0)
    ) -> torch.Tensor:
        """``Φ(x; m)`` ``(b, C, H, W)`` for ``masks (b, 1, H, W)`` of the mask rows ``rows``.

        Args:
            masks: image-size keep-masks (1 = keep).
            rows: a slice or index tensor of mask rows.
            shift: jitter ``(dy, dx)`` of the image content, in pixels.
        """
        idx = self.rows.owner[rows] if self.per_image else rows
        return self.op.rows(idx)(masks, shift)

    def of_images(self, images: torch.Tensor, rows: Rows) -> torch.Tensor:
        """Summed target scores ``(b,)`` of ``images (b, C, H, W)`` for the mask rows ``rows``."""
        return self.fast.scores(images, self.rows.classes[rows], self.score).sum(1)

    def __call__(
        self, masks: torch.Tensor, rows: Rows, shift: tuple[int, int] = (0, 0)
    ) -> torch.Tensor:
        """Summed target scores ``(b,)`` of the images ``masks (b, 1, H, W)`` make."""
        return self.of_images(self.edit(masks, rows, shift), rows)


__all__ = ["MaskScorer"]
