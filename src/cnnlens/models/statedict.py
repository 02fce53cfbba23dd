"""Fitting a state dict to a network: unwrapping, head rebuilds, and saying why not."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..core.errors import CheckpointError
from .checkpoints import read_checkpoint


def unwrap_state(obj, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a state dict, a ``{"state_dict": ...}`` wrapper or a module;
    a ``module.`` prefix (DataParallel) is dropped."""
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model", "net"):
            inner = obj.get(key)
            if isinstance(inner, nn.Module):
                inner = inner.state_dict()
            if (
                isinstance(inner, dict)
                and inner
                and all(isinstance(v, torch.Tensor) for v in inner.values())
            ):
                obj = inner
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{path} does not contain a state dict of tensors; save one with "
            "torch.save(model.state_dict(), path)"
        )
    prefix = "module."
    if obj and all(k.startswith(prefix) for k in obj):
        obj = {k[len(prefix) :]: v for k, v in obj.items()}
    return obj


def head_mismatch(state: dict, own: dict) -> list[str]:
    """Keys whose shapes differ only as a classifier head of another size would
    (all 1- or 2-D); empty when shapes agree or something else differs."""
    wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    return wrong if all(own[k].dim() <= 2 for k in wrong) else []


def fits(state: dict, own: dict) -> bool:
    """Whether ``state`` has ``own``'s keys with its shapes, but perhaps another head size."""
    if set(state) != set(own):
        return False
    wrong = [k for k in state if own[k].shape != state[k].shape]
    return not wrong or bool(head_mismatch(state, own))


#: (advice when the weights fit it, builder of that other architecture)
Alternative = tuple[str, Callable[[], nn.Module]]


def load_state_into(
    net: nn.Module,
    path: Path,
    trust: bool,
    *,
    label: str,
    rebuild: Callable[[int], nn.Module] | None = None,
    alternatives: tuple[Alternative, ...] = (),
) -> nn.Module:
    """Load the weights file ``path`` into ``net`` (rebuilt for another head size).

    ``label`` names the architecture in messages (``"torchvision's resnet18"``). When
    the weights do not fit but fit one of ``alternatives`` (built on the meta
    device: no memory, no init cost), the error gives that alternative's advice.
    """
    state = unwrap_state(read_checkpoint(path, trust), path)
    own = net.state_dict()
    heads = head_mismatch(state, own)
    if heads and rebuild is not None:
        net = rebuild(int(state[heads[0]].shape[0]))
        own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in state if k in own and own[k].shape != state[k].shape]
    if not (missing or unexpected or wrong):
        net.load_state_dict(state)
        return net
    for advice, build in alternatives:
        try:
            with torch.device("meta"):
                other = build().state_dict()
        except Exception:
            continue
        if fits(state, other):
            raise CheckpointError(f"{path}: {advice}")
    parts = []
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if keys:
            parts.append(f"{len(keys)} {what} (e.g. {', '.join(keys[:3])})")
    raise CheckpointError(
        f"{path} does not fit {label}: {'; '.join(parts)}. "
        "Check that the model name is the architecture the weights were saved from."
    )
