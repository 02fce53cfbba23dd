"""Hugging Face ``transformers`` image classifiers from a local folder, never the network.

``load_model("hf:DIR")`` (or just ``DIR`` when it holds a ``config.json``) builds
``AutoModelForImageClassification`` from the folder ``save_pretrained`` wrote:

- ``weights="default"``: the folder's own weights (``model.safetensors`` or
  ``pytorch_model.bin``), read with ``local_files_only=True``;
- ``weights="none"``: random weights from ``config.json`` alone (no weights file needed);
- ``weights=FILE``: random weights from the config, then the state dict in ``FILE``.

``DIR`` may also name the config file itself (``hf:DIR/config.json``). The network
is wrapped in :class:`HFClassifier`, so it maps ``(N, 3, H, W)`` to logits and its
layers keep transformers' names under ``model.`` (``model.convnext.encoder.stages.3``).
Preprocessing comes from ``preprocessor_config.json`` and class names from
``config.id2label`` (see :mod:`cnnlens.models.hfprocessor`). Models that need their
own code (``trust_remote_code``) are refused: cnnlens does not run downloaded code.
"""

from __future__ import annotations

import copy
import inspect
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from ..core.errors import ModelError
from ..core.optional import require
from .base import LoadedModel
from .checkpoints import first_line
from .hfprocessor import PROCESSOR_FILE, class_names_from, preprocess_from, read_processor_config
from .statedict import load_state_into

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


class HFClassifier(nn.Module):
    """A transformers image classifier as a plain network: ``(N, 3, H, W)`` -> logits.

    The transformers model is the submodule ``model``, so its layers are
    ``model.<transformers name>``. Inputs whose size differs from the config's
    ``image_size`` are passed with ``interpolate_pos_encoding=True`` when the model
    takes it (ViT, DeiT, Swin, BEiT), so position embeddings follow the input grid.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.num_classes = int(model.config.num_labels)
        size = getattr(model.config, "image_size", None)
        self._image_size = (size, size) if isinstance(size, int) else tuple(size or ())
        params = inspect.signature(model.forward).parameters
        self._interpolates = "interpolate_pos_encoding" in params

    @property
    def config(self):
        """The transformers config (``model.config``)."""
        return self.model.config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kwargs = {}
        if self._interpolates and tuple(x.shape[-2:]) != self._image_size:
            kwargs["interpolate_pos_encoding"] = True
        out = self.model(pixel_values=x, **kwargs)
        logits = getattr(out, "logits", None)
        return logits if logits is not None else out[0]


@contextmanager
def _quiet(transformers):
    """transformers' info logs and progress bars off for the call, restored after."""
    log = transformers.utils.logging
    level, bars = log.get_verbosity(), log.is_progress_bar_enabled()
    log.set_verbosity_error()
    log.disable_progress_bar()
    try:
        yield
    finally:
        log.set_verbosity(level)
        if bars:
            log.enable_progress_bar()


def _folder_and_config(target: str) -> tuple[Path, Path]:
    """(model folder, config file) for ``hf:`` + ``target``."""
    path = Path(target).expanduser()
    if path.is_file():
        return path.parent, path
    if path.is_dir():
        config = path / "config.json"
        if not config.is_file():
            raise ModelError(
                f"{path} has no config.json; point hf: at a folder written by a transformers "
                "model's save_pretrained (config.json, model.safetensors)"
            )
        return path, config
    raise ModelError(
        f"hf:{target}: no such folder; cnnlens loads Hugging Face models from a local folder "
        "and never downloads: save the model there first (save_pretrained, or the hub's "
        "download command with --local-dir)"
    )


def _read_config(transformers, config_file: Path):
    try:
        config = transformers.AutoConfig.from_pretrained(
            str(config_file), local_files_only=True, trust_remote_code=False
        )
    except Exception as e:
        raise ModelError(f"{config_file} is not a transformers config ({first_line(e)})") from None
    mapping = getattr(transformers.AutoModelForImageClassification, "_model_mapping", None)
    if mapping is not None and type(config) not in mapping:
        raise ModelError(
            f"{config_file}: transformers has no image classifier for model type "
            f"{getattr(config, 'model_type', '?')!r}; cnnlens loads image classifiers "
            "(ViT, DeiT, Swin, ConvNeXt, ResNet, ...) built by AutoModelForImageClassification"
        )
    if getattr(config, "architectures", None) is None:
        # transformers picks the class from `architectures` and fails on None
        config.architectures = []
    return config


def _from_config(transformers, config) -> nn.Module:
    try:
        return transformers.AutoModelForImageClassification.from_config(
            config, trust_remote_code=False
        )
    except Exception as e:
        raise ModelError(f"transformers cannot build this model ({first_line(e)})") from None


def _from_folder(transformers, folder: Path, config) -> nn.Module:
    if not any((folder / f).is_file() for f in WEIGHT_FILES):
        raise ModelError(
            f"{folder} has no weights file ({', '.join(WEIGHT_FILES[::2])}); pass --weights none "
            "for random weights from config.json, or --weights FILE"
        )
    try:
        model, info = transformers.AutoModelForImageClassification.from_pretrained(
            str(folder),
            config=config,
            local_files_only=True,
            trust_remote_code=False,
            output_loading_info=True,
        )
    except Exception as e:
        raise ModelError(f"could not load the model in {folder} ({first_line(e)})") from None
    missing = sorted(map(str, info.get("missing_keys") or ())) + sorted(
        map(str, info.get("mismatched_keys") or ())
    )
    if missing:
        shown = ", ".join(str(k) for k in missing[:3])
        raise ModelError(
            f"the weights in {folder} lack {len(missing)} tensors of "
            f"{type(model).__name__} (e.g. {shown}), which transformers would fill with random "
            "values; save the fine-tuned classifier itself, or pass --weights none"
        )
    return model


def _rebuilt(transformers, config, num_labels: int) -> nn.Module:
    other = copy.deepcopy(config)
    other.num_labels = num_labels
    return _from_config(transformers, other)


def load_hf(target: str, weights, trust: bool) -> LoadedModel:
    """Load the Hugging Face image classifier ``hf:target`` (see the module docstring).

    Args:
        target: the folder (or its config file), without the ``hf:`` prefix.
        weights: ``"default"`` (the folder's weights), None (random), or a state dict file.
        trust: allow a pickled weights file (``weights=FILE`` only).

    Raises:
        MissingExtraError: transformers is not installed.
        ModelError: no such folder, not an image classifier, no or incomplete weights.
        CheckpointError: a ``weights`` file that does not fit the model.
    """
    transformers = require("transformers", "Hugging Face models")
    folder, config_file = _folder_and_config(target)
    with _quiet(transformers):
        model = _build(transformers, folder, config_file, weights, trust)
    image_size = getattr(model.config, "image_size", None)
    proc = read_processor_config(folder)
    spec = preprocess_from(
        proc, image_size if isinstance(image_size, int) else None, str(folder / PROCESSOR_FILE)
    )
    names = class_names_from(model.config.id2label, int(model.config.num_labels))
    return LoadedModel(HFClassifier(model), spec, names, f"hf:{folder.resolve().name}")


def _build(transformers, folder: Path, config_file: Path, weights, trust: bool) -> nn.Module:
    """The transformers model with the weights asked for, float32, in eval mode."""
    config = _read_config(transformers, config_file)
    if weights == "default":
        model = _from_folder(transformers, folder, config)
    else:
        model = _from_config(transformers, config)
        if weights is not None:
            model = load_state_into(
                model,
                Path(weights).expanduser(),
                trust,
                label=f"the Hugging Face {config.model_type} model in {folder}",
                rebuild=lambda k: _rebuilt(transformers, config, k),
            )
    if any(p.is_floating_point() and p.dtype != torch.float32 for p in model.parameters()):
        model = model.float()  # cnnlens computes in float32, whatever the file stored
    return model.eval()
