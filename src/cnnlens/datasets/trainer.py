"""A small CNN trained on the planted-evidence dataset, cached on disk.

Explanation methods are graded on this model: its evidence is known, so a map
that misses the object is the method's fault (on the clean variant), and a
model trained on the confounded variant should be caught looking at the cue.

The network is four conv-BN-ReLU blocks (one stride-2 stem, one 2x2 pool), so
the last feature map is a quarter of the input side (32x32 at 128 px) — fine
enough for Grad-CAM to point at a 15-pixel object — then global average
pooling and a linear layer (so CAM applies too). The input is the [0, 1] image
itself (mean 0, std 1): ``ds.tensors()`` images go straight into the model.

Weights are cached as safetensors in ``$CNNLENS_CACHE/planted`` (else
``$XDG_CACHE_HOME/cnnlens`` or ``~/.cache/cnnlens``), under a name that hashes
the generator's parameters, the confound and every training setting, so a
cached file is only ever reused for the model it would reproduce.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..core.atomic import atomic_write
from ..core.progress import reporting, task
from ..models.base import LoadedModel, Preprocess
from .cues import check_confound
from .dataset import PlantedDataset
from .planted import GENERATOR_VERSION, PlantedSpec
from .planted_nets import DEFAULTS, build, check_arch

MODEL_NAME = "planted-cnn"


def cache_dir() -> Path:
    """``$CNNLENS_CACHE``, else ``$XDG_CACHE_HOME/cnnlens``, else ``~/.cache/cnnlens``."""
    if os.environ.get("CNNLENS_CACHE"):
        return Path(os.environ["CNNLENS_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "cnnlens"
    return Path.home() / ".cache" / "cnnlens"


def _settings(spec, confound, epochs, n_train, batch_size, lr, width, seed, arch) -> dict:
    settings = {
        "generator": GENERATOR_VERSION,
        "spec": spec.to_dict(),
        "confound": confound,
        "epochs": epochs,
        "n_train": n_train,
        "batch_size": batch_size,
        "lr": lr,
        "width": width,
        "seed": seed,
    }
    if arch != "cnn":  # the CNN's cache names predate the other architectures
        settings["arch"] = arch
    return settings


def cache_path(settings: dict) -> Path:
    """Where the weights for these settings live: ``planted/<spec key>-<variant>-<hash>``."""
    spec_key = PlantedSpec(**_spec_fields(settings["spec"])).key()
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    variant = settings["confound"] or "clean"
    name = _model_name(settings.get("arch", "cnn"))
    return cache_dir() / "planted" / f"{name}-{spec_key}-{variant}-{digest}.safetensors"


def _model_name(arch: str) -> str:
    return MODEL_NAME if arch == "cnn" else f"planted-{arch}"


def _spec_fields(d: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def _wrap(net: nn.Module, spec: PlantedSpec, confound: str | None, arch: str) -> LoadedModel:
    net.eval()
    base = _model_name(arch)
    name = base if confound is None else f"{base}-{confound}"
    prep = Preprocess(crop=spec.size, resize=None, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    return LoadedModel(net=net, preprocess_spec=prep, class_names=spec.classes, name=name)


def _fit(net, images_u8, labels, *, epochs, batch_size, lr, seed, name) -> None:
    gen = torch.Generator().manual_seed(seed)
    n = len(labels)
    steps = max(1, epochs * (n // batch_size or 1))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
    # Channels-last convolutions train about 1.4x faster on CPU.
    net.to(memory_format=torch.channels_last).train()
    with task(f"training {name}", steps) as advance:
        done = 0
        for _ in range(epochs):
            order = torch.randperm(n, generator=gen)
            for start in range(0, max(1, n - batch_size + 1), batch_size):
                if done == steps:
                    break
                idx = order[start : start + batch_size]
                x = images_u8[idx].permute(0, 3, 1, 2).float().div_(255.0)
                x = x.contiguous(memory_format=torch.channels_last)
                loss = F.cross_entropy(net(x), labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                done += 1
                advance(1)
    net.to(memory_format=torch.contiguous_format).eval()


class _Silent:
    """A progress reporter that shows nothing (``progress=False``)."""

    def start(self, description: str, total: int):
        return lambda n=1: None

    def finish(self, description: str) -> None:
        return None


def _silenced(quiet: bool):
    """Hide progress reports inside the block when ``quiet``."""
    return reporting(_Silent()) if quiet else nullcontext()


def train_planted(
    spec: PlantedSpec | None = None,
    confound: str | None = None,
    *,
    epochs: int = 8,
    n_train: int = 4000,
    batch_size: int = 32,
    lr: float | None = None,
    width: int | None = None,
    seed: int = 0,
    cache: bool = True,
    progress: bool = True,
    arch: str = "cnn",
) -> LoadedModel:
    """Train (or load from the cache) the planted-evidence classifier.

    Args:
        spec: generator parameters (default ``PlantedSpec()``).
        confound: ``None`` (clean), ``"corner"`` or ``"brightness"``: which
            training set to use; the confounded model learns the shortcut.
        epochs, n_train, batch_size, lr: training schedule (AdamW, one-cycle);
            ``lr=None`` is the architecture's default (see ``planted_nets.DEFAULTS``).
        width: the CNN's first-block channels (the others have 2x and 4x), the
            ViT's token dimension, the ConvNeXt's first-stage channels; ``None``
            is the architecture's default.
        seed: seeds the initial weights and the batch order (training on CPU
            is deterministic for a given seed and thread count).
        cache: read and write the weights cache (see :func:`cache_dir`).
        progress: report data drawing and training steps through
            :func:`cnnlens.core.progress.task`.
        arch: ``"cnn"`` (the reference model), ``"vit"`` or ``"convnext"``
            (torchvision's classes at a small size, see ``planted_nets``).

    Returns:
        A :class:`~cnnlens.LoadedModel` in eval mode, on the CPU, whose inputs
        are [0, 1] images of side ``spec.size`` and whose class names are
        ``spec.classes``.
    """
    from safetensors.torch import load_file, save

    spec = spec or PlantedSpec()
    confound = check_confound(confound)
    defaults = DEFAULTS[check_arch(arch)]
    lr = defaults["lr"] if lr is None else lr
    width = defaults["width"] if width is None else width
    settings = _settings(spec, confound, epochs, n_train, batch_size, lr, width, seed, arch)
    path = cache_path(settings)
    with torch.random.fork_rng(devices=[]):  # seed the initial weights, not the caller's RNG
        torch.manual_seed(seed)
        net = build(arch, spec.n_classes, spec.size, width)
    if cache and path.is_file():
        try:
            net.load_state_dict(load_file(path))
            return _wrap(net, spec, confound, arch)
        except Exception as e:  # an unreadable cache entry is rebuilt, not fatal
            warnings.warn(f"retraining: cannot read cached weights {path} ({e})", stacklevel=2)

    with _silenced(not progress):
        arrays = PlantedDataset(spec, "train", n_train, confound).arrays(
            f"drawing {n_train} training images"
        )
        images, labels = torch.from_numpy(arrays["images"]), torch.from_numpy(arrays["labels"])
        _fit(
            net,
            images,
            labels,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            name=_model_name(arch),
        )
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
        meta = {"settings": json.dumps(settings, sort_keys=True)}
        atomic_write(path, lambda fh: fh.write(save(state, metadata=meta)))
    return _wrap(net, spec, confound, arch)


def predict_planted(model: LoadedModel, data: PlantedDataset, batch_size: int = 200):
    """Predicted class of every sample of ``data``: ``(N,)`` int64 tensor on the CPU.

    Images are normalised with the model's own mean and std, so any
    :class:`~cnnlens.LoadedModel` taking ``spec.size`` inputs works.
    """
    with _silenced(True):
        images = data.arrays()["images"]
    return _predict(model, images, batch_size)


def accuracy(model: LoadedModel, data: PlantedDataset, batch_size: int = 200) -> float:
    """Top-1 accuracy of ``model`` on ``data`` (0 for an empty dataset)."""
    with _silenced(True):
        arrays = data.arrays()
    pred = _predict(model, arrays["images"], batch_size)
    return float((pred == torch.from_numpy(arrays["labels"])).float().mean()) if len(data) else 0.0


@torch.no_grad()
def _predict(model: LoadedModel, images_u8, batch_size: int) -> torch.Tensor:
    from ..core.hooks import preserved

    images = torch.from_numpy(images_u8)
    preds = []
    with preserved(model.net):
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].permute(0, 3, 1, 2).float().div_(255.0)
            preds.append(
                model.net(model.preprocess_spec.normalize(x).to(model.device)).argmax(1).cpu()
            )
    return torch.cat(preds) if preds else torch.zeros(0, dtype=torch.int64)
