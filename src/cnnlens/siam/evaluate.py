"""How good and how interpretable a SIAM model is, against known ground truth.

* Task: ``R^2 = 1 - sum (y - y_hat)^2 / sum (y - mean y)^2`` (regression) or accuracy.
* Attribute presence: ROC AUC of the average-pooled map ``g_k`` against the
  image-level labels, per attribute, and their mean.
* Localisation: the pointing game of Zhang et al. (2016) played per attribute.
  For every image and every attribute present in it, the attribute's map
  (upsampled bilinearly to the image) points at its maximum; the point is a hit
  when it lies within ``tolerance`` pixels (15 px at 224 px, scaled to the image
  size) of that attribute's pixel mask (:func:`cnnlens.evaluation.pointing.pointing_hits`).
  The score is hits over all (image, present attribute) pairs.
* Weights: the effective linear weight of attribute ``k`` (``W_k``, or
  ``sum_t W_kt mean(tau_kt)`` with templates: the output change per unit of a
  uniform map) is compared with the true coefficient ``c_k``: its sign must match
  wherever ``|c_k|`` exceeds the noise level, and the Spearman rank correlation
  of all weights with all coefficients is reported.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..core.hooks import preserved
from ..core.optional import require
from ..evaluation.pointing import pointing_hits
from .model import SiamModel
from .train import SiamData, images_to_input


@torch.no_grad()
def predict(model: SiamModel, data: SiamData, batch_size: int = 128) -> dict[str, torch.Tensor]:
    """``output (N, O)``, ``presence (N, K)``, ``maps (N, K, h, w)``, ``contributions (N, O, K)``.

    Runs in eval mode; the model's training flags are restored afterwards.
    """
    parts: dict[str, list[torch.Tensor]] = {}
    with preserved(model, freeze=False):
        for i in range(0, len(data), batch_size):
            x = data.inputs[i : i + batch_size]
            device = next(model.head.parameters()).device
            feats = model.trunk(images_to_input(model, x)) if data.are_images else x.to(device)
            out = model.head(feats)
            for key in ("output", "presence", "maps", "contributions"):
                parts.setdefault(key, []).append(getattr(out, key).cpu())
    return {k: torch.cat(v) for k, v in parts.items()}


def r2_score(y: torch.Tensor, y_hat: torch.Tensor) -> float:
    """Coefficient of determination of predictions ``y_hat`` for targets ``y``."""
    y, y_hat = y.double(), y_hat.double()
    return float(1.0 - ((y - y_hat) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def attribute_auc(scores: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """Per-attribute ROC AUC (NaN where only one class occurs) of ``(N, K)`` scores."""
    roc_auc_score = require("sklearn.metrics", "AUC (cnnlens siam evaluate)").roc_auc_score

    result = []
    for k in range(scores.shape[1]):
        lab = labels[:, k].numpy()
        known = ~np.isnan(lab)
        lab = lab[known] >= 0.5
        if lab.all() or not lab.any():
            result.append(float("nan"))
        else:
            result.append(float(roc_auc_score(lab, scores[:, k].numpy()[known])))
    return result


def attribute_pointing(
    maps: torch.Tensor,
    masks: np.ndarray | torch.Tensor,
    present: torch.Tensor,
    tolerance: float = 15.0,
    reference_size: int | None = 224,
) -> tuple[float, int, list[float]]:
    """Pointing game of attribute maps (module docstring).

    Args:
        maps: ``(N, K, h, w)`` attribute maps.
        masks: ``(N, K, H, W)`` bool attribute masks at image resolution.
        present: ``(N, K)`` presence labels; only present attributes are scored.

    Returns:
        ``(accuracy, pairs scored, per-attribute accuracy)``.
    """
    masks = torch.as_tensor(masks)
    size = masks.shape[-2:]
    hits_all, per_attr = 0, []
    n_all = 0
    for k in range(maps.shape[1]):
        sel = (present[:, k] >= 0.5) & masks[:, k].flatten(1).any(1)
        if not sel.any():
            per_attr.append(float("nan"))
            continue
        up = F.interpolate(maps[sel, k : k + 1].float(), size=size, mode="bilinear")[:, 0]
        hits, valid = pointing_hits(up, masks[sel, k], tolerance, reference_size)
        h, n = int(hits[valid].sum()), int(valid.sum())
        hits_all, n_all = hits_all + h, n_all + n
        per_attr.append(h / n if n else float("nan"))
    return (hits_all / n_all if n_all else float("nan")), n_all, per_attr


def effective_weights(model: SiamModel, output: int = 0) -> torch.Tensor:
    """``(K,)`` output change per unit of a uniform attribute map.

    The head's :meth:`~cnnlens.siam.head.SiamHead.effective_weights`, kept here by name.
    """
    return model.head.effective_weights(output)


@dataclass
class SiamScores:
    """The acceptance numbers of a SIAM model on data with ground truth."""

    r2: float
    auc: float
    auc_per_attribute: dict[str, float]
    pointing: float
    pointing_pairs: int
    pointing_per_attribute: dict[str, float]
    weights: dict[str, float]
    true_coefficients: dict[str, float]
    signs_recovered: bool
    spearman: float
    noise: float

    def to_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        wrong = [
            k
            for k, c in self.true_coefficients.items()
            if abs(c) > self.noise and np.sign(c) != np.sign(self.weights[k])
        ]
        return [
            f"task R2            {self.r2:.4f}",
            f"attribute AUC      {self.auc:.4f} (mean of {len(self.auc_per_attribute)})",
            f"pointing game      {self.pointing:.4f} ({self.pointing_pairs} image-attribute pairs)",
            "signs recovered    "
            + ("yes" if self.signs_recovered else f"no ({', '.join(wrong)})")
            + f" (|c| > noise {self.noise})",
            f"weights Spearman   {self.spearman:.4f}",
        ]


def weight_recovery(weights, true, noise: float) -> tuple[bool, float]:
    """(signs of all ``|c| > noise`` match, Spearman rank correlation)."""
    from scipy.stats import spearmanr

    w, c = np.asarray(weights, float), np.asarray(true, float)
    big = np.abs(c) > noise
    signs = bool(np.all(np.sign(w[big]) == np.sign(c[big])))
    return signs, float(spearmanr(w, c).statistic)


def evaluate_scenic(model: SiamModel, data: SiamData, scenes, noise: float) -> SiamScores:
    """All acceptance numbers on synthetic scenes (:mod:`cnnlens.datasets.scenic`).

    Args:
        model: a trained regression :class:`SiamModel` whose attributes are the scenes'.
        data: the scenes as model inputs (images or cached features), with labels.
        scenes: the :class:`~cnnlens.datasets.scenic.ScenicData` (masks, truth).
        noise: the generator's noise level.
    """
    from ..datasets.scenic import true_coefficients

    pred = predict(model, data)
    names = list(model.config.attributes)
    truth = true_coefficients()
    y = torch.as_tensor(scenes.target)
    present = torch.as_tensor(scenes.present)
    aucs = attribute_auc(pred["presence"], present)
    point, pairs, per = attribute_pointing(pred["maps"], scenes.masks(), present)
    w = effective_weights(model).tolist()
    c = [truth[n] for n in names]
    signs, rho = weight_recovery(w, c, noise)
    return SiamScores(
        r2=r2_score(y, pred["output"][:, 0]),
        auc=float(np.nanmean(aucs)),
        auc_per_attribute=dict(zip(names, aucs)),
        pointing=point,
        pointing_pairs=pairs,
        pointing_per_attribute=dict(zip(names, per)),
        weights=dict(zip(names, w)),
        true_coefficients=dict(zip(names, c)),
        signs_recovered=signs,
        spearman=rho,
        noise=noise,
    )
