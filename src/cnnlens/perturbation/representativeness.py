"""Deletion-region representativeness: do simplified learned masks still delete the class?

Fong & Vedaldi ("Interpretable Explanations of Black Boxes by Meaningful
Perturbation", ICCV 2017, sec. 5.2 and fig. 7) test that a learned deletion
mask found a region that matters, rather than a pattern co-adapted to the
network's artefacts or to the one perturbation it was trained with. They
simplify each mask into a family of binary masks and apply those with all
three perturbations:

1. deletion map ``d = 1 - m`` (``m`` the learned keep-mask, 1 = keep);
2. smooth it further, ``d_s = g_σ * d`` (Gaussian of ``smooth`` pixels; the
   paper does not give its width, the default here is 10 px, about 4.5 % of a
   224 px side, enough to wipe out the fine structure an artefact needs);
3. for each ``α`` in {0, 0.05, ..., 0.95} delete the pixels with
   ``d_s(u) > 1 - α``: equivalently, the smoothed keep-mask ``1 - d_s`` is
   below ``α``. At ``α = 0`` nothing is deleted; as ``α`` grows the deleted
   region grows outwards from the mask's core (the paper notes that
   ``α`` in [0.2, 0.6] tends to cover the salient part);
4. apply each binary mask ``b_α`` with blur, constant and noise,
   ``Φ(x0; b_α) = b_α x0 + (1 - b_α) Φ(x0; 0)``, and normalise the target
   score as in sec. 5.3, ``(p - p_b) / (p0 - p_b)`` with ``p_b`` the score of
   the image perturbed everywhere by the same operator (NaN where that does
   not lower the score).

The curve of the mean normalised score against ``α`` per perturbation is
fig. 7 (bottom): if it falls quickly for all three operators, the learned
masks generalise beyond the exact mask and operator they were trained with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..core import progress
from ..core.batching import FastNet
from ..core.explanation import Explanation
from ..core.hooks import preserved
from ..core.masks import MaskResult
from ..core.tensors import (
    check_batch_size,
    check_score,
    gaussian_blur,
    target_scores,
    upsample,
)
from ..models.base import LoadedModel
from .editing import class_scores, composite, fully_perturbed, normalized_score, targets_of
from .operators import PERTURBATIONS, check_perturbation

ALPHAS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(20))
SMOOTH = 10.0


def simplified_masks(
    masks: torch.Tensor, alphas: Sequence[float] = ALPHAS, smooth: float = SMOOTH
) -> torch.Tensor:
    """Binary keep-masks from learned keep-masks: ``(..., H, W)`` -> ``(..., A, H, W)``.

    A pixel is deleted (0) where the deletion map ``1 - m`` smoothed by a
    Gaussian of ``smooth`` pixels exceeds ``1 - α``; kept (1) elsewhere.
    """
    shape = masks.shape
    if masks.dim() < 2:
        raise ValueError(f"masks must be (..., H, W), got shape {tuple(shape)}")
    d = 1 - masks.detach().float().reshape(-1, 1, *shape[-2:])
    d = gaussian_blur(d, smooth).clamp(0, 1) if smooth > 0 else d
    d = d.reshape(*shape[:-2], 1, *shape[-2:])
    a = torch.as_tensor(alphas, dtype=d.dtype, device=d.device).view(-1, 1, 1)
    return (d <= 1 - a).float()


@dataclass
class Representativeness:
    """Normalised scores of simplified binary masks against ``α``, per perturbation.

    Shapes: N images, T targets, A thresholds.

    Attributes:
        alphas: ``(A,)``.
        perturbations: the operators applied.
        targets: ``(N, T)``.
        normalized: ``{kind: (N, T, A)}`` ``(p - p_b) / (p0 - p_b)``.
        scores: ``{kind: (N, T, A)}`` raw target scores ``p``.
        p0: ``(N, T)`` scores of the original images.
        pb: ``{kind: (N, T)}`` scores of the fully perturbed images.
        deleted: ``(N, T, A)`` fraction of the image each binary mask deletes.
        smooth: σ of the extra smoothing, in pixels.
    """

    alphas: torch.Tensor
    perturbations: tuple[str, ...]
    targets: torch.Tensor
    normalized: dict[str, torch.Tensor]
    scores: dict[str, torch.Tensor]
    p0: torch.Tensor
    pb: dict[str, torch.Tensor]
    deleted: torch.Tensor
    smooth: float

    @property
    def mean(self) -> dict[str, torch.Tensor]:
        """``{kind: (A,)}``: mean normalised score over images and targets (NaNs left out)."""
        return {k: v.flatten(0, 1).nanmean(0) for k, v in self.normalized.items()}

    @property
    def counted(self) -> dict[str, int]:
        """``{kind: pairs}``: (image, target) pairs with a defined normalised score."""
        return {k: int((~torch.isnan(v[..., 0])).sum()) for k, v in self.normalized.items()}

    def svg(self, title: str = "Simplified-mask deletion", **kwargs) -> str:
        """Fig. 7 (bottom): mean normalised score against ``α``, one line per perturbation."""
        from ..report.charts import line_chart

        return line_chart(
            {k: v.tolist() for k, v in self.mean.items()},
            x=self.alphas.tolist(),
            title=title,
            xlabel="α (threshold of the smoothed mask)",
            ylabel="mean normalised score",
            **kwargs,
        )


def _masks_and_targets(masks, target, x):
    """Keep-masks ``(N, T, H, W)``, their targets and the images from an Explanation or tensors."""
    if isinstance(masks, Explanation):
        m = MaskResult.of(masks).mask[:, :, 0]  # the first area of each target
        return m, masks.targets, (x if x is not None else masks.inputs)
    return masks, target, x


def representativeness(
    model,
    x: torch.Tensor | None,
    masks,
    target=None,
    *,
    alphas: Sequence[float] = ALPHAS,
    smooth: float = SMOOTH,
    perturbations: Sequence[str] = PERTURBATIONS,
    sigma: float = 10.0,
    noise_std: float = 1.0,
    seed: int = 0,
    score: str = "prob",
    batch_size: int | None = None,
) -> Representativeness:
    """Sec. 5.2 of Fong & Vedaldi 2017: simplified learned masks under every perturbation.

    Args:
        model: a :class:`LoadedModel` or a bare ``nn.Module``.
        x: ``(N, 3, H, W)`` normalised images (None: take them from the Explanation).
        masks: learned keep-masks ``(N, 1, H, W)`` or ``(N, T, H, W)`` in [0, 1]
            (1 = keep; other sizes are resized bilinearly), or the Explanation of a
            mask-learning method (``meaningful_perturbation``, or ``extremal``: its
            first area), whose :class:`MaskResult` gives the masks and targets.
        target: the masks' classes (:mod:`cnnlens.core.targets`); ``None`` = top-1.
        alphas: thresholds (default 0, 0.05, ..., 0.95).
        smooth: σ in pixels of the extra smoothing of ``1 - m`` (0: none).
        perturbations: operators to apply (default all three).
        sigma, noise_std, seed: parameters of the blur and noise operators.
        score: ``"prob"`` (default), ``"logit"`` or ``"logprob"``.
        batch_size: images per forward pass (default: all of one image and operator).

    Returns:
        A :class:`Representativeness` (tensors on ``x``'s device).
    """
    check_score(score)
    check_batch_size(batch_size)
    kinds = tuple(check_perturbation(k) for k in perturbations)
    if not kinds:
        raise ValueError("give at least one perturbation")
    masks, target, x = _masks_and_targets(masks, target, x)
    if x is None:
        raise ValueError("pass the images x")
    if x.dim() != 4:
        raise ValueError(f"x must be (N, 3, H, W), got shape {tuple(x.shape)}")
    model = LoadedModel.wrap(model)
    n, _, h, w = x.shape
    if masks.dim() != 4 or masks.shape[0] != n:
        raise ValueError(f"masks must be (N={n}, T, H, W), got shape {tuple(masks.shape)}")
    masks = upsample(masks.detach().float().to(x.device), (h, w))
    if float(masks.min()) < -1e-6 or float(masks.max()) > 1 + 1e-6:
        raise ValueError("masks must lie in [0, 1] (1 = keep)")
    a = torch.tensor([float(v) for v in alphas])
    if a.numel() == 0 or bool(((a < 0) | (a > 1)).any()):
        raise ValueError(f"alphas must be values in [0, 1], got {list(alphas)}")
    a_count, t_count = a.numel(), masks.shape[1]

    bases = {k: fully_perturbed(x, k, sigma=sigma, noise_std=noise_std, seed=seed) for k in kinds}
    scores = {k: torch.zeros(n, t_count, a_count) for k in kinds}
    pb = {k: torch.zeros(n, t_count) for k in kinds}
    deleted = torch.zeros(n, t_count, a_count)
    with preserved(model.net), torch.no_grad():
        fast = FastNet.of(model.net, x)
        logits = fast(x).float()
        targets = targets_of(target, logits, masks.shape, "masks")
        p0 = target_scores(logits, targets, score).cpu()
        with progress.task("representativeness", n * len(kinds)) as advance:
            for i in range(n):
                binary = simplified_masks(masks[i], a.tolist(), smooth)  # (T, A, H, W)
                deleted[i] = 1 - binary.mean((-2, -1)).cpu()
                flat = binary.reshape(t_count * a_count, 1, h, w)
                # all-zero (fully perturbed) first, then the distinct binary masks
                stacked = torch.cat([torch.zeros_like(flat[:1]), flat])
                uniq, inverse = torch.unique(stacked.flatten(1), dim=0, return_inverse=True)
                uniq = uniq.view(-1, 1, h, w)
                t_i = targets[i].cpu()
                for k in kinds:
                    edits = composite(x[i : i + 1], bases[k][i : i + 1], uniq)
                    probs = class_scores(fast, edits, score, batch_size)
                    rows = probs[inverse.cpu()]  # (1 + T*A, C)
                    pb[k][i] = rows[0, t_i]
                    body = rows[1:].view(t_count, a_count, -1)
                    scores[k][i] = body.gather(2, t_i.view(-1, 1, 1).expand(-1, a_count, 1))[..., 0]
                    advance(1)

    dev = x.device
    normalized = {
        k: normalized_score(scores[k], p0[..., None], pb[k][..., None]).to(dev) for k in kinds
    }
    return Representativeness(
        alphas=a.to(dev),
        perturbations=kinds,
        targets=targets.clone(),
        normalized=normalized,
        scores={k: v.to(dev) for k, v in scores.items()},
        p0=p0.to(dev),
        pb={k: v.to(dev) for k, v in pb.items()},
        deleted=deleted.to(dev),
        smooth=float(smooth),
    )


__all__ = ["ALPHAS", "SMOOTH", "Representativeness", "representativeness", "simplified_masks"]
