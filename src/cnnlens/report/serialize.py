"""Machine-readable report outputs: JSON-safe conversion and ``maps.npz``.

Everything the HTML page shows is also written in a form a script can read back:
``results.json`` (predictions, targets, per-method parameters and timings, errors)
and ``maps.npz`` (the raw maps and targets of every method).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch

from ..core.atomic import atomic_write

# Tensors and arrays in ``extras`` larger than this are left out of results.json
# (masks, activations...): they belong in maps.npz or nowhere, not in a JSON file.
MAX_EXTRA_ELEMENTS = 256


def json_safe(value: Any) -> Any:
    """Convert ``value`` into something :func:`json.dumps` accepts, losing as little as possible.

    Tensors and arrays become (nested) lists, paths become strings, mappings and
    sequences are converted element by element, non-finite floats become ``None``
    and anything else falls back to its ``repr``.

    Args:
        value: any Python object (typically a method's parameter).

    Returns:
        A JSON-serialisable equivalent of ``value``.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, torch.Tensor):
        return json_safe(value.detach().cpu().tolist())
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        return json_safe(value.item())
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in value]
    return repr(value)


def _is_plain(value: Any) -> bool:
    """Whether ``value`` is built only from JSON's own types (no fallback needed)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    return False


def extras_subset(extras: Mapping[str, Any]) -> dict[str, Any]:
    """The part of an explanation's ``extras`` that is worth putting in JSON.

    Plain values (numbers, strings, lists and dicts of them), paths and small
    tensors or arrays are kept; large tensors and arbitrary objects are dropped.

    Args:
        extras: the ``Explanation.extras`` mapping.

    Returns:
        A JSON-safe dict with the kept entries.
    """
    kept: dict[str, Any] = {}
    for key, value in extras.items():
        if isinstance(value, (torch.Tensor, np.ndarray)):
            size = value.size if isinstance(value, np.ndarray) else value.numel()
            if size <= MAX_EXTRA_ELEMENTS:
                kept[str(key)] = json_safe(value)
        elif isinstance(value, (PurePath, np.generic)) or _is_plain(value):
            kept[str(key)] = json_safe(value)
    return kept


def write_maps_npz(
    path: Path, maps: Mapping[str, torch.Tensor], targets: Mapping[str, Any]
) -> None:
    """Save maps and targets per method with ``np.savez_compressed``, atomically.

    Keys are ``maps/<method>`` (float32, ``(N, T, H, W)``) and ``targets/<method>``
    (int64, ``(N, T)``).

    Args:
        path: destination ``.npz`` file; its folder must exist.
        maps: method key -> maps tensor.
        targets: method key -> targets tensor.
    """
    arrays: dict[str, np.ndarray] = {}
    for key, value in maps.items():
        arrays[f"maps/{key}"] = value.detach().cpu().float().numpy().astype(np.float32)
    for key, value in targets.items():
        arrays[f"targets/{key}"] = np.asarray(torch.as_tensor(value).cpu().numpy(), dtype=np.int64)
    atomic_write(path, lambda fh: np.savez_compressed(fh, **arrays))
