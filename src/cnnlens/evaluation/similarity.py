"""How alike two saliency maps are: Spearman rank correlation and SSIM.

Adebayo et al. ("Sanity Checks for Saliency Maps", NeurIPS 2018, sec. 3)
compare the maps of a trained model with those of a randomised one with:

* the **Spearman rank correlation** of the two maps' pixel values (of the
  signed maps, and of their absolute values, since many methods are read by
  magnitude): the Pearson correlation of the ranks, with tied values given
  their average rank (as ``scipy.stats.spearmanr``). It is NaN when either map
  is constant: a constant map has no ranking to compare;
* the **structural similarity** (SSIM, Wang et al. 2004) of the maps scaled to
  [0, 1] each (min-max; a constant map becomes 0). For local means ``μ``,
  variances ``σ²`` and covariance ``σ_ab`` under an 11 x 11 Gaussian window of
  σ = 1.5 px,

      SSIM = mean over windows of
             (2 μ_a μ_b + C1)(2 σ_ab + C2) / ((μ_a² + μ_b² + C1)(σ_a² + σ_b² + C2)),

  ``C1 = (0.01 L)²``, ``C2 = (0.03 L)²``, ``L = 1``, averaged over the windows
  that lie fully inside the map. This is what
  ``skimage.metrics.structural_similarity(a, b, data_range=1,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`` computes;
  the tests check the two agree.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..core.maps import minmax


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks ``0 .. P-1`` along the last dimension of ``(N, P)``, ties sharing their mean rank."""
    ordered, order = values.sort(dim=1, stable=True)
    p = values.shape[1]
    pos = torch.arange(p, device=values.device).expand_as(order)
    change = ordered[:, 1:] != ordered[:, :-1]
    edge = torch.ones_like(change[:, :1])
    first = torch.where(torch.cat([edge, change], 1), pos, 0).cummax(1).values
    last_flag = torch.cat([change, edge], 1)
    last = torch.where(last_flag, pos, p).flip(1).cummin(1).values.flip(1)
    mean_rank = (first + last).double() / 2
    return torch.empty_like(mean_rank).scatter_(1, order, mean_rank)


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise Pearson correlation of ``(N, P)`` tensors: ``(N,)``, NaN for constant rows."""
    a = a.double() - a.double().mean(1, keepdim=True)
    b = b.double() - b.double().mean(1, keepdim=True)
    den = (a.square().sum(1) * b.square().sum(1)).sqrt()
    r = (a * b).sum(1) / den.clamp_min(1e-300)
    return torch.where(den > 0, r, torch.full_like(r, math.nan))


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each pair of maps ``(N, H, W)``: ``(N,)`` float."""
    if a.shape != b.shape:
        raise ValueError(f"maps differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    fa, fb = a.detach().flatten(1), b.detach().flatten(1)
    return pearson(average_ranks(fa), average_ranks(fb)).float()


def gaussian_window(size: int = 11, sigma: float = 1.5, device=None) -> torch.Tensor:
    """Normalised 2-D Gaussian window ``(size, size)`` in float64."""
    c = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-(c**2) / (2 * sigma**2))
    g = g / g.sum()
    return g.view(-1, 1) * g.view(1, -1)


def ssim(
    a: torch.Tensor,
    b: torch.Tensor,
    window: int = 11,
    sigma: float = 1.5,
    data_range: float = 1.0,
    normalize: bool = True,
) -> torch.Tensor:
    """Mean SSIM of each pair of maps ``(N, H, W)``: ``(N,)`` float.

    Args:
        a, b: maps of equal shape.
        window, sigma: the Gaussian window (11, 1.5 as Wang et al.).
        data_range: ``L`` of the constants (1 for maps in [0, 1]).
        normalize: min-max scale each map to [0, 1] first (as the sanity checks do).
    """
    if a.shape != b.shape or a.dim() != 3:
        raise ValueError(
            f"need two (N, H, W) maps of one shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if min(a.shape[-2:]) < window:
        raise ValueError(f"maps of {tuple(a.shape[-2:])} px are smaller than the {window}px window")
    if normalize:
        a, b = minmax(a), minmax(b)
    a = a.detach().double().unsqueeze(1)
    b = b.detach().double().unsqueeze(1)
    k = gaussian_window(window, sigma, a.device).view(1, 1, window, window)

    def local(t):
        return F.conv2d(t, k)

    mu_a, mu_b = local(a), local(b)
    var_a = local(a * a) - mu_a**2
    var_b = local(b * b) - mu_b**2
    cov = local(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    s = num / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1).float()


__all__ = ["average_ranks", "gaussian_window", "pearson", "spearman", "ssim"]
