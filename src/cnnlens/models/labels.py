"""Class names: ImageNet's from torchvision's metadata, or a user's label file."""

from __future__ import annotations

import json
import warnings
from functools import lru_cache
from pathlib import Path

from ..core.errors import ModelError


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, in index order (ship inside torchvision)."""
    from torchvision.models import ResNet50_Weights

    return tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def read_labels(path: str | Path) -> list[str]:
    """Class names from a file: one name per line, or a JSON list / {index: name} dict."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ModelError(f"cannot read labels file {path}: {e.strerror or e}") from None
    if path.suffix.lower() == ".json":
        try:
            return _json_labels(json.loads(text))
        except (ValueError, TypeError) as e:
            raise ModelError(f"labels file {path}: {e}") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def default_names(num_classes: int) -> list[str]:
    """ImageNet names for 1000-way models, ``class_i`` otherwise."""
    if num_classes == 1000:
        return list(imagenet_classes())
    return [f"class_{i}" for i in range(num_classes)]


class LabelsWarning(UserWarning):
    """A labels file whose number of names differs from the model's outputs."""


def check_label_count(count: int, outputs: int | None, source: str) -> None:
    """Warn (:class:`LabelsWarning`) when ``count`` names do not match ``outputs`` classes."""
    if not outputs or count == outputs:
        return
    if count < outputs:
        effect = f"outputs {count} to {outputs - 1} get generic names (class_{count}, ...)"
    else:
        effect = f"the last {count - outputs} names are never used"
    warnings.warn(
        f"{source} has {count} names but the model has {outputs} outputs: {effect}; "
        "check that the labels match the model's classes",
        LabelsWarning,
        stacklevel=3,
    )


def class_names_for(num_classes: int, net=None) -> list[str]:
    """Names for a model's outputs: ImageNet-1k's for 1000 classes; timm's own
    ImageNet subsets (21k, 12k, ...) when ``net`` is a timm model pretrained on one;
    ``class_i`` otherwise."""
    if num_classes != 1000 and net is not None and hasattr(net, "pretrained_cfg"):
        try:
            from timm.data import ImageNetInfo, infer_imagenet_subset

            subset = infer_imagenet_subset(net)
            info = ImageNetInfo(subset) if subset else None
        except Exception:  # not a timm model after all, or an older timm
            info = None
        if info is not None and info.num_classes() == num_classes:
            return [info.index_to_description(i) for i in range(num_classes)]
    return default_names(num_classes)


def _name(value) -> str:
    # Keras-style entries are [wordnet_id, name]: keep the name.
    if isinstance(value, (list, tuple)) and value:
        return str(value[-1])
    return str(value)


def _json_labels(data) -> list[str]:
    """A JSON list, or an {index: name} dict (gaps filled with ``class_i``)."""
    if isinstance(data, dict):
        indexed = {int(k): _name(v) for k, v in data.items()}
        if not indexed:
            return []
        if min(indexed) < 0:
            raise ValueError("class indices must be >= 0")
        return [indexed.get(i, f"class_{i}") for i in range(max(indexed) + 1)]
    if isinstance(data, list):
        return [_name(v) for v in data]
    raise ValueError("expected a JSON list of names or an {index: name} object")
