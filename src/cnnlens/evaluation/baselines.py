"""Baseline maps that use no model: rows every metric table should carry.

A method is only informative where it beats maps that know nothing about the
image. Two such maps:

* :func:`centre_map`, an isotropic Gaussian peaked at the image centre,

      B(y, x) = exp(-((y - c_y)^2 + (x - c_x)^2) / (2 σ^2)),
      c = ((H - 1) / 2, (W - 1) / 2),  σ = spread · min(H, W),

  which exploits the photographer's habit of centring the object; on
  object-centric data such as ImageNet or VOC it scores surprisingly well
  (Zhang et al. 2016 report it in the pointing game).
* :func:`random_map`, i.i.d. uniform noise in [0, 1), seeded: chance level.

Both return ``(N, H, W)`` float tensors, the same map for every image of the
centre baseline. The random map is drawn on the CPU and moved, so a seed gives
the same values on every device.
"""

from __future__ import annotations

import torch


def centre_map(
    n: int, h: int, w: int, spread: float = 0.25, device: str | torch.device | None = None
) -> torch.Tensor:
    """Gaussian centre-bias map ``(N, H, W)``, 1 at the centre; ``σ = spread · min(H, W)``."""
    if spread <= 0:
        raise ValueError(f"spread must be > 0, got {spread}")
    sigma = spread * min(h, w)
    ys = torch.arange(h, dtype=torch.float32, device=device) - (h - 1) / 2
    xs = torch.arange(w, dtype=torch.float32, device=device) - (w - 1) / 2
    d2 = ys.view(-1, 1) ** 2 + xs.view(1, -1) ** 2
    return torch.exp(-d2 / (2 * sigma**2)).expand(n, h, w).clone()


def random_map(
    n: int, h: int, w: int, seed: int = 0, device: str | torch.device | None = None
) -> torch.Tensor:
    """Uniform noise ``(N, H, W)`` in [0, 1), reproducible from ``seed`` on any device."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, h, w, generator=gen).to(device)


__all__ = ["centre_map", "random_map"]
