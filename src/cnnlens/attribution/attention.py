"""Reading a vision transformer's attention weights, and where its tokens lie on the image.

Transformer methods need each block's attention matrix ``A = softmax(Q K^T / sqrt(d))``,
shaped ``(N, heads, T, T)``, and for gradient-weighted methods ``A`` must be the tensor
the block actually multiplies with ``V``, so that ``d score / d A`` exists. Fast
implementations never form ``A``; :func:`recorded_attention` makes it explicit for the
duration of one call only:

- **timm** attention modules (a boolean ``fused_attn`` flag and an ``attn_drop``
  dropout applied to the softmax): the flag is set to ``False`` inside the block, so
  the module takes its explicit path, and a hook on ``attn_drop`` records its output
  (the matrix that multiplies ``V``). The flags are restored in ``finally``.
- **nn.MultiheadAttention** (torchvision's ViT): a forward hook recomputes the
  self-attention explicitly from the module's own projection weights and returns that
  output in place of the module's, so downstream layers use the recorded ``A``. The
  recomputed output is checked against the module's; a module whose maths differs
  (masks, ``bias_k``, ``add_zero_attn``) is refused, never approximated.
- **transformers** ViT / DeiT attention (``q_proj``, ``k_proj``, ``v_proj`` and a
  config): the config's attention implementation is ``"eager"`` inside the block, so
  the module returns the weights it multiplies with ``V``, and a hook records them.

No global state is touched: only flags of the model's own modules (and configs), and
hooks removed
in ``finally`` (exceptions included). :func:`token_layout` says which tokens are
special (class, distillation, register tokens), which row the classifier reads, and
the patch grid for an input size.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import MethodError
from ..core.hooks import attached

INSTEAD = "use gradcam, occlusion or rise, which work on any architecture"


def attention_modules(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """The self-attention modules of ``net`` that cnnlens can read, in definition order.

    Raises:
        MethodError: none found (not a transformer, or an attention implementation
            cnnlens does not know).
    """
    found = [
        (name, m)
        for name, m in net.named_modules()
        if isinstance(m, nn.MultiheadAttention) or _is_timm_attention(m) or _is_hf_attention(m)
    ]
    if not found:
        raise MethodError(
            f"{type(net).__name__} has no global self-attention cnnlens can read (timm, "
            f"torchvision or transformers ViT / DeiT attention), which attention methods "
            f"need; {INSTEAD}"
        )
    return found


def _is_timm_attention(m: nn.Module) -> bool:
    return isinstance(getattr(m, "fused_attn", None), bool) and isinstance(
        getattr(m, "attn_drop", None), nn.Module
    )


def _is_hf_attention(m: nn.Module) -> bool:
    projections = (getattr(m, p, None) for p in ("q_proj", "k_proj", "v_proj"))
    return hasattr(getattr(m, "config", None), "_attn_implementation") and all(
        isinstance(p, nn.Linear) for p in projections
    )


@contextmanager
def explicit_attention(modules: list[tuple[str, nn.Module]]) -> Iterator[None]:
    """Inside the block, timm and Hugging Face attention modules take their explicit
    softmax path (timm's ``fused_attn`` off; transformers' ``"eager"`` implementation)."""
    flagged = [(m, m.fused_attn) for _, m in modules if _is_timm_attention(m)]
    configs = {id(m.config): m.config for _, m in modules if _is_hf_attention(m)}
    chosen = [(c, c._attn_implementation) for c in configs.values()]
    try:
        for m, _ in flagged:
            m.fused_attn = False
        for c, _ in chosen:
            c._attn_implementation = "eager"
        yield
    finally:
        for m, flag in flagged:
            m.fused_attn = flag
        for c, implementation in reversed(chosen):
            c._attn_implementation = implementation


@dataclass
class AttentionRecord:
    """What :func:`recorded_attention` saw: ``maps`` holds ``(module name, A)`` pairs in
    execution order; ``calls`` counts how often each attention module ran."""

    maps: list[tuple[str, torch.Tensor]] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)


@contextmanager
def recorded_attention(net: nn.Module) -> Iterator[AttentionRecord]:
    """Record every self-attention matrix computed by forward passes inside the block.

    Yields:
        An :class:`AttentionRecord`; each ``A`` is ``(N, heads, T, T)`` and part of the
        autograd graph when gradients are on.
    """
    modules = attention_modules(net)
    record = AttentionRecord()

    def count(name: str):
        def hook(module, args, output):
            record.calls[name] = record.calls.get(name, 0) + 1

        return hook

    def keep(name: str, item: int | None = None):
        def hook(module, args, output):
            weights = output if item is None else output[item]
            if weights is not None:
                record.maps.append((name, weights))

        return hook

    def pairs():
        for name, m in modules:
            if isinstance(m, nn.MultiheadAttention):
                _check_mha(name, m)
                yield m, _mha_hook(name, record.maps)
            elif _is_timm_attention(m):
                yield m.attn_drop, keep(name)
            else:  # transformers: (output, weights), weights being what multiplies V
                yield m, keep(name, 1)
            yield m, count(name)

    with explicit_attention(modules), attached(pairs()):
        yield record


def _check_mha(name: str, m: nn.MultiheadAttention) -> None:
    if not m._qkv_same_embed_dim or m.bias_k is not None or m.add_zero_attn:
        raise MethodError(
            f"attention {name!r} uses separate key/value sizes, bias_k/bias_v or zero "
            f"attention, whose weights cnnlens does not reproduce; {INSTEAD}"
        )


def _mha_hook(name: str, record: list):
    """A forward hook that redoes ``m``'s self-attention explicitly and records ``A``."""

    def hook(m: nn.MultiheadAttention, args, output):
        if len(args) < 3 or not (args[0] is args[1] is args[2]):
            raise MethodError(
                f"attention {name!r} is not called as self-attention m(x, x, x) with "
                f"positional inputs, so its weights cannot be read; {INSTEAD}"
            )
        x = args[0] if m.batch_first else args[0].transpose(0, 1)
        n, t, e = x.shape
        h = m.num_heads
        q, k, v = F.linear(x, m.in_proj_weight, m.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (z.reshape(n, t, h, e // h).transpose(1, 2) for z in (q, k, v))
        attn = (q @ k.transpose(-2, -1) * (e // h) ** -0.5).softmax(dim=-1)
        attn = F.dropout(attn, m.dropout, training=m.training)
        out = (attn @ v).transpose(1, 2).reshape(n, t, e)
        out = F.linear(out, m.out_proj.weight, m.out_proj.bias)
        if not m.batch_first:
            out = out.transpose(0, 1)
        theirs = output[0]
        tol = 1e-4 if theirs.dtype in (torch.float32, torch.float64) else 2e-2
        scale = float(theirs.detach().abs().max().clamp_min(1.0))
        if not m.training and (out.detach() - theirs.detach()).abs().max() > tol * scale:
            raise MethodError(
                f"attention {name!r} computes something other than plain self-attention "
                f"(a mask or causal flag?), so its weights cannot be read; {INSTEAD}"
            )
        record.append((name, attn))
        return (out, *output[1:])

    return hook


@dataclass(frozen=True)
class TokenLayout:
    """How a transformer's tokens relate to the image.

    Attributes:
        prefix: number of special tokens before the patch tokens (class, distillation,
            register tokens).
        grid: ``(gh, gw)`` patch grid for this input size.
        readout: the token rows whose mean the classifier reads (``(0,)`` for a class
            token; every patch token for average pooling).
        source: which convention was recognised (for messages and ``extras``).
    """

    prefix: int
    grid: tuple[int, int]
    readout: tuple[int, ...]
    source: str

    @property
    def tokens(self) -> int:
        return self.prefix + self.grid[0] * self.grid[1]

    def readout_vector(self, like: torch.Tensor) -> torch.Tensor:
        """``(T,)`` weights averaging the readout rows, in ``like``'s dtype and device."""
        w = torch.zeros(self.tokens, dtype=like.dtype, device=like.device)
        w[list(self.readout)] = 1.0 / len(self.readout)
        return w


def token_layout(net: nn.Module, size: tuple[int, int]) -> TokenLayout:
    """The token layout of the (first) timm or torchvision vision transformer in ``net``.

    Args:
        net: the model, or a wrapper holding one.
        size: the input's ``(H, W)``.

    Raises:
        MethodError: no known vision transformer inside, or a pooling whose readout
            is not a mean of token rows.
    """
    h, w = size
    for m in net.modules():
        pe = getattr(m, "patch_embed", None)
        if pe is not None and hasattr(pe, "patch_size") and hasattr(m, "num_prefix_tokens"):
            return _timm_layout(m, pe, size)
        if isinstance(getattr(m, "class_token", None), torch.Tensor) and isinstance(
            getattr(m, "patch_size", None), int
        ):
            p = m.patch_size
            return TokenLayout(1, (h // p, w // p), (0,), "torchvision")
        if isinstance(getattr(m, "cls_token", None), torch.Tensor) and hasattr(
            m, "patch_embeddings"
        ):
            return _hf_layout(net, m, size)
    raise MethodError(
        f"cannot tell how the attention tokens of {type(net).__name__} map onto the image: "
        f"attention methods need a ViT / DeiT (timm, torchvision or transformers) whose "
        f"blocks attend over one sequence of special and patch tokens; {INSTEAD}"
    )


def _hf_layout(net: nn.Module, emb: nn.Module, size: tuple[int, int]) -> TokenLayout:
    p = emb.patch_size
    ph, pw = (p, p) if isinstance(p, int) else tuple(p)
    distilled = isinstance(getattr(emb, "distillation_token", None), torch.Tensor)
    # DeiT with a teacher head averages the class and distillation classifiers.
    teacher = any(hasattr(m, "distillation_classifier") for m in net.modules())
    readout = (0, 1) if distilled and teacher else (0,)
    return TokenLayout(1 + distilled, (size[0] // ph, size[1] // pw), readout, "transformers")


def _timm_layout(m: nn.Module, pe: nn.Module, size: tuple[int, int]) -> TokenLayout:
    if hasattr(pe, "dynamic_feat_size"):
        grid = tuple(int(g) for g in pe.dynamic_feat_size(tuple(size)))
    else:
        ph, pw = (pe.patch_size, pe.patch_size) if isinstance(pe.patch_size, int) else pe.patch_size
        grid = (size[0] // ph, size[1] // pw)
    prefix = int(m.num_prefix_tokens)
    pool = getattr(m, "global_pool", "token")
    if getattr(m, "dist_token", None) is not None:
        readout = (0, 1)  # DeiT distilled: the mean of the class and distillation heads
    elif pool == "token" and prefix > 0:
        readout = (0,)
    elif pool == "avg":
        readout = tuple(range(prefix, prefix + grid[0] * grid[1]))
    else:
        raise MethodError(
            f"{type(m).__name__} pools its tokens with global_pool={pool!r}, which is not a "
            f"mean of token rows, so attention cannot be read out; {INSTEAD}"
        )
    return TokenLayout(prefix, grid, readout, "timm")


def checked(record: AttentionRecord, layout: TokenLayout, n: int) -> list[torch.Tensor]:
    """The recorded matrices, after checking each is ``(n, heads, T, T)`` for the layout
    and that every attention call left exactly one.

    Raises:
        MethodError: nothing recorded, an attention call whose weights were not seen, or
            a matrix over windows, pooled tokens or another sequence (Swin, LeViT,
            attention pooling): the message gives its shape.
    """
    if not record.maps:
        raise MethodError(f"no attention weights were computed in the forward pass; {INSTEAD}")
    seen: dict[str, int] = {}
    for name, _ in record.maps:
        seen[name] = seen.get(name, 0) + 1
    for name, calls in record.calls.items():
        if seen.get(name, 0) != calls:
            raise MethodError(
                f"attention {name!r} ran {calls} time(s) but its weights were seen "
                f"{seen.get(name, 0)} time(s), so they cannot be read reliably; {INSTEAD}"
            )
    t = layout.tokens
    for name, a in record.maps:
        ok = isinstance(a, torch.Tensor) and a.dim() == 4 and a.shape[0] == n
        if not ok or a.shape[2:] != (t, t):
            shape = tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__
            raise MethodError(
                f"attention {name!r} has weights of shape {shape}, not (N={n}, heads, {t}, {t}) "
                f"over {layout.prefix} special + {layout.grid[0]}x{layout.grid[1]} patch tokens "
                f"(windowed or pooled attention?); {INSTEAD}"
            )
    return [a for _, a in record.maps]
