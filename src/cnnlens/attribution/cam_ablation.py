"""Ablation-CAM: channels weighted by how much the score drops without them.

**Ablation-CAM** (Desai & Ramaswamy, "Ablation-CAM: Visual Explanations for Deep
Convolutional Network via Gradient-free Localization", WACV 2020) needs no
gradients. With y_c the target's score and y_c^k the score when channel k of
the layer's output is set to zero (everything before the layer unchanged),

    w_k = (y_c - y_c^k) / y_c,        map = ReLU(sum_k w_k A_k),

upsampled bilinearly to the input size. A score of exactly 0 is not divided
(the weights are then the drops themselves). A negative score flips the
weights, as the formula says.

**Cost and how we cut it.** One extra pass per channel and image: 1280 for the
last block of EfficientNet. pytorch-grad-cam runs the whole network on a
batch of copies of the image, replacing the layer by a module that returns the
stored activations with one channel zeroed per copy. We run the layers before
the explained one on *one* copy and expand only the layer's output to the
batch of ablated copies: whatever the network adds back from before the layer
(a residual branch) broadcasts from a batch of one. Every target of an image
is scored from the same passes. This is checked once per call: three rows
(one intact, two ablated) run both ways must agree; if the network mixes batch
elements, reads the batch size from its input, or fails, every pass runs the
full batch instead (``extras["ablation"]`` says which: ``"broadcast"`` or
``"full"``). Passes run under inference mode on the channels-last copy
(:class:`~cnnlens.core.batching.FastNet`), with a progress bar.

**Difference from pytorch-grad-cam.** Their ablation layer writes 0 only when
the layer's minimum over the whole batch is exactly 0 (true after a ReLU);
otherwise it writes ``min - 1e7`` (and that minimum shrinks by 1e7 for every
copy of the batch, since it is read again after each write). We always write 0,
the paper's definition; on layers that end in a ReLU or ReLU6 both agree (the
cross-checks use such layers). A layer whose output is read through a
``reshape=`` callable cannot be ablated (we zero channels of the output itself):
pass ``layout=`` instead.
"""

from __future__ import annotations

import torch

from ..core import progress
from ..core.batching import FastNet, batch_size_for, chunks
from ..core.errors import MethodError
from ..core.hooks import attached
from ..core.layouts import Layout
from ..core.names import resolve_layer
from ..core.registry import register
from ..core.targets import resolve_targets
from ..core.tensors import MethodOutput, check_batch_size, default_batch_size, upsample
from .cam import layer_extras, overrides
from .cam_eigen import layer_pass

#: Layer-output elements per broadcast pass (default batch size): the feature maps of a
#: full pass of the default image batch, taken as 64 times its input (EfficientNet-Lite0's
#: last block at 224 px: three passes of at most 427 copies, 107 MB each).
ACTS_PER_IMAGE = 64


def channel_dim(lay: Layout) -> int:
    """Where the channels are in the raw output of a layer read through ``lay``."""
    if lay.kind == "nchw":
        return 1
    if lay.kind in ("nhwc", "tokens"):
        return -1
    raise MethodError(
        "ablationcam zeroes channels of the layer's own output and cannot invert a reshape= "
        "callable; describe the output with layout= (and grid=, prefix=) instead"
    )


def ablated_copies(raw: torch.Tensor, dim: int, channels: torch.Tensor) -> torch.Tensor:
    """``len(channels)`` copies of the one-image output ``raw (1, ...)``, copy ``b`` with
    channel ``channels[b]`` (on axis ``dim``) set to 0, in ``raw``'s memory format."""
    b = len(channels)
    batch = raw.expand(b, *raw.shape[1:]).clone(memory_format=torch.preserve_format)
    if raw.dim() == 4 and raw.is_contiguous(memory_format=torch.channels_last):
        batch = batch.contiguous(memory_format=torch.channels_last)
    batch.movedim(dim, -1)[torch.arange(b, device=raw.device), ..., channels] = 0
    return batch


class Replacer:
    """Forward hook: the layer's ``calls``-th output in a pass becomes :attr:`output`."""

    def __init__(self, calls: int):
        self.calls, self.seen = calls, 0
        self.output: torch.Tensor | None = None

    def reset(self, output: torch.Tensor) -> None:
        self.seen, self.output = 0, output

    def __call__(self, module, args, out):
        self.seen += 1
        if self.seen == self.calls:
            return self.output
        return None


def _pass(fast: FastNet, image: torch.Tensor, hook: Replacer, rows: torch.Tensor, broadcast):
    hook.reset(rows)
    inp = image if broadcast else image.expand(len(rows), *image.shape[1:])
    out = fast(inp)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or len(out) != len(rows):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise MethodError(f"ablated passes give {got}, expected ({len(rows)}, classes)")
    return out.float()


def _broadcasts(fast: FastNet, image, hook: Replacer, raw, dim: int) -> bool:
    """Whether running the prefix on one copy gives the full passes' scores."""
    k = raw.shape[dim]
    channels = torch.arange(min(2, k), device=raw.device)
    rows = torch.cat([raw, ablated_copies(raw, dim, channels)])
    # Each pass gets its own copy: an in-place operation after the layer may write into it.
    full = _pass(fast, image, hook, rows.clone(), broadcast=False)
    try:
        cheap = _pass(fast, image, hook, rows.clone(), broadcast=True)
    except (RuntimeError, MethodError):
        return False
    scale = float(full.abs().max().clamp_min(1.0))
    return bool((cheap - full).abs().max() <= 1e-4 * scale)


def ablated_scores(
    fast: FastNet,
    x: torch.Tensor,
    name: str,
    raw: torch.Tensor,
    dim: int,
    calls: int,
    targets: torch.Tensor,
    batch_size: int | None,
) -> tuple[torch.Tensor, str]:
    """The targets' scores with each channel of layer ``name`` zeroed: ``(N, K, T)``.

    Args:
        fast: the prepared model (its copy is hooked, never the caller's model on CPU).
        x: ``(N, C, H, W)`` images.
        name: the layer; ``raw`` its output for ``x`` (channels on axis ``dim``), and
            ``calls`` how often it runs in one pass (the last call is replaced).
        targets: ``(N, T)`` output columns scored.
        batch_size: ablated copies per pass (None: memory-aware).

    Returns:
        The scores (float32) and the mode used, ``"broadcast"`` or ``"full"``.
    Run it under ``torch.inference_mode``.
    """
    k = raw.shape[dim]
    hook = Replacer(calls)
    module = resolve_layer(fast.net, name)[1]
    with attached([(module, hook)]):
        broadcast = _broadcasts(fast, x[:1], hook, raw[:1], dim)
        if batch_size is None:
            per_copy = raw[0].numel()
            budget = default_batch_size(x) * x[0].numel() * ACTS_PER_IMAGE
            bs = max(1, budget // per_copy) if broadcast else batch_size_for(x, None)
        else:
            bs = batch_size
        passes = -(-k // min(bs, k))
        parts = chunks(k, -(-k // passes))  # equal chunks: one batch shape, one warm-up
        per_image = []
        with progress.task("ablationcam", len(x) * len(parts)) as advance:
            for i in range(len(x)):
                rows_scores = []
                for rows in parts:
                    channels = torch.arange(rows.start, rows.stop, device=raw.device)
                    batch = ablated_copies(raw[i : i + 1], dim, channels)
                    out = _pass(fast, x[i : i + 1], hook, batch, broadcast)
                    rows_scores.append(out.gather(1, targets[i].expand(len(batch), -1)))
                    advance(1)
                per_image.append(torch.cat(rows_scores))
    return torch.stack(per_image), "broadcast" if broadcast else "full"


def drop_weights(base: torch.Tensor, ablated: torch.Tensor) -> torch.Tensor:
    """``(y - y_k) / y``: ``base (N, T)`` scores, ``ablated (N, K, T)`` -> ``(N, K, T)``."""
    base = base[:, None, :]
    return (base - ablated) / torch.where(base == 0, torch.ones_like(base), base)


@register(
    "ablationcam",
    "Channels weighted by the relative score drop when each is zeroed (Desai & Ramaswamy 2020)",
    family="cam",
)
def ablationcam(
    model,
    x: torch.Tensor,
    target=None,
    *,
    layer=None,
    batch_size: int | None = None,
    layout=None,
    grid=None,
    prefix=None,
    reshape=None,
) -> MethodOutput:
    """Ablation-CAM maps at ``layer`` (default: the last conv block).

    Args:
        layer: the layer whose channels are zeroed one at a time.
        batch_size: ablated copies per forward pass (default: memory-aware; larger when
            only the layers after ``layer`` run on the batch).
        layout, grid, prefix, reshape: override the layer's layout (see
            :func:`cnnlens.core.layouts.layout_of`).

    Returns:
        ``maps (N, T, H, W)``, ``targets (N, T)``; ``extras["ablation"]``. Costs one
        forward pass plus ``N * ceil(K / batch_size)`` batched ones (``K`` channels),
        whatever the number of targets.
    """
    check_batch_size(batch_size)
    over = overrides(layout, grid, prefix, reshape)
    fast = FastNet.of(model.net, x)
    seen = layer_pass(model, fast.net, fast.prepare(x), layer, over)
    dim = channel_dim(seen.layout)
    targets = resolve_targets(target, x.shape[0], seen.logits)
    base = seen.logits.detach().float().gather(1, targets)
    with torch.inference_mode():
        scores, mode = ablated_scores(
            fast, x, seen.name, seen.raw, dim, seen.calls, targets, batch_size
        )
    # Outside inference mode so that the maps are ordinary tensors.
    weights = drop_weights(base, scores.clone()).to(seen.acts.dtype)
    maps = torch.einsum("nkt,nkhw->nthw", weights, seen.acts).clamp_min(0)
    extras = {**layer_extras(seen.name, seen.layout), "ablation": mode}
    return MethodOutput(upsample(maps, tuple(x.shape[-2:])), targets, extras)
