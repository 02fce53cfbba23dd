"""RISE: Randomized Input Sampling for Explanation (Petsiuk, Das & Saenko, BMVC 2018).

Theory. RISE treats the model as a black box and asks how much class ``c``'s
score depends on each pixel being visible. It shows the model many randomly
masked copies of the image and credits each pixel with the scores of the
copies in which it was visible. With a random soft mask ``M : pixels ->
[0, 1]`` the saliency of pixel ``u`` is the expected score given that ``u`` is
kept, which equals ``E[f_c(x ⊙ M) · M(u)] / E[M(u)]``. With ``N`` sampled masks
``M_1 .. M_N`` this gives the Monte Carlo estimate

    S_c(u) = 1 / (N · p) · Σ_i f_c(x ⊙ M_i) · M_i(u)

where ``p`` is the keep probability (``keep``) and ``f_c`` the softmax
probability of class ``c`` by default (``score="prob"``).

Normalisation (``normalize``). The paper divides by ``N · p``, the expected
number of masks that keep a pixel. cnnlens divides by default by the number
that actually kept it, ``Σ_i M_i(u)`` (``normalize="pixel"``):

    S_c(u) = Σ_i f_c(x ⊙ M_i) · M_i(u) / Σ_i M_i(u)

Both estimate the same expectation ``E[f_c | u visible]``; the per-pixel form is
the self-normalised (ratio) estimator and has far less variance. With the
paper's form the map carries the term ``mean_i f_c · (mean_i M_i(u)) / p``,
and the sampling noise of ``mean_i M_i(u)`` (about ``0.3 / sqrt(N)``
relative) can rival the map's spatial variation when the score hardly
changes under masking. Measured on the bundled EfficientNet-Lite0,
``chelsea``, class 285 at 224 px: maps from 4000 and 8000 independent masks
correlate at r = 0.62 with the paper's form and r = 0.97 with the per-pixel
form (``benchmarks/bench_rise.py``). ``normalize="paper"`` gives the paper's
numbers. Either way a model that ignores its input (``f_c ≡ a``) gives
``S_c ≈ a`` (exactly ``a`` with ``"pixel"``), and ``keep=1`` gives exactly
``S_c = f_c(x)`` everywhere. Values are never negative for probabilities, so
the maps are unsigned (unless centred).

Centring (``centre=True``). The map sits on a floor: a pixel with no influence
gets ``E[f_c]``, the mean score over all masks, not 0. Subtracting the Monte
Carlo mean ``(1/N) Σ_i f_c(x ⊙ M_i)`` gives a signed map, positive where seeing
``u`` raises the score above its average and exactly 0 for a model that ignores
its input. The ranking of pixels, and so the pointing game, deletion and
insertion, do not change; metrics that read map values as amounts of evidence
(relevance mass, the spurious-cue share, energy thresholds) do, which is why
the trust benchmark (:mod:`cnnlens.evaluation`) runs RISE centred.

Masks (as in the paper): draw an ``s × s`` binary grid (``s = cells``) whose
cells are 1 with probability ``p``; with cell size ``C = ceil(H / s)`` (and
likewise for the width), upsample the grid bilinearly to ``(H + C_H, W + C_W)``
and crop an ``(H, W)`` window at a random offset in ``[0, C)`` along each axis.
The random shift keeps the grid's cell borders from lining up across masks; the
paper's code upsamples to ``(s + 1) · C``, which is the same size whenever
``s`` divides the side. Where a mask is 0 the pixel becomes the ``baseline``:
the masked input is ``b + (x - b) ⊙ M``. The paper uses ``b = 0`` in the model's
input space (``"zero"``, the dataset mean colour for mean/std-normalised
models); ``"mean"`` (the image's mean colour), ``"blur"`` (the image blurred
with sigma = C / 2) and constants are also accepted.

Implementation. Every target of an image comes from the same forward passes
(one pass gives all classes), and the same masks serve every image of the
batch, so explaining a batch equals explaining its images one by one. Masks are
drawn up front from a CPU ``torch.Generator`` seeded with ``seed`` (only the
small ``s × s`` grids and the offsets); full-size masks are then built in
blocks whose size depends only on the image size, never on ``batch_size``, and
each block's sum is accumulated the same way whatever the batch size. So the
same seed gives the same masks, and the same map for any ``batch_size`` up to
the model's own round-off across batch shapes (bit-identical where the model's
per-image output does not depend on the batch). Only one block of full-size
masks exists at a time (about 32 MiB), never all ``N``.

Reference: V. Petsiuk, A. Das, K. Saenko. RISE: Randomized Input Sampling for
Explanation of Black-box Models. BMVC 2018. arXiv:1806.07421.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..core import progress
from ..core.batching import FastNet, batch_size_for, score_batches
from ..core.registry import register
from ..core.targets import resolve_targets
from ..core.tensors import MethodOutput, check_batch_size, check_score
from .occlusion import make_baseline

NORMALIZE = ("pixel", "paper")

# Full-size masks held at once: about this many float32 values (32 MiB).
_BLOCK_VALUES = 8 * 2**20


def mask_block_size(h: int, w: int, masks: int) -> int:
    """How many full-size masks are generated together (depends only on the size).

    A multiple of 64 where possible, so power-of-two batch sizes up to 64 split
    every block into full batches (no odd-sized forward pass per block).
    """
    block = _BLOCK_VALUES // max(1, h * w)
    if block >= 64:
        block -= block % 64
    return max(1, min(masks, block))


def cell_size(h: int, w: int, cells: int) -> tuple[int, int]:
    """Side of one grid cell in pixels: ``ceil(H / cells)``, ``ceil(W / cells)``."""
    return math.ceil(h / cells), math.ceil(w / cells)


def draw_grids(
    count: int, cells: int, keep: float, cell: tuple[int, int], generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The random part of ``count`` masks, drawn on the CPU ``generator``.

    Returns the binary grids ``(count, cells, cells)`` (bool, True = kept) and
    the crop offsets ``dy``, ``dx`` ``(count,)`` in ``[0, cell)``. This is
    ``count · cells²`` bytes, small next to the full-size masks.
    """
    grid = torch.rand(count, cells, cells, generator=generator) < keep
    dy = torch.randint(0, cell[0], (count,), generator=generator)
    dx = torch.randint(0, cell[1], (count,), generator=generator)
    return grid, dy, dx


def upsample_masks(
    grid: torch.Tensor,
    dy: torch.Tensor,
    dx: torch.Tensor,
    size: tuple[int, int],
    cell: tuple[int, int],
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Full-size soft masks ``(K, H, W)`` in [0, 1] from grids and offsets (see the module doc).

    Each grid is upsampled bilinearly to ``(H + C_H, W + C_W)`` and cropped to
    ``(H, W)`` starting at ``(dy, dx)``.
    """
    h, w = size
    up = F.interpolate(
        grid.to(device=device, dtype=torch.float32).unsqueeze(1),
        size=(h + cell[0], w + cell[1]),
        mode="bilinear",
        align_corners=False,
    )
    offsets = zip(dy.tolist(), dx.tolist())
    out = torch.stack([up[k, 0, y : y + h, x : x + w] for k, (y, x) in enumerate(offsets)])
    return out.clamp_(0.0, 1.0)  # bilinear weights may sum to 1 + 1 ulp


def masked_images(
    fast: FastNet, diff: torch.Tensor, base: torch.Tensor, masks: torch.Tensor
) -> Callable[[slice], torch.Tensor]:
    """``make(rows)``: the masked images ``base + diff * masks[rows]`` as one batch.

    Args:
        fast: the prepared model (its memory format lays out the batch).
        diff: ``(1, C, H, W)`` image minus baseline.
        base: ``(1, C, H, W)`` baseline.
        masks: ``(K, 1, H, W)`` soft masks.

    Returns:
        ``make(rows) -> (k, C, H, W)``, written straight into a batch laid out for the
        model (one multiply and one add, no intermediate copy).
    """

    def make(rows: slice) -> torch.Tensor:
        batch = fast.empty(rows.stop - rows.start, diff)
        torch.mul(diff, masks[rows], out=batch)
        return batch.add_(base)

    return make


@register(
    "rise",
    "Score-weighted average of random soft masks (Petsiuk, Das & Saenko 2018)",
    family="perturbation",
)
def rise(
    model,
    x: torch.Tensor,
    target=None,
    *,
    masks: int = 4000,
    cells: int = 7,
    keep: float = 0.5,
    score: str = "prob",
    batch_size: int | None = None,
    seed: int = 0,
    baseline: str | float = "zero",
    normalize: str = "pixel",
    centre: bool = False,
) -> MethodOutput:
    """RISE saliency maps.

    Args:
        model: a LoadedModel.
        x: ``(N, 3, H, W)`` normalised images.
        target: target specification (see :mod:`cnnlens.core.targets`).
        masks: number of random masks ``N`` (forward passes per image).
        cells: side ``s`` of the random binary grid (cells of about ``H / s`` pixels).
        keep: probability ``p`` that a grid cell is kept (visible).
        score: ``"prob"`` (default), ``"logit"`` or ``"logprob"``.
        batch_size: masked images per forward pass (default: memory-aware).
        seed: seed of the mask generator; the same seed gives the same map.
        baseline: what masked-out pixels become: ``"zero"``, ``"mean"``,
            ``"blur"`` or a constant (in the model's input space).
        normalize: ``"pixel"`` (divide by ``Σ_i M_i(u)``, the default) or
            ``"paper"`` (divide by ``masks · keep``); see the module docstring.
        centre: subtract the mean score over the masks, so that the map is signed:
            positive where seeing the pixel raises the score above its average.

    Returns:
        ``maps (N, T, H, W)``: ``Σ_i score_i · M_i`` divided as ``normalize`` says.
    """
    check_score(score)
    if normalize not in NORMALIZE:
        raise ValueError(f"normalize must be one of {', '.join(NORMALIZE)}, got {normalize!r}")
    for name, value in (("masks", masks), ("cells", cells), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if masks < 1 or cells < 1:
        raise ValueError(f"masks and cells must be positive, got masks={masks}, cells={cells}")
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep <= 1:
        raise ValueError(f"keep must be a probability in (0, 1], got {keep!r}")
    check_batch_size(batch_size)
    n, _, h, w = x.shape
    if cells > min(h, w):
        raise ValueError(f"cells={cells} is more than the image side ({h}x{w})")
    bs = batch_size_for(x, batch_size)
    cell = cell_size(h, w, cells)
    block = mask_block_size(h, w, masks)
    base = make_baseline(x, baseline, cell)
    # Every random number is drawn up front, in one order, so the masks depend
    # on the seed alone (not on batch_size or the block size).
    grids, dys, dxs = draw_grids(masks, cells, keep, cell, torch.Generator().manual_seed(seed))

    fast = FastNet.of(model.net, x)
    with torch.inference_mode():
        logits = fast(x)
        targets = resolve_targets(target, n, logits)
        t_count = targets.shape[1]
        total = torch.zeros(n, t_count, h * w, device=x.device)
        score_sum = torch.zeros(n, t_count, device=x.device)
        coverage = torch.zeros(h * w, device=x.device)
        diff = x - base
        blocks = range(0, masks, block)
        steps = sum(n * math.ceil(min(block, masks - s) / bs) for s in blocks)
        with progress.task("rise", steps) as advance:
            for start in blocks:
                count = min(block, masks - start)
                sl = slice(start, start + count)
                m = upsample_masks(grids[sl], dys[sl], dxs[sl], (h, w), cell, x.device)
                m_in = m.to(x.dtype).unsqueeze(1)  # (K, 1, H, W)
                flat = m.view(count, h * w)
                coverage += flat.sum(0)
                for i in range(n):
                    make = masked_images(fast, diff[i : i + 1], base[i : i + 1], m_in)
                    wanted = targets[i].expand(count, -1)
                    # progress counts forward passes
                    scores = score_batches(fast, make, wanted, score, bs, lambda _: advance(1))
                    score_sum[i] += scores.sum(0)
                    for t in range(t_count):  # one product per target: same sums for any T
                        total[i, t] += scores[:, t] @ flat
    if normalize == "paper":
        maps = total / (masks * keep)
    else:  # a pixel that no mask kept has no evidence: 0, not 0/0
        maps = total / coverage.clamp_min(torch.finfo(coverage.dtype).tiny)
    maps = maps.view(n, t_count, h, w)
    extras = {"masks": masks, "cell_size": list(cell)}
    if centre:
        maps = maps - (score_sum / masks)[..., None, None]
        extras["signed"] = True
    return MethodOutput(maps, targets, extras)
