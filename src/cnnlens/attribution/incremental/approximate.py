"""Approximate occlusion: adaptive drill-down, and how close an approximate map is.

Krypton (Nakandala, Kumar & Papakonstantinou, SIGMOD 2019) trades exactness for speed
in two ways. *Projective-field thresholding* caps how far a patch's changed band may
grow (``cap`` in :mod:`.regions`). *Adaptive drill-down* spends the fine stride only where
the map is interesting:

1. run the windows at a coarse stride ``S >= s`` (same window size): few positions;
2. estimate every fine window's score drop as the mean of the coarse map over the
   window's pixels;
3. run the top ``fraction`` of fine windows by ``|estimated drop|`` (summed over
   targets) exactly; fine windows that coincide with a coarse window reuse its drop.

The cost is ``n_coarse + fraction * n_fine`` windows instead of ``n_fine``.

Quality against the exact map ``E`` of an approximate map ``A`` is reported as

* Pearson's r over pixels: ``cov(A, E) / (std(A) std(E))``;
* SSIM (Wang et al. 2004) with a uniform 7x7 window, sample covariances and data range
  ``L = max(E) - min(E)``, averaged over all full windows, as scikit-image computes it:
  ``((2 mu_a mu_e + C1)(2 s_ae + C2)) / ((mu_a^2 + mu_e^2 + C1)(s_a^2 + s_e^2 + C2))``
  with ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F


def window_means(maps: torch.Tensor, positions: list[tuple[int, int]], win) -> torch.Tensor:
    """Mean of ``maps (T, H, W)`` over each window: ``(len(positions), T)`` (integral image)."""
    t, h, w = maps.shape
    ii = F.pad(maps.double().cumsum(1).cumsum(2), (1, 0, 1, 0))
    ys = torch.tensor([p[0] for p in positions], device=maps.device)
    xs = torch.tensor([p[1] for p in positions], device=maps.device)
    y1, x1 = ys + win[0], xs + win[1]
    s = ii[:, y1, x1] - ii[:, ys, x1] - ii[:, y1, xs] + ii[:, ys, xs]
    return (s / (win[0] * win[1])).T.to(maps.dtype)


def accumulate(drops: torch.Tensor, positions, win, size) -> torch.Tensor:
    """Occlusion map ``(T, H, W)``: mean of ``drops (P, T)`` over the windows covering a pixel."""
    t = drops.shape[1]
    total = torch.zeros(t, *size, device=drops.device, dtype=drops.dtype)
    count = torch.zeros(1, *size, device=drops.device, dtype=drops.dtype)
    for j, (y, x) in enumerate(positions):
        total[:, y : y + win[0], x : x + win[1]] += drops[j].view(-1, 1, 1)
        count[:, y : y + win[0], x : x + win[1]] += 1
    return total / count.clamp(min=1)


def drilldown(
    run: Callable[[list[tuple[int, int]]], torch.Tensor],
    fine: list[tuple[int, int]],
    coarse: list[tuple[int, int]],
    win: tuple[int, int],
    size: tuple[int, int],
    fraction: float,
) -> tuple[torch.Tensor, int]:
    """Drops ``(len(fine), T)`` by adaptive drill-down, and how many windows were run.

    Args:
        run: positions -> score drops ``(P, T)`` (exact or thresholded).
        fine, coarse: window positions at the fine and the coarse stride.
        win: window size; size: image size ``(H, W)``.
        fraction: share of fine windows recomputed exactly, in ``[0, 1]``.
    """
    coarse_drops = run(coarse)
    estimate = window_means(accumulate(coarse_drops, coarse, win, size), fine, win)
    known = {p: coarse_drops[j] for j, p in enumerate(coarse)}
    drops = estimate.clone()
    for j, p in enumerate(fine):
        if p in known:
            drops[j] = known[p]
    todo = [j for j, p in enumerate(fine) if p not in known]
    k = _drilled(len(fine), len(todo), fraction)
    if k > 0:
        score = estimate[todo].abs().sum(1)
        pick = [todo[i] for i in score.topk(k).indices.tolist()]
        drops[pick] = run([fine[j] for j in pick]).to(drops.dtype)
    return drops, len(coarse) + k


def _drilled(n_fine: int, n_todo: int, fraction: float) -> int:
    return min(n_todo, math.ceil(fraction * n_fine))


def windows_needed(fine: list[tuple[int, int]], coarse: list[tuple[int, int]], fraction) -> int:
    """How many windows :func:`drilldown` runs: the coarse ones plus the drilled fine ones."""
    known = set(coarse)
    return len(coarse) + _drilled(len(fine), sum(p not in known for p in fine), fraction)


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson's r between two maps of equal shape (1.0 when both are constant and equal)."""
    a, b = a.double().flatten(), b.double().flatten()
    a, b = a - a.mean(), b - b.mean()
    den = a.norm() * b.norm()
    if den == 0:
        return 1.0 if torch.equal(a, b) else 0.0
    return float((a @ b) / den)


def ssim(a: torch.Tensor, exact: torch.Tensor, win: int = 7) -> float:
    """Mean SSIM of map ``a`` against ``exact`` (both ``(H, W)``), uniform ``win`` window."""
    x, y = a.double()[None, None], exact.double()[None, None]
    rng = float(y.max() - y.min())
    if rng == 0:
        return 1.0 if torch.equal(x, y) else 0.0
    c1, c2 = (0.01 * rng) ** 2, (0.03 * rng) ** 2
    n = win * win
    mean = lambda t: F.avg_pool2d(t, win, 1)  # noqa: E731
    mx, my = mean(x), mean(y)
    cov = n / (n - 1)
    vx, vy = cov * (mean(x * x) - mx * mx), cov * (mean(y * y) - my * my)
    vxy = cov * (mean(x * y) - mx * my)
    s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s.mean())


def quality(approx: torch.Tensor, exact: torch.Tensor) -> dict[str, float]:
    """Pearson and SSIM of ``approx`` against ``exact`` maps ``(..., H, W)``; worst over maps."""
    a, e = approx.reshape(-1, *approx.shape[-2:]), exact.reshape(-1, *exact.shape[-2:])
    rs = [pearson(x, y) for x, y in zip(a, e)]
    ss = [ssim(x, y) for x, y in zip(a, e)] if min(a.shape[-2:]) >= 7 else [float("nan")]
    return {"pearson": min(rs), "ssim": min(ss)}
