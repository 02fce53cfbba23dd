"""GradientSHAP: expected gradients between noisy inputs and references from a distribution.

Lundberg & Lee, "A unified approach to interpreting model predictions", NeurIPS 2017
(the GradientExplainer of the SHAP library), as implemented by Captum's ``GradientShap``.
It is integrated gradients in expectation over a distribution of references ``b``, with
one random point per sample instead of a quadrature, and optional input noise
(SmoothGrad-style). For samples ``j = 1 .. S`` of image ``x``:

    b_j   drawn uniformly from the image's references,
    a_j   ~ U(0, 1),
    e_j   ~ N(0, stdev^2) per input value,
    phi  = 1/S sum_j (x + e_j - b_j) * ds/dx at b_j + a_j (x + e_j - b_j).

The difference uses the noisy input ``x + e_j``, as Captum's does (its NoiseTunnel adds
the noise before ``InputBaselineXGradient`` forms ``input - baseline``). In expectation the
attributions add up to ``E[s(x + e)] - E[s(b)]`` (exactly so for a linear model); the
estimate has Monte Carlo variance ``O(1/S)``.

**Randomness.** One ``torch.Generator`` seeded with ``seed`` draws, in order, the reference
index and ``a_j`` of every (image, sample) row, then the noise row by row, so the same call
gives the same maps whatever ``batch_size``. Captum draws from NumPy's and torch's global
generators, so the two agree in expectation only (Pearson >= 0.95 at a few hundred samples
on a tiny CNN, see the tests); the definitions are identical.

Rows are batched ``batch_size`` at a time over (image, sample) pairs (default
:func:`rows_per_pass`: 64 at 224 px on a CPU); a batch costs one forward and one backward
pass per target. References: :func:`references`, shared with :mod:`.deeplift`
(names ``"zero"``, ``"blur"``, ``"mean"`` give one reference per image each; a tensor
``(K, C, H, W)`` is a distribution shared by all images).
"""

from __future__ import annotations

import torch

from ..core import progress
from ..core.batching import FastNet, batch_size_for, chunks
from ..core.registry import register
from ..core.targets import needs_logits, resolve_targets
from ..core.tensors import MethodOutput, check_batch_size, check_score, target_scores
from .gradient import check_reduce, reduce_per_target
from .integrated import check_count, ig_baseline

Baselines = str | float | torch.Tensor | list | tuple


def rows_per_pass(x: torch.Tensor, batch_size: int | None) -> int:
    """``batch_size``, or by default 64 rows of 224 x 224 per pass (more for smaller images,
    at most 256): a forward pass kept for a backward pass runs 3-5x faster per image in
    batches of 50 than of 4 on a 2-core CPU (EfficientNet-Lite0, measured 2026-12-03), at
    about 95 MB of memory per 224 px row; on a GPU the engine's default when larger."""
    if batch_size is not None:
        return batch_size
    h, w = x.shape[-2:]
    return max(batch_size_for(x, None), min(256, 64 * 224 * 224 // max(1, h * w)))


def references(x: torch.Tensor, baselines: Baselines, *, single: bool):
    """The references of each image: ``refs (R, C, H, W)`` and ``index (N, K)`` into them.

    Args:
        x: ``(N, C, H, W)`` images.
        baselines: a name or number (one reference per image, :func:`.integrated.ig_baseline`);
            a tensor ``(C, H, W)`` / ``(1, C, H, W)`` (one shared reference), ``(N, C, H, W)``
            with ``single`` (one per image) or ``(K, C, H, W)`` without (a distribution
            shared by all images); or a list of these, concatenated.
        single: DeepLIFT (exactly one reference per image) rather than a distribution.
    """
    n = x.shape[0]
    items = list(baselines) if isinstance(baselines, (list, tuple)) else [baselines]
    if not items:
        raise ValueError("baselines must name at least one reference")
    refs, index, start = [], [], 0
    for b in items:
        if isinstance(b, torch.Tensor):
            t = b.detach().to(device=x.device, dtype=x.dtype)
            t = t.unsqueeze(0) if t.dim() == 3 else t
            if t.dim() != 4 or t.shape[1:] != x.shape[1:]:
                raise ValueError(
                    f"a baseline tensor must be (K, C, H, W) like x {tuple(x.shape[1:])}, "
                    f"got {tuple(b.shape)}"
                )
            if single and t.shape[0] == n and n > 1:
                idx = torch.arange(n).view(n, 1)
            else:
                idx = torch.arange(t.shape[0]).view(1, -1).expand(n, -1)
        else:
            t = ig_baseline(x.detach(), b)
            idx = torch.arange(n).view(n, 1)
        refs.append(t)
        index.append(idx + start)
        start += t.shape[0]
    index = torch.cat(index, dim=1).to(x.device)
    if single and index.shape[1] != 1:
        raise ValueError(
            "deeplift takes one reference per image (a name, a number, a (1, C, H, W) or "
            "(N, C, H, W) tensor); use deeplift_shap for a distribution of references"
        )
    return torch.cat(refs), index


def draws(
    n: int, k: int, samples: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Generator]:
    """Reference choices ``(n * samples,)``, path fractions ``(n * samples,)`` and the
    generator (positioned for the noise), for ``n`` images with ``k`` references each."""
    g = torch.Generator().manual_seed(int(seed))
    pick = torch.randint(k, (n * samples,), generator=g)
    alpha = torch.rand(n * samples, generator=g, dtype=torch.float64)
    return pick, alpha, g


def gradient_shap_per_channel(
    model, x: torch.Tensor, target, refs: torch.Tensor, index: torch.Tensor, *,
    samples: int = 32, stdev: float = 0.0, seed: int = 0, score: str = "logit",
    batch_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """GradientSHAP attributions kept per channel.

    Args:
        model: a LoadedModel.
        x: ``(N, C, H, W)`` images.
        target: target specification.
        refs, index: references ``(R, C, H, W)`` and each image's ``(N, K)``.
        samples: random points per image.
        stdev: standard deviation of the input noise (in the model's input space).
        seed: seeds the one generator of the call.
        score: ``"logit"``, ``"prob"`` or ``"logprob"``.
        batch_size: (image, sample) rows per pass.

    Returns:
        ``attributions (N, T, C, H, W)`` and ``targets (N, T)``.
    """
    check_score(score)
    check_batch_size(batch_size)
    samples = check_count("samples", samples)
    if not isinstance(stdev, (int, float)) or isinstance(stdev, bool) or stdev < 0:
        raise ValueError(f"stdev must be a number >= 0, got {stdev!r}")
    fast = FastNet.of(model.net, x)
    n, k = index.shape
    x = x.detach()
    targets = total = None
    if needs_logits(target):
        with torch.no_grad():
            targets = resolve_targets(target, n, fast(x))
    pick, alpha, g = draws(n, k, samples, seed)
    pick, alpha = pick.to(x.device), alpha.to(device=x.device, dtype=x.dtype)
    batches = chunks(n * samples, rows_per_pass(x, batch_size))
    with progress.task("gradient shap", len(batches)) as advance:
        for rows in batches:
            r = torch.arange(rows.start, rows.stop, device=x.device)
            i = r // samples
            point = x[i]
            if stdev > 0:
                noise = [torch.randn(x.shape[1:], generator=g, dtype=x.dtype) for _ in r]
                point = point + stdev * torch.stack(noise).to(x.device)
            diff = point - refs[index[i, pick[r]]]
            a = alpha[r].view(-1, 1, 1, 1)
            inputs = fast.prepare(point - (1 - a) * diff).requires_grad_(True)
            logits = fast(inputs)
            if targets is None:  # an explicit target: checked against the number of classes
                targets = resolve_targets(target, n, logits.new_empty(n, logits.shape[1]))
            if total is None:
                t = targets.shape[1]
                total = torch.zeros(n, t, *x.shape[1:], dtype=x.dtype, device=x.device)
            scores = target_scores(logits, targets[i], score)
            for j in range(t):
                (grad,) = torch.autograd.grad(scores[:, j].sum(), inputs, retain_graph=j < t - 1)
                total[:, j].index_add_(0, i, diff * grad)
            advance(1)
    return total / samples, targets


@register(
    "gradient_shap",
    "Expected gradients: random points between noisy input and references, times the "
    "difference (Lundberg & Lee 2017)",
    signed=True,
    family="gradient",
)
def gradient_shap(
    model, x: torch.Tensor, target=None, *, baselines: Baselines = ("zero", "blur"),
    samples: int = 32, stdev: float = 0.0, seed: int = 0, reduce: str = "sum",
    score: str = "logit", batch_size: int | None = None,
) -> MethodOutput:  # fmt: skip
    """GradientSHAP maps.

    Args:
        model: a LoadedModel.
        x: ``(N, 3, H, W)`` normalised images.
        target: target specification.
        baselines: the references: a tensor ``(K, C, H, W)`` shared by all images, names
            (``"zero"``, ``"blur"``, ``"mean"``, one reference per image each) or a list
            mixing both.
        samples: random points per image (Captum's ``n_samples``).
        stdev: standard deviation of the Gaussian noise added to the input (Captum's
            ``stdevs``), in the model's normalised input space.
        seed: seeds the call's generator (same call, same maps).
        reduce: ``"sum"`` over channels (signed), ``"absmax"`` or ``"l2"``.
        score: ``"logit"`` (default), ``"prob"`` or ``"logprob"``.
        batch_size: (image, sample) rows per pass (default: memory-aware).

    Returns:
        ``maps (N, T, H, W)``.
    """
    check_reduce(reduce)
    refs, index = references(x, baselines, single=False)
    attributions, targets = gradient_shap_per_channel(
        model, x, target, refs, index, samples=samples, stdev=stdev, seed=seed,
        score=score, batch_size=batch_size,
    )  # fmt: skip
    extras = {"signed": reduce == "sum", "references": index.shape[1]}
    return MethodOutput(reduce_per_target(attributions, reduce).detach(), targets, extras)


__all__ = ["draws", "gradient_shap", "gradient_shap_per_channel", "references", "rows_per_pass"]
