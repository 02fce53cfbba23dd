"""Label recovery: does deleting the learned region of an adversarial image undo the attack?

Fong & Vedaldi ("Interpretable Explanations of Black Boxes by Meaningful
Perturbation", ICCV 2017, sec. 5.5) observe that the mask learned on an
adversarial image, for its adversarial class, marks where the attack put its
evidence. Apply that mask (for the adversarial top-1 class) back to the image,
i.e. blur away the region that carries the adversarial evidence, and check
whether the clean image's top-1 label returns as top-1 (40.64 % in the paper)
or within the top 5 (100 %). Masks come as tensors or straight from the
explanation of either mask-learning method (:class:`cnnlens.core.masks.MaskResult`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core.batching import batch_size_for, chunks
from ..core.explanation import Explanation
from ..core.hooks import preserved
from ..core.masks import MaskResult
from ..core.tensors import check_batch_size
from ..models.base import LoadedModel
from .operators import Perturbation, check_perturbation


@dataclass
class LabelRecovery:
    """Does deleting the learned region of an adversarial image bring back the clean label?

    Shapes: N images, k = ``top_k``. All label tensors hold class indices.

    Attributes:
        clean_labels: ``(N,)`` top-1 class of each clean image.
        adversarial_labels: ``(N,)`` top-1 class of each adversarial image.
        masked_topk: ``(N, k)`` top-k classes of the masked adversarial images.
        adversarial_topk: ``(N, k)`` top-k classes of the adversarial images as they are.
        perturbed_topk: ``(N, k)`` top-k classes of the adversarial images
            perturbed everywhere (blurred, by default: a control, does the
            perturbation alone undo the attack?).
        attack_success: ``(N,)`` the attack changed the top-1 class.
    """

    clean_labels: torch.Tensor
    adversarial_labels: torch.Tensor
    masked_topk: torch.Tensor
    adversarial_topk: torch.Tensor
    perturbed_topk: torch.Tensor
    attack_success: torch.Tensor

    @staticmethod
    def _hits(topk: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        top1 = topk[:, 0] == labels
        topk_hit = (topk == labels[:, None]).any(1)
        return top1, topk_hit

    def rates(self, only_successful: bool = True) -> dict:
        """Fractions of images whose clean top-1 label is top-1 / in the top k.

        ``masked``: after applying the learned mask to the adversarial image (the
        paper's "mask + adversarial"); ``adversarial``: the adversarial image
        itself; ``perturbed``: the adversarial image perturbed (blurred) everywhere. With
        ``only_successful`` (default) only images whose attack changed the
        top-1 class count, as a failed attack recovers trivially.
        ``masked_still_adversarial``: the mask left the adversarial class on top.
        """
        keep = self.attack_success if only_successful else torch.ones_like(self.attack_success)
        n = int(keep.sum())
        out: dict = {"n": n, "k": int(self.masked_topk.shape[1])}
        for name, topk in (
            ("masked", self.masked_topk),
            ("adversarial", self.adversarial_topk),
            ("perturbed", self.perturbed_topk),
        ):
            t1, tk = self._hits(topk, self.clean_labels)
            out[f"{name}_top1"] = float(t1[keep].float().mean()) if n else math.nan
            out[f"{name}_topk"] = float(tk[keep].float().mean()) if n else math.nan
        still = self.masked_topk[:, 0] == self.adversarial_labels
        out["masked_still_adversarial"] = float(still[keep].float().mean()) if n else math.nan
        return out

    def to_dict(self) -> dict:
        return {
            "clean_labels": self.clean_labels.tolist(),
            "adversarial_labels": self.adversarial_labels.tolist(),
            "masked_topk": self.masked_topk.tolist(),
            "adversarial_topk": self.adversarial_topk.tolist(),
            "perturbed_topk": self.perturbed_topk.tolist(),
            "attack_success": self.attack_success.tolist(),
            "attack_success_rate": float(self.attack_success.float().mean()),
            "rates": self.rates(),
            "rates_all_images": self.rates(only_successful=False),
        }


def label_recovery(
    model,
    x_clean: torch.Tensor,
    x_adv: torch.Tensor,
    masks: torch.Tensor | Explanation | MaskResult,
    *,
    perturbation: str = "blur",
    sigma: float = 10.0,
    levels: int = 2,
    top_k: int = 5,
    batch_size: int | None = None,
) -> LabelRecovery:
    """Apply learned keep-masks to adversarial images and compare labels with the clean ones.

    Args:
        model: a :class:`LoadedModel` or a bare ``nn.Module``.
        x_clean, x_adv: ``(N, 3, H, W)`` normalised clean images and their twins.
        masks: keep-masks (1 = keep) learned on ``x_adv`` for its top-1 class:
            ``(N, 1, H, W)`` / ``(N, H, W)`` in [0, 1], or the Explanation (or
            :class:`MaskResult`) of a mask-learning method on ``x_adv``
            (``meaningful_perturbation`` or ``extremal``): its keep-masks of the first
            target and the first area.
        perturbation, sigma, levels: the operator ``Φ(x_adv; m)`` (default the
            paper's blur with σ0 = 10 px, blended as the method's default).
        top_k: k of the top-k comparison (5 in the paper).
        batch_size: images per forward pass (default: memory-aware).

    Returns:
        A :class:`LabelRecovery`; ``.rates()`` gives the paper's numbers.
    """
    check_batch_size(batch_size)
    check_perturbation(perturbation)
    if isinstance(masks, (Explanation, MaskResult)):
        masks = MaskResult.of(masks).mask[:, :1, 0]
    model = LoadedModel.wrap(model)
    if x_clean.shape != x_adv.shape or x_clean.dim() != 4:
        raise ValueError(
            f"x_clean and x_adv must both be (N, 3, H, W), got {tuple(x_clean.shape)} "
            f"and {tuple(x_adv.shape)}"
        )
    if masks.dim() == 3:
        masks = masks.unsqueeze(1)
    n, _, h, w = x_adv.shape
    if masks.dim() != 4 or masks.shape[0] != n or masks.shape[1] != 1:
        raise ValueError(f"masks must be (N={n}, 1, H, W), got shape {tuple(masks.shape)}")
    masks = masks.detach().to(device=x_adv.device, dtype=x_adv.dtype)
    if tuple(masks.shape[-2:]) != (h, w):
        masks = F.interpolate(masks, size=(h, w), mode="bilinear", align_corners=False)
    masks = masks.clamp(0, 1)
    parts = chunks(n, batch_size_for(x_adv, batch_size))
    with preserved(model.net), torch.no_grad():
        net = model.net

        def logits(images: torch.Tensor) -> torch.Tensor:
            return torch.cat([net(images[rows]).float() for rows in parts])

        op = Perturbation(x_adv.detach(), perturbation, sigma=sigma, levels=levels)
        clean = logits(x_clean.detach())
        adv = logits(x_adv.detach())
        masked = logits(op(masks))
        whole = logits(op.fully_perturbed())
    k = min(int(top_k), clean.shape[1])
    clean_labels = clean.argmax(1).cpu()
    adv_labels = adv.argmax(1).cpu()
    return LabelRecovery(
        clean_labels=clean_labels,
        adversarial_labels=adv_labels,
        masked_topk=masked.topk(k, dim=1).indices.cpu(),
        adversarial_topk=adv.topk(k, dim=1).indices.cpu(),
        perturbed_topk=whole.topk(k, dim=1).indices.cpu(),
        attack_success=adv_labels != clean_labels,
    )


__all__ = ["LabelRecovery", "label_recovery"]
