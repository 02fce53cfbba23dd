"""Small pieces shared by attribution methods: scores, upsampling, blur, batch sizes.

:func:`inference_copy` and :func:`default_batch_size` are the ground floor of the
batching engine, :mod:`cnnlens.core.batching`; methods use the engine
(``FastNet``, ``score_batches``, ``batch_size_for``) rather than these two.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import torch
import torch.nn.functional as F

SCORES = ("logit", "prob", "logprob")


class MethodOutput(NamedTuple):
    """What a registered method returns: ``maps (N, T, H, W)``, ``targets (N, T)``."""

    maps: torch.Tensor
    targets: torch.Tensor
    extras: dict = {}


def check_batch_size(batch_size) -> None:
    """``batch_size`` must be None (automatic) or a positive integer."""
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")


def check_score(score: str) -> str:
    if score not in SCORES:
        raise ValueError(f"score must be one of {', '.join(SCORES)}, got {score!r}")
    return score


def to_scores(logits: torch.Tensor, score: str) -> torch.Tensor:
    """Turn logits ``(N, C)`` into the quantity being explained."""
    if score == "prob":
        return F.softmax(logits, dim=1)
    if score == "logprob":
        return F.log_softmax(logits, dim=1)
    return logits


def target_scores(logits: torch.Tensor, targets: torch.Tensor, score: str) -> torch.Tensor:
    """The quantity explained, read at the targets: ``logits (N, C)`` -> ``(N, T)``.

    Args:
        logits: raw model outputs (kept in their dtype and autograd graph).
        targets: ``(N, T)`` class indices.
        score: ``"logit"``, ``"prob"`` or ``"logprob"`` (see :func:`to_scores`).
    """
    return to_scores(logits, score).gather(1, targets)


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(N, T, h, w)`` maps to ``size`` (half-pixel centres)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


def default_batch_size(x: torch.Tensor) -> int:
    """How many images of ``x``'s size to run per forward pass by default.

    On CPU small batches win: measured on 2 cores with EfficientNet-Lite0 at
    224 px in channels-last layout, batches of 4 ran 11-14 ms per image and
    batches of 32-64 ran 20-27 ms per image. Large batches lose time to page
    faults: their activations exceed glibc's mmap threshold, so every tensor
    gets fresh pages that the kernel must fault in and zero. On a GPU a budget of 128 images at
    224 px keeps activation memory of ImageNet-sized CNNs to a few GiB.
    """
    h, w = x.shape[-2:]
    budget = (128 if x.is_cuda else 4) * 224 * 224
    return max(1, min(256, budget // max(1, h * w)))


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(N, C, H, W)`` with reflect padding."""
    if sigma <= 0:
        return x
    radius = max(1, int(round(3 * sigma)))
    coords = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    pad_h = min(radius, x.shape[-2] - 1)
    pad_w = min(radius, x.shape[-1] - 1)
    kh = kernel[radius - pad_h : radius + pad_h + 1]
    kw = kernel[radius - pad_w : radius + pad_w + 1]
    kh = (kh / kh.sum()).view(1, 1, -1, 1).repeat(c, 1, 1, 1)
    kw = (kw / kw.sum()).view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    y = F.pad(x, (0, 0, pad_h, pad_h), mode="reflect")
    y = F.conv2d(y, kh, groups=c)
    y = F.pad(y, (pad_w, pad_w, 0, 0), mode="reflect")
    return F.conv2d(y, kw, groups=c)


def inference_copy(net: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    """A channels-last copy of ``net`` for many passes on CPU, else ``net`` itself.

    Convolutions on CPU run markedly faster in channels-last layout (about 1.3x
    for EfficientNet-Lite0 forward passes on 2 cores, about 1.15x for forward +
    backward to the input). The copy's parameters are frozen: every caller
    differentiates with respect to its input or a mask, never the weights, and
    backward then skips the weight gradients (about 5% of a perturbation-game
    iteration on EfficientNet-Lite0, same masks). The caller's model is never
    converted: the copy is thrown away after the call. Models that cannot be
    deep-copied run as they are.
    """
    if x.is_cuda or x.dim() != 4:
        return net
    try:
        fast = copy.deepcopy(net)
    except Exception:  # e.g. modules holding non-copyable state
        return net
    for p in fast.parameters():
        p.requires_grad_(False)
    return fast.to(memory_format=torch.channels_last)
