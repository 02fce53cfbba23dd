"""Smooth masks: masks built from a coarse lattice by smooth max-convolution (Fong et al. 2019).

Extremal perturbations (:mod:`.extremal`) search a family of smooth masks: a
mask ``m`` is generated from values ``m̄`` on a lattice of points ``v``
``mask_step`` pixels apart by the *smooth max-convolution*

    m(u) = smax_{v} k(u - v) m̄(v),        k(z) = exp(-‖z‖² / (2 σ²)),
    smax_T(f) = Σ_v f(v) e^{f(v)/T} / Σ_v e^{f(v)/T}   (the plain max at T = 0).

Unlike a Gaussian convolution, which dims a small region, the max-convolution
keeps the peak: one lattice point at 1 gives a bump of height 1, so the
smallest feature is one bump (above 0.5 within 1.18 σ of its centre) and every
edge falls from 0.9 to 0.1 over about 1.7 σ. ``smoothness`` is ``T`` (default
0, the max). The kernel is a product of non-negative 1-D factors, so the max is
taken along lattice rows, then columns; at ``T = 0`` this equals the 2-D max
exactly (for ``T > 0`` it is a smooth max of smooth maxes). Defaults: the
lattice step is the shorter image side / 32 (7 px at 224 px, a 32 x 32
lattice) and ``σ`` is 3 steps (21 px at 224 px); both scale with the image, so
a mask can hold a few blobs but no detail finer than about a fifth of the
image.

Gradient of the mask. Through the max only the lattice point that wins at a
pixel gets that pixel's gradient. With ``σ`` three steps wide, a point that
drops a few percent below its neighbours wins nowhere, gets no gradient and
never comes back, so regions can only shrink; and each winner's gradient is the
sum over its own 7 x 7 cell of the pixel gradients, which at a half-blurred
image is mostly noise. cnnlens back-propagates through the mask as if it were
the kernel-weighted *sum*, ``∂L/∂m̄(v) = Σ_u k(u - v) ∂L/∂m(u)``: the forward
mask is exactly the max-convolution above; the descent direction is the pixel
gradient smoothed by the kernel. On the bundled model (the five sample images,
top class, a = 0.1) this kept a higher logit than plain autograd through the
max on four of five (``camera`` 10.0 vs 6.3, ``chelsea`` 9.8 vs 4.8,
``rocket`` 10.2 vs 8.5, ``coffee`` 6.2 vs 5.9; ``astronaut`` 4.3 vs 4.8), and
plain autograd twice stopped well short of the area (``area_half`` 0.065 and
0.076).

Reference: R. Fong, M. Patrick, A. Vedaldi. Understanding Deep Networks via
Extremal Perturbations and Smooth Masks. ICCV 2019. arXiv:1910.08485.
"""

from __future__ import annotations

import math

import torch

LATTICE = 32  # lattice points along the shorter image side (a step of 7 px at 224 px)
SIGMA_STEPS = 3.0  # kernel σ in lattice steps (21 px at 224 px)


def smooth_max(values: torch.Tensor, dim: int, temperature: float) -> torch.Tensor:
    """``smax_T``: ``Σ v e^{v/T} / Σ e^{v/T}`` along ``dim``; the plain maximum at ``T = 0``."""
    if temperature == 0:
        return values.amax(dim)
    weights = torch.softmax(values / temperature, dim=dim)
    return (weights * values).sum(dim)


def lattice(length: int, step: float) -> torch.Tensor:
    """Positions (pixel centres ``0 .. length-1``) of ``ceil(length / step)`` lattice points.

    The points are ``step`` apart and centred on the image: at 224 px with step 7 they
    are 3, 10, ..., 220, the centres of 7-pixel cells.
    """
    n = max(1, math.ceil(length / step - 1e-9))
    offset = (length - 1 - (n - 1) * step) / 2
    return offset + step * torch.arange(n, dtype=torch.float64)


def kernel_matrix(length: int, step: float, sigma: float) -> torch.Tensor:
    """``K[u, i] = k(u - p_i) = exp(-(u - p_i)² / (2 σ²))``: ``(length, points)`` (float64)."""
    pos = lattice(length, step)
    u = torch.arange(length, dtype=torch.float64).unsqueeze(1)
    return torch.exp(-((u - pos.unsqueeze(0)) ** 2) / (2 * sigma**2))


def max_convolution(
    params: torch.Tensor, ky: torch.Tensor, kx: torch.Tensor, temperature: float = 0.0
) -> torch.Tensor:
    """``m(u) = smax_v ky(u_y, v_y) kx(u_x, v_x) m̄(v)``, separably: ``(B, h, w) -> (B, H, W)``.

    Rows of the lattice first (``a[i, u_x] = smax_j kx[u_x, j] m̄[i, j]``), then
    columns (``m[u_y, u_x] = smax_i ky[u_y, i] a[i, u_x]``). With ``T = 0`` this is
    exactly the 2-D max-convolution, because the kernel is a product of non-negative
    factors and ``max_i max_j ky kx m̄ = max_i ky max_j kx m̄``. Plain autograd.
    """
    rows = smooth_max(params.unsqueeze(2) * kx, 3, temperature)  # (B, h, W)
    cols = rows.transpose(1, 2).unsqueeze(1) * ky.unsqueeze(1)  # (B, H, W, h)
    return smooth_max(cols, 3, temperature)


class _MaxConvolution(torch.autograd.Function):
    """Smooth max-convolution forward; the kernel-weighted sum's gradient backward."""

    @staticmethod
    def forward(ctx, params, ky, kx, temperature):
        ctx.save_for_backward(ky, kx)
        with torch.no_grad():
            return max_convolution(params, ky, kx, temperature)

    @staticmethod
    def backward(ctx, grad):
        ky, kx = ctx.saved_tensors
        return ky.transpose(0, 1) @ grad @ kx, None, None, None


class SmoothMask:
    """Masks ``(B, 1, H, W)`` from lattice parameters ``(B, h, w)`` by smooth max-convolution.

    ``m(u) = smax_v k(u - v) m̄(v)`` over the lattice points ``v`` (see
    :func:`max_convolution`). The gradient with respect to ``m̄`` is that of the
    kernel-weighted sum ``Σ_v k(u - v) m̄(v)`` (see the module docstring).
    """

    def __init__(
        self,
        size: tuple[int, int],
        step: float,
        sigma: float,
        temperature: float = 0.0,
        *,
        device=None,
        dtype=torch.float32,
    ):
        h, w = size
        self.size, self.step, self.sigma, self.temperature = (h, w), step, sigma, temperature
        self.ky = kernel_matrix(h, step, sigma).to(device=device, dtype=dtype)  # (H, h')
        self.kx = kernel_matrix(w, step, sigma).to(device=device, dtype=dtype)  # (W, w')
        self.shape = (self.ky.shape[1], self.kx.shape[1])

    def __call__(self, params: torch.Tensor) -> torch.Tensor:
        if params.dim() != 3 or tuple(params.shape[1:]) != self.shape:
            want = f"(B, {self.shape[0]}, {self.shape[1]})"
            raise ValueError(f"params must be {want}, got {tuple(params.shape)}")
        m = _MaxConvolution.apply(params, self.ky, self.kx, float(self.temperature))
        return m.unsqueeze(1)


def default_step(size: tuple[int, int]) -> float:
    """Lattice step in pixels: the shorter side over :data:`LATTICE` (7 at 224 px)."""
    return min(size) / LATTICE


__all__ = [
    "LATTICE",
    "SIGMA_STEPS",
    "SmoothMask",
    "default_step",
    "kernel_matrix",
    "lattice",
    "max_convolution",
    "smooth_max",
]
