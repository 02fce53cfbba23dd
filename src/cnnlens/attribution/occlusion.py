"""Occlusion sensitivity (Zeiler & Fergus, ECCV 2014).

Slide a ``window`` over the image with a given ``stride``; at each position
replace the pixels under the window with a baseline and record how much the
target score drops. A pixel's attribution is the mean drop over all window
positions that cover it:

    A_c(u) = mean_{p : u in W_p} [ s_c(x) - s_c(x with W_p replaced by b) ]

where s_c is the softmax probability of class c by default (``score="prob"``).
Positive values mark evidence for the class. Positions run from 0 in steps of
``stride``; when the last position does not reach the border one more
position flush with the border is added, so every pixel is covered.

Baselines: ``"zero"`` (zero in the model's input space, i.e. the dataset mean
colour for mean/std-normalised models), ``"mean"`` (the image's own mean
colour), ``"blur"`` (the image blurred with sigma = window / 2), or a number.
"""

from __future__ import annotations

import torch

from .. import progress
from ..registry import register
from ..targets import resolve_targets
from .common import (
    MethodOutput,
    check_batch_size,
    check_score,
    default_batch_size,
    gather_scores,
    gaussian_blur,
    inference_copy,
    to_scores,
)


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def window_positions(size: int, window: int, stride: int) -> list[int]:
    """Start offsets of the window along one axis, covering every pixel."""
    if window > size:
        raise ValueError(f"occlusion window {window} is larger than the image side {size}")
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def make_baseline(x: torch.Tensor, baseline: str | float, window: tuple[int, int]) -> torch.Tensor:
    """The replacement image ``(N, 3, H, W)`` for a baseline name or value."""
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(x, float(baseline))
    if baseline == "zero":
        return torch.zeros_like(x)
    if baseline == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    if baseline == "blur":
        return gaussian_blur(x, sigma=max(window) / 2)
    raise ValueError(f"baseline must be 'zero', 'mean', 'blur' or a number, got {baseline!r}")


@register(
    "occlusion",
    "Drop in class probability when a window is replaced by a baseline (Zeiler & Fergus 2014)",
    family="perturbation",
    signed=True,
)
def occlusion(
    model,
    x: torch.Tensor,
    target=None,
    *,
    window: int | tuple[int, int] = 32,
    stride: int | tuple[int, int] = 16,
    baseline: str | float = "zero",
    score: str = "prob",
    batch_size: int | None = None,
) -> MethodOutput:
    """Occlusion sensitivity maps.

    Args:
        model: a LoadedModel.
        x: ``(N, 3, H, W)`` normalised images.
        target: target specification (see :mod:`cnnlens.targets`).
        window: side (or ``(h, w)``) of the occluding square, in pixels.
        stride: step between window positions.
        baseline: ``"zero"``, ``"mean"``, ``"blur"`` or a constant.
        score: ``"prob"`` (default), ``"logit"`` or ``"logprob"``.
        batch_size: occluded images per forward pass (default: memory-aware).

    Returns:
        ``maps (N, T, H, W)``: mean score drop of the windows covering each pixel.
    """
    check_score(score)
    net = model.net
    n, _, h, w = x.shape
    win, st = _pair(window), _pair(stride)
    if min(st) < 1 or min(win) < 1:
        raise ValueError("window and stride must be positive")
    if st[0] > win[0] or st[1] > win[1]:
        raise ValueError(
            f"stride {st} is larger than window {win}: pixels between windows would get no "
            "value; use a stride no larger than the window"
        )
    check_batch_size(batch_size)
    ys, xs = window_positions(h, win[0], st[0]), window_positions(w, win[1], st[1])
    positions = [(y, xx) for y in ys for xx in xs]
    bs = batch_size or default_batch_size(x)
    base_img = make_baseline(x, baseline, win)

    fast = inference_copy(net, x)
    fmt = torch.channels_last if fast is not net else torch.contiguous_format
    with torch.inference_mode():
        logits = fast(x.contiguous(memory_format=fmt))
        targets = resolve_targets(target, n, logits)
        base_scores = gather_scores(to_scores(logits.float(), score), targets)  # (N, T)
        t_count = targets.shape[1]
        total = torch.zeros(n, t_count, h, w, device=x.device)
        count = torch.zeros(1, 1, h, w, device=x.device)
        for y, xx in positions:
            count[..., y : y + win[0], xx : xx + win[1]] += 1
        chunks = (len(positions) + bs - 1) // bs
        with progress.task("occlusion", n * chunks) as advance:
            for i in range(n):
                for start in range(0, len(positions), bs):
                    chunk = positions[start : start + bs]
                    batch = x[i : i + 1].repeat(len(chunk), 1, 1, 1)
                    batch = batch.contiguous(memory_format=fmt)
                    for j, (y, xx) in enumerate(chunk):
                        sl = (slice(y, y + win[0]), slice(xx, xx + win[1]))
                        batch[j, :, sl[0], sl[1]] = base_img[i, :, sl[0], sl[1]]
                    out = to_scores(fast(batch).float(), score)
                    drops = base_scores[i].unsqueeze(0) - out[:, targets[i]]  # (P, T)
                    for j, (y, xx) in enumerate(chunk):
                        total[i, :, y : y + win[0], xx : xx + win[1]] += drops[j].view(-1, 1, 1)
                    advance(1)
    maps = total / count
    return MethodOutput(maps, targets, {"positions": len(positions)})
