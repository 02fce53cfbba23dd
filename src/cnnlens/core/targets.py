"""Target specifications: which class(es) each image is explained for.

A target may be ``None`` (each image's top-1 class), an ``int`` (the same class
for every image), a list with one entry per image (each an int or a list of
ints of equal length), a tensor of shape ``(N,)`` or ``(N, T)``, or a string
``"topK"`` such as ``"top5"`` (each image's K highest-scoring classes). The
result is always an ``(N, T)`` long tensor.
"""

from __future__ import annotations

import re
from typing import Union

import torch

from .errors import TargetError

TargetSpec = Union[None, int, str, list, tuple, torch.Tensor]  # noqa: UP007

_TOPK = re.compile(r"^top[-_]?(\d+)$")


def needs_logits(target: TargetSpec) -> bool:
    """Whether resolving ``target`` requires the model's output."""
    return target is None or isinstance(target, str)


def resolve_targets(target: TargetSpec, n: int, logits: torch.Tensor | None = None) -> torch.Tensor:
    """Turn a target specification into an ``(N, T)`` long tensor.

    Args:
        target: see the module docstring.
        n: batch size.
        logits: ``(N, C)`` model output; required for ``None`` and ``"topK"``,
            and used to check class indices are in range when given.

    Raises:
        TargetError: malformed specification, wrong length or out-of-range class.
    """
    device = logits.device if logits is not None else torch.device("cpu")
    if needs_logits(target):
        if logits is None:
            raise TargetError(f"target {target!r} needs the model's output")
        k = 1
        if isinstance(target, str):
            m = _TOPK.match(target.strip().lower())
            if not m or int(m.group(1)) < 1:
                raise TargetError(f"target string must look like 'top5', got {target!r}")
            k = int(m.group(1))
        if k > logits.shape[1]:
            raise TargetError(f"asked for top{k} but the model has {logits.shape[1]} classes")
        return logits.detach().topk(k, dim=1).indices
    if isinstance(target, bool):
        raise TargetError("target must be a class index, not a bool")
    if isinstance(target, int):
        out = torch.full((n, 1), target, dtype=torch.long, device=device)
    elif isinstance(target, torch.Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise TargetError(f"a target tensor must hold integers, got dtype {target.dtype}")
        out = target.to(device=device, dtype=torch.long)
        if out.dim() == 0:
            out = out.expand(n).reshape(n, 1)
        elif out.dim() == 1:
            out = out.reshape(-1, 1)
        if out.dim() != 2 or out.shape[0] != n:
            raise TargetError(
                f"target tensor must be (N,) or (N, T) with N={n}, got {tuple(target.shape)}"
            )
    elif isinstance(target, (list, tuple)):
        if len(target) != n:
            raise TargetError(
                f"a target list needs one entry per image ({n}), got {len(target)}; "
                "for several classes of one image pass [[c1, c2, ...]]"
            )
        rows = [list(t) if isinstance(t, (list, tuple)) else [t] for t in target]
        if len({len(r) for r in rows}) != 1 or not rows[0]:
            raise TargetError("every image needs the same (non-zero) number of targets")
        if not all(isinstance(c, int) and not isinstance(c, bool) for r in rows for c in r):
            raise TargetError(f"targets must be integers, got {target!r}")
        out = torch.tensor(rows, dtype=torch.long, device=device)
    else:
        raise TargetError(f"unsupported target {target!r}: use an int, a list, a tensor or 'top5'")
    if out.numel() and int(out.min()) < 0:
        raise TargetError(f"class indices must be >= 0, got {out.min().item()}")
    if logits is not None and out.numel() and int(out.max()) >= logits.shape[1]:
        raise TargetError(
            f"class {out.max().item()} is out of range: the model has {logits.shape[1]} classes"
        )
    return out
