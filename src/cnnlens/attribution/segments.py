"""Image segments and the perturbed images built from them: the shared ground of LIME,
KernelSHAP and Shapley value sampling (:mod:`.lime`, :mod:`.kernel_shap`, :mod:`.shapley`).

The three methods explain a score through ``d`` interpretable features, the segments of
the image. A *coalition* ``z in {0, 1}^d`` keeps the segments where ``z_s = 1`` and
replaces every other segment by a baseline image ``b``:

    x(z)(u) = x(u)   if z_{seg(u)} = 1,        x(z)(u) = b(u)   otherwise.

Segments (``segments=``):

* ``"slic"`` (default): SLIC superpixels (Achanta et al., TPAMI 2012) from scikit-image,
  about ``n_segments`` of them (compactness 10, Gaussian smoothing sigma 1, Lab colour);
* ``"quickshift"``: Quick Shift (Vedaldi & Soatto, ECCV 2008) with the LIME package's
  settings for images (kernel 4, maximum distance 200, ratio 0.2); ``n_segments`` is
  ignored;
* ``"grid"``: a regular grid of ``round(sqrt(n_segments))`` cells per side;
* a label tensor ``(H, W)`` (the same for every image) or ``(N, H, W)``: any integers,
  renumbered ``0 .. d-1`` in increasing order.

SLIC and Quick Shift run on the de-normalised image (RGB in [0, 1], through the model's
mean and std), and are deterministic (Quick Shift's tie-breaking noise has a fixed seed).

Baselines (``baseline=``) are those of integrated gradients
(:func:`cnnlens.attribution.integrated.ig_baseline`): ``"zero"`` (the dataset mean
colour of a mean/std-normalised model), ``"mean"`` (the image's mean colour), ``"blur"``
(Gaussian, sigma = max(H, W) / 16) or a constant.

Scoring: the coalitions of one image are scored ``batch_size`` images per forward pass on
a channels-last copy of the model (:class:`~cnnlens.core.batching.FastNet`) under
``torch.inference_mode``; each perturbed batch is written straight into the model's
memory layout. On the CPU that copy is, where ``torch.fx`` can trace the model, the
incremental-occlusion engine's graph (:func:`cnnlens.attribution.incremental.graph.trace`):
eval batch norms folded into the convolutions before them and ReLU / ReLU6 clamps fused
into them, the same arithmetic up to float round-off; its logits on ``x`` must match the
model's (else the plain copy runs), which roughly halves the time of a pass on
EfficientNet-Lite0. A coalition drawn several times is run once (the model is deterministic,
so the scores are the same), and the full coalition reuses the score of ``x`` itself.
Every target of an image is read from the same passes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import fx

from ..core import progress
from ..core.batching import FastNet, batch_size_for, score_batches
from ..core.errors import MethodError
from ..core.geometry import UnsupportedGraph
from ..core.targets import resolve_targets
from ..core.tensors import check_batch_size, check_score, target_scores
from .incremental.graph import trace
from .integrated import ig_baseline

SEGMENTATIONS = ("slic", "quickshift", "grid")


@dataclass(frozen=True)
class Segmentation:
    """The segments of a batch of images: what the surrogate methods' features are.

    Attributes:
        labels: ``(N, H, W)`` long, the segment of every pixel, ``0 .. counts[i] - 1``.
        counts: the number of segments ``d`` of each image.
        method: ``"slic"``, ``"quickshift"``, ``"grid"`` or ``"given"``.
    """

    labels: torch.Tensor
    counts: tuple[int, ...]
    method: str

    @classmethod
    def cat(cls, parts: list[Segmentation]) -> Segmentation:
        """Join the segmentations of consecutive batches (see ``Explanation.cat``)."""
        return cls(
            torch.cat([p.labels for p in parts]),
            tuple(c for p in parts for c in p.counts),
            parts[0].method,
        )


def consecutive(labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``labels`` renumbered ``0 .. d-1`` in increasing order, and ``d``."""
    values, inverse = torch.unique(labels, return_inverse=True)
    return inverse.reshape(labels.shape), int(values.numel())


def grid_labels(h: int, w: int, n_segments: int, device=None) -> torch.Tensor:
    """A regular grid of ``k x k`` cells, ``k = round(sqrt(n_segments))``: ``(H, W)`` long."""
    k = max(1, min(round(math.sqrt(n_segments)), h, w))
    rows = torch.arange(h, device=device) * k // h
    cols = torch.arange(w, device=device) * k // w
    return rows[:, None] * k + cols[None, :]


def _superpixels(rgb, method: str, n_segments: int):
    from skimage.segmentation import quickshift, slic

    colour = rgb.shape[-1] == 3
    if method == "slic":
        return slic(
            rgb, n_segments=n_segments, compactness=10.0, sigma=1.0, start_label=0,
            convert2lab=colour, channel_axis=-1,
        )  # fmt: skip
    if not colour:
        raise MethodError("quickshift segments need 3-channel images; use 'slic' or 'grid'")
    return quickshift(rgb, kernel_size=4, max_dist=200, ratio=0.2, channel_axis=-1)


def segment(
    model, x: torch.Tensor, segments: str | torch.Tensor = "slic", n_segments: int = 50
) -> Segmentation:
    """The segments of every image of ``x``.

    Args:
        model: a LoadedModel (its mean and std give back the RGB image).
        x: ``(N, C, H, W)`` normalised images.
        segments: ``"slic"``, ``"quickshift"``, ``"grid"`` or a label tensor ``(H, W)`` /
            ``(N, H, W)`` (see the module docstring).
        n_segments: about how many segments SLIC and the grid make.

    Returns:
        A :class:`Segmentation` with labels ``(N, H, W)`` on ``x``'s device.
    """
    n, c, h, w = x.shape
    if isinstance(segments, torch.Tensor):
        return _given(segments, n, h, w, x.device)
    if segments not in SEGMENTATIONS:
        raise ValueError(
            f"segments must be one of {', '.join(SEGMENTATIONS)} or a label tensor (H, W) "
            f"or (N, H, W), got {segments!r}"
        )
    if isinstance(n_segments, bool) or not isinstance(n_segments, int) or n_segments < 1:
        raise ValueError(f"n_segments must be a positive integer, got {n_segments!r}")
    if segments == "grid":
        one = grid_labels(h, w, n_segments, x.device)
        labels = [consecutive(one)] * n
    else:
        rgb = x.detach().float()
        if c == 3:
            rgb = model.preprocess_spec.denormalize(rgb)
        rgb = rgb.clamp(0, 1).permute(0, 2, 3, 1).cpu().double().numpy()
        labels = [
            consecutive(torch.from_numpy(_superpixels(img, segments, n_segments)).to(x.device))
            for img in rgb
        ]
    return Segmentation(
        torch.stack([lab for lab, _ in labels]), tuple(d for _, d in labels), segments
    )


def _given(segments: torch.Tensor, n: int, h: int, w: int, device) -> Segmentation:
    if segments.is_floating_point() or segments.is_complex():
        raise ValueError(f"a segments tensor must hold integer labels, got {segments.dtype}")
    if segments.dim() == 2:
        segments = segments.expand(n, -1, -1)
    if segments.dim() != 3 or tuple(segments.shape) != (n, h, w):
        raise ValueError(
            f"a segments tensor must be (H, W) = ({h}, {w}) or (N, H, W) = ({n}, {h}, {w}), "
            f"got {tuple(segments.shape)}"
        )
    labels = [consecutive(s.to(device=device, dtype=torch.long)) for s in segments]
    return Segmentation(
        torch.stack([lab for lab, _ in labels]), tuple(d for _, d in labels), "given"
    )


def check_count(name: str, value, minimum: int = 1) -> int:
    """``value`` if it is an integer >= ``minimum`` (not a bool), else a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


@dataclass(frozen=True)
class SegmentRun:
    """One call's shared state: the prepared model, segments, baselines, targets.

    Attributes:
        fast: the model prepared for many passes.
        x: ``(N, C, H, W)`` the images; ``base`` the same shape, their baselines.
        seg: the segments.
        targets: ``(N, T)`` class indices.
        full: ``(N, T)`` float32 scores of the images themselves (all segments kept).
        score: ``"logit"``, ``"prob"`` or ``"logprob"``.
        batch_size: perturbed images per forward pass.
    """

    fast: FastNet
    x: torch.Tensor
    base: torch.Tensor
    seg: Segmentation
    targets: torch.Tensor
    full: torch.Tensor
    score: str
    batch_size: int

    @classmethod
    def start(
        cls, model, x, target, *, segments, n_segments, baseline, score, batch_size
    ) -> SegmentRun:
        """Check the shared parameters, score ``x``, resolve targets, segment, build baselines."""
        check_score(score)
        check_batch_size(batch_size)
        x = x.detach()
        base = ig_baseline(x, baseline)
        plain = FastNet.of(model.net, x)
        with torch.inference_mode():
            logits = plain(x).float()
            targets = resolve_targets(target, x.shape[0], logits)
            fast = folded(plain, x, logits)
            full = target_scores(logits, targets, score)
        seg = segment(model, x, segments, n_segments)
        return cls(fast, x, base, seg, targets, full, score, batch_size_for(x, batch_size))

    def images(self, i: int, rows: torch.Tensor) -> Callable[[slice], torch.Tensor]:
        """``make(sl)``: image ``i`` with the coalitions ``rows[sl]`` applied, one batch.

        Args:
            i: the image.
            rows: ``(S, d)`` bool coalitions (True = segment kept).
        """
        x, base = self.x[i : i + 1], self.base[i : i + 1]
        diff, labels = x - base, self.seg.labels[i]

        def make(sl: slice) -> torch.Tensor:
            keep = rows[sl].to(x.dtype)[:, labels].unsqueeze(1)  # (b, 1, H, W)
            batch = self.fast.empty(keep.shape[0], x)
            torch.mul(diff, keep, out=batch)
            return batch.add_(base)

        return make

    def scores(self, i: int, z: torch.Tensor, description: str) -> torch.Tensor:
        """Scores ``(S, T)`` (float32) of image ``i`` under the coalitions ``z (S, d)``.

        Each distinct coalition is run once; the full one reuses :attr:`full`.
        """
        unique, inverse = torch.unique(z.to(torch.uint8), dim=0, return_inverse=True)
        unique = unique.bool().to(self.x.device)
        whole = unique.all(dim=1)
        rows = unique[~whole]
        values = torch.empty(unique.shape[0], self.targets.shape[1], device=self.x.device)
        values[whole] = self.full[i]
        passes = math.ceil(rows.shape[0] / self.batch_size)
        with torch.inference_mode(), progress.task(description, passes) as advance:
            wanted = self.targets[i].expand(rows.shape[0], -1)
            make = self.images(i, rows)
            got = score_batches(self.fast, make, wanted, self.score, self.batch_size,
                                lambda _: advance(1))  # fmt: skip
        values[~whole] = got
        return values[inverse.to(self.x.device)]

    def paint(self, i: int, weights: torch.Tensor) -> torch.Tensor:
        """Per-segment ``weights (T, d)`` of image ``i`` as maps ``(T, H, W)``."""
        return weights[:, self.seg.labels[i]]

    def extras(self) -> dict:
        """The extras every segment method returns: signed maps and the segments."""
        return {"signed": True, "segments": self.seg, "n_segments": list(self.seg.counts)}


def folded(plain: FastNet, x: torch.Tensor, logits: torch.Tensor) -> FastNet:
    """The model prepared for many passes: on the CPU the traced copy of ``plain.net`` with
    batch norms folded and clamps fused, in channels-last layout, when that reproduces
    ``logits`` (the model's output on ``x``); otherwise ``plain`` (module docstring)."""
    if not plain.is_copy:  # GPU, or a model that cannot be copied
        return plain
    try:
        graph, _, copy = trace(plain.net)
        module = fx.GraphModule(copy, graph).to(memory_format=torch.channels_last)
        fast = FastNet(module.requires_grad_(False), torch.channels_last)
        out = fast(x).float()
    except (UnsupportedGraph, RuntimeError, TypeError, ValueError, AttributeError):
        return plain
    scale = logits.abs().amax().clamp_min(1.0)
    if out.shape != logits.shape or not bool(((out - logits).abs() <= 1e-3 * scale).all()):
        return plain
    return fast


def generator(seed: int) -> torch.Generator:
    """The CPU generator a method draws image ``i``'s coalitions from (same for every image,
    so a batch gives the maps of its images explained one by one)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    return torch.Generator().manual_seed(seed)
