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

import torch

from ..core.tensors import gaussian_blur
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


def blur(sigma: float = 1.0) -> Objective:
    """Mean squared difference between the image and its Gaussian blur (``sigma`` pixels)."""
    if sigma <= 0:
        raise ValueError(f"blur sigma must be positive, got {sigma}")
    s = float(sigma)
    return Objective(
        lambda acts: (_image(acts) - gaussian_blur(_image(acts), s)).pow(2).mean(dim=(1, 2, 3)),
        f"blur({s:g})",
    )
