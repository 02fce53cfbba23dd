"""Transformer methods: attention rollout and gradient-weighted attention relevance.

Both read each block's attention ``A_b`` (``(heads, T, T)`` per image, see
:mod:`.attention`), propagate it through the blocks as a token-to-token matrix
``R (T, T)``, and read the row(s) the classifier uses (the class token; class and
distillation tokens for distilled DeiT; every patch token for average pooling) over
the patch tokens. That ``gh x gw`` grid is upsampled bilinearly to the input size.

**Attention rollout** (Abnar & Zuidema, "Quantifying Attention Flow in Transformers",
ACL 2020, arXiv:2005.00928, Sec. 3): the residual connection is modelled by mixing
each block's head-fused attention with the identity,

    Â_b = rownorm(0.5 · fuse_h(A_b) + 0.5 · I),   R = Â_B · ... · Â_2 · Â_1,

``fuse_h`` the mean over heads (or max / min, as in later re-implementations), with
optionally the smallest ``discard_ratio`` of each fused matrix's entries set to zero
before the identity is added. Rollout uses no gradient: **it is class-agnostic**, and
every target of an image gets the same map.

**Gradient-weighted attention relevance** (Chefer, Gur & Wolf, "Generic
Attention-model Explainability for Interpreting Bi-Modal and Encoder-Decoder
Transformers", ICCV 2021, arXiv:2103.15679, the self-attention update rules of Sec. 3):
the rule of their CVPR 2021 paper "Transformer Interpretability Beyond Attention
Visualization" (arXiv:2012.09838, which weights each attention map's LRP relevance by
its gradient) with that relevance replaced by the attention map itself,

    Ā_b = E_h[(∇A_b ⊙ A_b)^+],   R ← R + Ā_b · R  (b = 1..B, R starting at I),

``∇A_b = d s_c / d A_b`` the gradient of the target's score, ``E_h`` the mean over
heads and ``^+`` the positive part. It is class-specific. The CVPR 2021 LRP variant is
not implemented: it needs LRP rules for every layer of the network.
"""

from __future__ import annotations

import torch

from ..core.registry import register
from ..core.targets import resolve_targets
from ..core.tensors import MethodOutput, check_score, target_scores, upsample
from .attention import (
    TokenLayout,
    attention_modules,
    checked,
    recorded_attention,
    token_layout,
)

FUSIONS = ("mean", "max", "min")


def fuse_heads(attn: torch.Tensor, how: str) -> torch.Tensor:
    """``(N, heads, T, T)`` -> ``(N, T, T)`` by the mean, max or min over heads."""
    if how == "mean":
        return attn.mean(dim=1)
    if how == "max":
        return attn.amax(dim=1)
    if how == "min":
        return attn.amin(dim=1)
    raise ValueError(f"head_fusion must be one of {', '.join(FUSIONS)}, got {how!r}")


def discard_smallest(a: torch.Tensor, ratio: float) -> torch.Tensor:
    """Zero the ``floor(ratio · T²)`` smallest entries of each ``(T, T)`` matrix in ``a``."""
    n, t, _ = a.shape
    k = int(ratio * t * t)
    if k == 0:
        return a
    flat = a.reshape(n, t * t).clone()
    idx = flat.topk(k, dim=1, largest=False).indices
    return flat.scatter(1, idx, 0.0).view(n, t, t)


def rollout(attns: list[torch.Tensor], head_fusion: str = "mean", discard_ratio: float = 0.0):
    """Abnar & Zuidema's rollout ``R = Â_B ··· Â_1`` of per-block attention ``(N, h, T, T)``."""
    eye = torch.eye(attns[0].shape[-1], dtype=torch.float32, device=attns[0].device)
    r = None
    for attn in attns:
        a = discard_smallest(fuse_heads(attn.detach().float(), head_fusion), discard_ratio)
        a = 0.5 * a + 0.5 * eye
        a = a / a.sum(dim=-1, keepdim=True)
        r = a if r is None else a @ r
    return r


def relevance(attns: list[torch.Tensor], grads: list[torch.Tensor]) -> torch.Tensor:
    """Chefer et al.'s ``R ← R + E_h[(∇A ⊙ A)^+] · R`` over the blocks, from ``R = I``."""
    n, _, t, _ = attns[0].shape
    r = torch.eye(t, dtype=torch.float32, device=attns[0].device).expand(n, t, t)
    for attn, grad in zip(attns, grads):
        a = (grad.detach().float() * attn.detach().float()).clamp_min(0).mean(dim=1)
        r = r + a @ r
    return r


def read_map(r: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """``(N, T, T)`` token relevance -> ``(N, gh, gw)``: readout rows over patch tokens."""
    row = layout.readout_vector(r) @ r  # (N, T)
    return row[:, layout.prefix :].reshape(r.shape[0], *layout.grid)


def _forward(model, x: torch.Tensor, *, grad: bool):
    """One forward pass recording attention; returns logits, the matrices and the layout."""
    net = model.net
    attention_modules(net)  # a model without attention is refused before anything else
    layout = token_layout(net, tuple(x.shape[-2:]))
    with recorded_attention(net) as rec:
        if grad:
            # Frozen weights: the input carries the graph, so every A_b is in it.
            logits = net(x.detach().requires_grad_(True))
        else:
            with torch.no_grad():
                logits = net(x)
    attns = checked(rec, layout, x.shape[0])
    extras = {
        "layers": list(dict.fromkeys(name for name, _ in rec.maps)),
        "tokens": f"{layout.prefix} special + {layout.grid[0]}x{layout.grid[1]} patch tokens",
    }
    return logits, attns, layout, extras


@register(
    "attention_rollout",
    "Head-averaged attention plus identity, multiplied over blocks; class-agnostic "
    "(Abnar & Zuidema 2020)",
    family="transformer",
)
def attention_rollout(
    model, x: torch.Tensor, target=None, *, head_fusion: str = "mean", discard_ratio: float = 0.0
) -> MethodOutput:
    """Attention rollout maps for vision transformers.

    The map does not depend on the target: every target of an image gets the same map
    (targets are still resolved and returned, as for every method).

    Args:
        model: a LoadedModel whose net is (or holds) a timm, torchvision or transformers
            ViT / DeiT.
        x: ``(N, 3, H, W)`` normalised images.
        target: target specification (only resolved; the map is the same for all).
        head_fusion: ``"mean"`` (Abnar & Zuidema), ``"max"`` or ``"min"`` over heads.
        discard_ratio: fraction in ``[0, 1)`` of each fused matrix's smallest entries
            set to zero before the identity is added.

    Returns:
        ``maps (N, T, H, W)``, ``targets (N, T)``; ``extras`` names the attention layers.

    Raises:
        MethodError: not a vision transformer cnnlens can read (the message says why and
            names methods that work on any model).
    """
    if head_fusion not in FUSIONS:
        raise ValueError(f"head_fusion must be one of {', '.join(FUSIONS)}, got {head_fusion!r}")
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio!r}")
    logits, attns, layout, extras = _forward(model, x, grad=False)
    targets = resolve_targets(target, x.shape[0], logits)
    grid = read_map(rollout(attns, head_fusion, discard_ratio), layout)
    maps = grid.unsqueeze(1).expand(-1, targets.shape[1], -1, -1).contiguous()
    maps = upsample(maps, tuple(x.shape[-2:])).to(x.dtype)
    return MethodOutput(maps, targets, extras)


@register(
    "transformer_relevance",
    "Attention weighted by its positive gradient, accumulated over blocks "
    "(Chefer, Gur & Wolf 2021)",
    family="transformer",
)
def transformer_relevance(
    model, x: torch.Tensor, target=None, *, score: str = "logit"
) -> MethodOutput:
    """Gradient-weighted attention relevance (Chefer, Gur & Wolf, ICCV 2021; module docstring).

    Args:
        model: a LoadedModel whose net is (or holds) a timm, torchvision or transformers
            ViT / DeiT.
        x: ``(N, 3, H, W)`` normalised images.
        target: target specification; one backward pass per target.
        score: differentiate the ``"logit"`` (default), ``"prob"`` or ``"logprob"``.

    Returns:
        ``maps (N, T, H, W)`` (non-negative), ``targets (N, T)``; ``extras`` names the
        attention layers.

    Raises:
        MethodError: not a vision transformer cnnlens can read.
    """
    check_score(score)
    logits, attns, layout, extras = _forward(model, x, grad=True)
    targets = resolve_targets(target, x.shape[0], logits)
    scores = target_scores(logits, targets, score)
    grids = []
    for j in range(targets.shape[1]):
        grads = torch.autograd.grad(
            scores[:, j].sum(), attns, retain_graph=j < targets.shape[1] - 1, allow_unused=True
        )
        grads = [torch.zeros_like(a) if g is None else g for a, g in zip(attns, grads)]
        grids.append(read_map(relevance(attns, grads), layout))
    maps = upsample(torch.stack(grids, dim=1), tuple(x.shape[-2:])).to(x.dtype)
    return MethodOutput(maps.detach(), targets, extras)
