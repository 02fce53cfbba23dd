"""Projective fields: which part of a layer's output an occluding patch can change.

Krypton (Nakandala, Kumar & Papakonstantinou, "Incremental and Approximate Inference
for Faster Occlusion-based Deep CNN Explanations", SIGMOD 2019) observes that a patch
occluding rows ``[a, b)`` of a layer's input can change only a band of its output. Along
one axis, a convolution or pooling window with kernel ``k``, stride ``s``, dilation ``d``
and left padding ``p`` computes output ``o`` from the inputs

    o*s - p + d*j,   j = 0 .. k-1.

So ``o`` reads the changed band exactly when ``o*s - p <= b - 1`` and
``o*s - p + d*(k-1) >= a``, i.e. the changed outputs are the half-open band

    [ ceil((a + p - d*(k-1)) / s),  floor((b - 1 + p) / s) + 1 )

clipped to ``[0, n_out)``. Applied layer after layer this is the *projective field* of the
patch (the mirror image of the receptive field). Recomputing the band needs the inputs

    [ o0*s - p,  o0*s - p + (m-1)*s + d*(k-1) + 1 )      for the band [o0, o0 + m),

which may reach into the padding; the caller supplies those values (zeros for
convolutions and average pooling, -inf for max pooling).

Pointwise layers (batch norm in eval mode, activations) keep the band; residual
additions and concatenations take the union (bounding box) of their inputs' bands.

To run many windows as one batch every window gets a band of the same size: the largest
exact band over the batch, shifted to stay inside the map. A larger band than needed is
still exact: values outside the changed band are recomputed to what they already were.

*Projective-field thresholding* (Krypton's approximate mode) caps the band at ``cap``
rows, centred on the exact band; changes outside the cap are dropped, i.e. taken from
the unoccluded activations. All functions work on ``(P,)`` integer tensors, one entry
per window, so a whole batch of windows is handled at once.
"""

from __future__ import annotations

import torch


def ceil_div(a: torch.Tensor, b: int) -> torch.Tensor:
    """``ceil(a / b)`` for integer tensors (correct for negative ``a``)."""
    return -torch.div(-a, b, rounding_mode="floor")


def conv_band(
    lo: torch.Tensor, hi: torch.Tensor, k: int, s: int, d: int, p: int, n_out: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact changed output band ``[lo', hi')`` of a windowed op for input band ``[lo, hi)``."""
    o_lo = ceil_div(lo + p - d * (k - 1), s).clamp(min=0)
    o_hi = (torch.div(hi - 1 + p, s, rounding_mode="floor") + 1).clamp(max=n_out)
    return o_lo, o_hi


def uniform(
    lo: torch.Tensor, hi: torch.Tensor, n: int, cap: int | None = None
) -> tuple[torch.Tensor, int]:
    """One band size for all windows: ``(start (P,), size)`` with ``0 <= start <= n - size``.

    ``size`` is the largest exact band (at least 1); with ``cap`` it is at most ``cap`` and
    each band is centred on its exact band before being shifted inside the map.
    """
    size = int((hi - lo).max().clamp(min=1)) if lo.numel() else 1
    size = min(size, n)
    start = lo
    if cap is not None and size > cap:
        size = max(1, cap)
        start = torch.div(lo + hi, 2, rounding_mode="floor") - size // 2
    return start.clamp(min=0, max=n - size), size


def input_band(start: torch.Tensor, size: int, k: int, s: int, d: int, p: int):
    """Inputs ``(start (P,), size)`` needed to compute outputs ``[start, start + size)``."""
    return start * s - p, (size - 1) * s + d * (k - 1) + 1


def union(bands: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounding band ``[lo, hi)`` of several ``(start, size)`` bands, per window."""
    lo = torch.stack([b[0] for b in bands]).min(0).values
    hi = torch.stack([b[0] + b[1] for b in bands]).max(0).values
    return lo, hi
