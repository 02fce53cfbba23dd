"""Adversarial images for the detection experiment: the basic iterative method (I-FGSM).

Attack: the basic iterative method of Kurakin, Goodfellow & Bengio
("Adversarial examples in the physical world", 2016), an iterated
fast-gradient-sign step. Work in pixel space ``p`` in [0, 1] (the image before
the model's mean/std normalisation), start at the clean pixels ``p0`` and
repeat

    p <- clip_[p0 - ε, p0 + ε] ∩ [0, 1] ( p + α sign ∇_p CE(f(p), y) )

so the loss of label ``y`` (by default the clean top-1 prediction: untargeted,
and no ground truth needed) rises by steps of ``α`` while the image stays in
the L∞ ball of radius ``ε`` and in the valid pixel range. Defaults as in that
paper: ``ε = 8/255``, ``α = 1/255`` and ``min(255 ε + 4, 1.25 · 255 ε)``
steps (10 for ε = 8/255), rounded half to even. The paper names the attack
only as Kurakin et al.'s iterative method with ε = 8; ``α`` and the step count
are that reference's. Pixels are kept as floats (not rounded to 1/255), and
the attack is deterministic: there is no random start unless asked for.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.batching import FastNet, batch_size_for, chunks
from ..core.hooks import preserved
from ..core.targets import resolve_targets
from ..core.tensors import check_batch_size
from ..models.base import LoadedModel


def default_steps(epsilon: float) -> int:
    """Kurakin et al.'s iteration count ``min(255 ε + 4, 1.25 · 255 ε)``, at least 1."""
    e = 255.0 * float(epsilon)
    return max(1, int(round(min(e + 4, 1.25 * e))))


def to_pixels(model, x: torch.Tensor) -> torch.Tensor:
    """Normalised inputs ``(N, 3, H, W)`` to pixels in [0, 1] with the model's mean/std."""
    return LoadedModel.wrap(model).preprocess_spec.denormalize(x)


def ifgsm(
    model,
    x: torch.Tensor,
    target=None,
    *,
    epsilon: float = 8 / 255,
    step: float = 1 / 255,
    steps: int | None = None,
    seed: int = 0,
    random_start: bool = False,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Untargeted iterative FGSM (basic iterative method); see the module docstring.

    Args:
        model: a :class:`LoadedModel` or a bare ``nn.Module`` (taken to expect
            ImageNet mean/std normalisation, as :meth:`LoadedModel.wrap` does).
        x: ``(N, 3, H, W)`` normalised images (``(3, H, W)`` is accepted).
        target: the label to move away from, one per image (an int, a list, an
            ``(N,)`` tensor; see :mod:`cnnlens.core.targets`); ``None`` = each image's
            top-1 prediction.
        epsilon: radius of the L∞ ball, in [0, 1] pixel units (8/255 default).
        step: ``α``, the size of each signed-gradient step in pixel units.
        steps: number of steps (``None``: :func:`default_steps`, 10 at 8/255).
        seed: seed of the random start (unused without it).
        random_start: start from a uniform random point of the ball (Madry et
            al.'s PGD variant) instead of the clean image.
        batch_size: images per forward/backward pass (default: memory-aware).

    Returns:
        The adversarial images, normalised like ``x`` (same shape, device and
        dtype). Their pixels lie within ``epsilon`` of the clean pixels (the
        clean image clamped to [0, 1]) and inside [0, 1]. The model is left as
        it came (mode, flags and parameters).
    """
    check_batch_size(batch_size)
    if not (isinstance(epsilon, (int, float)) and 0 <= epsilon <= 1):
        raise ValueError(f"epsilon must be a number in [0, 1] (pixel units), got {epsilon!r}")
    if not (isinstance(step, (int, float)) and step > 0):
        raise ValueError(f"step must be a positive number (pixel units), got {step!r}")
    if steps is None:
        steps = default_steps(epsilon)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0 or None, got {steps!r}")
    model = LoadedModel.wrap(model)
    spec = model.preprocess_spec
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise ValueError(f"x must be (N, 3, H, W), got shape {tuple(x.shape)}")
    x = x.detach()
    n = x.shape[0]
    p0 = spec.denormalize(x)
    lo, hi = (p0 - epsilon).clamp_min(0), (p0 + epsilon).clamp_max(1)
    p = p0.clone()
    if random_start and epsilon > 0:
        g = torch.Generator().manual_seed(int(seed))
        noise = torch.rand(p0.shape, generator=g, dtype=torch.float32) * 2 - 1
        p = torch.min(torch.max(p0 + epsilon * noise.to(p0), lo), hi)
    parts = chunks(n, batch_size_for(x, batch_size))
    with preserved(model.net):
        # the inference copy pays off only over many passes
        fast = FastNet.of(model.net, x) if steps else FastNet.plain(model.net)
        with torch.no_grad():
            logits = torch.cat([fast(x[rows]).float() for rows in parts])
        labels = resolve_targets(target, n, logits)
        if labels.shape[1] != 1:
            raise ValueError(
                f"give one label per image, got targets of shape {tuple(labels.shape)}"
            )
        labels = labels[:, 0]
        for _ in range(steps):
            for rows in parts:
                pc = p[rows].clone().requires_grad_(True)
                out = fast(spec.normalize(pc)).float()
                loss = F.cross_entropy(out, labels[rows], reduction="sum")
                (grad,) = torch.autograd.grad(loss, pc)
                moved = pc.detach() + step * grad.sign()
                p[rows] = torch.min(torch.max(moved, lo[rows]), hi[rows])
    return spec.normalize(p).to(x.dtype)


__all__ = ["default_steps", "ifgsm", "to_pixels"]
