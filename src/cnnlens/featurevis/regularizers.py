"""Regularisers: penalties on the rendered image, subtracted from an objective.

Unconstrained activation maximisation finds high-frequency patterns that excite
a unit but look like noise (Nguyen et al. 2015; Olah et al. 2017, "Feature
visualization", section "The enemy of feature visualization"). Three classic
penalties, each an :class:`~.objectives.Objective` on the image ``x`` in
[0, 1] (shape ``(B, 3, H, W)``), to be *subtracted*::

    objective = "blocks.3:7" - 0.05 * total_variation() - 0.01 * l1()

* ``l1(c)``: ``mean |x - c|`` — keeps the image near a neutral grey.
* ``total_variation()``: ``mean |x[i+1, j] - x[i, j]| + mean |x[i, j+1] - x[i, j]|``
  (Mahendran & Vedaldi 2015) — favours piecewise-smooth images.
* ``blur(sigma)``: ``mean (x - G_sigma * x)^2``, the energy the image loses to a
  Gaussian blur — penalises high frequencies directly (Yosinski et al. 2015
  blur the image every few steps; this is the differentiable counterpart).

With the default Fourier parameterisation and transformation robustness they
are rarely needed; they matter for the plain pixel parameterisation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .algebra import Activations, Objective


def _image(acts: Activations) -> torch.Tensor:
    if acts.image is None:
        raise ValueError("image regularisers need the rendered image; use them inside render()")
    return acts.image


def l1(constant: float = 0.5) -> Objective:
    """Mean absolute deviation of the pixels from ``constant``."""
    c = float(constant)
    return Objective(
        lambda acts: (_image(acts) - c).abs().mean(dim=(1, 2, 3)),
        f"l1({c:g})",
    )


def total_variation() -> Objective:
    """Anisotropic total variation: mean absolute difference of neighbouring pixels."""

    def fn(acts):
        x = _image(acts)
        dy = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().mean(dim=(1, 2, 3))
        dx = (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().mean(dim=(1, 2, 3))
        return dx + dy

    return Objective(fn, "total_variation()")


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, C, H, W)`` with reflected borders."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    radius_h = min(radius, x.shape[-2] - 1)
    radius_w = min(radius, x.shape[-1] - 1)
    kh = k[radius - radius_h : radius + radius_h + 1]
    kw = k[radius - radius_w : radius + radius_w + 1]
    kh, kw = kh / kh.sum(), kw / kw.sum()
    y = F.pad(x, (0, 0, radius_h, radius_h), mode="reflect")
    y = F.conv2d(y, kh.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    y = F.pad(y, (radius_w, radius_w, 0, 0), mode="reflect")
    return F.conv2d(y, kw.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)


def blur(sigma: float = 1.0) -> Objective:
    """Mean squared difference between the image and its Gaussian blur (``sigma`` pixels)."""
    if sigma <= 0:
        raise ValueError(f"blur sigma must be positive, got {sigma}")
    s = float(sigma)
    return Objective(
        lambda acts: (_image(acts) - gaussian_blur(_image(acts), s)).pow(2).mean(dim=(1, 2, 3)),
        f"blur({s:g})",
    )
