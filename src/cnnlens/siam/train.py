"""Multi-task training of SIAM models (Marcos, Lobry & Tuia 2019, arXiv 1909.08442).

The loss of a batch is

    L = lambda_a * BCE(presence_logits, a) + lambda_y * L_task(y_hat, y)
        + lambda_1 * mean |tau|

with ``a`` the image-level attribute labels (in [0, 1]; NaN where unknown),
``L_task`` the mean squared error (regression) or cross-entropy (classification;
label ``-1`` where unknown) and ``tau`` the spatial templates. Each term is
averaged over the samples that carry its label, so one dataset with both label
kinds, or two datasets (attributes only, task only) whose batches alternate,
train the same way. Adam with a step schedule (the rate times ``gamma`` every
``step`` epochs).

The default keeps the backbone frozen: its features are computed once
(:func:`extract_features`) and only the head trains, which takes seconds on a
CPU. With ``freeze=False`` the inputs are images and the trunk fine-tunes too (its
batch-norm statistics stay fixed). A checkpoint (plain state dicts, a JSON-able
config, the history) is written atomically after every epoch; ``resume=True``
continues from it. Epoch ``e`` shuffles with a generator seeded by
``(seed, e)``, so a resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..core.atomic import write_bytes_atomic
from ..core.hooks import preserved
from ..core.progress import task
from .model import SiamConfig, SiamModel


@dataclass
class SiamData:
    """Training or evaluation samples.

    Attributes:
        inputs: ``(N, C, h, w)`` float trunk features, or ``(N, 3, S, S)`` uint8 images.
        attributes: ``(N, K)`` float labels in [0, 1], NaN where unknown; or None.
        target: ``(N,)`` float (regression, NaN unknown) or long (classification, -1
            unknown); or None.
    """

    inputs: torch.Tensor
    attributes: torch.Tensor | None = None
    target: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.inputs)

    @property
    def are_images(self) -> bool:
        return self.inputs.dtype == torch.uint8

    def subset(self, idx: torch.Tensor) -> SiamData:
        pick = lambda t: None if t is None else t[idx]  # noqa: E731
        return SiamData(self.inputs[idx], pick(self.attributes), pick(self.target))


@dataclass
class TrainSettings:
    epochs: int = 100
    batch_size: int = 64
    lr: float = 0.01
    trunk_lr: float = 1e-4
    step: int = 40
    gamma: float = 0.3
    attribute_weight: float = 1.0
    task_weight: float = 1.0
    l1: float = 1e-3
    freeze: bool = True
    seed: int = 0


def images_to_input(model: SiamModel, images: torch.Tensor) -> torch.Tensor:
    """``(N, 3, S, S)`` uint8 -> normalised float input on the model's device."""
    device = next(model.head.parameters()).device
    return model.normalize(images.to(device).float() / 255.0)


@torch.no_grad()
def extract_features(model: SiamModel, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Frozen trunk features ``(N, C, h, w)`` of ``(N, 3, S, S)`` uint8 images.

    The trunk runs in eval mode; its training flags are restored afterwards.
    """
    parts = []
    with preserved(model.trunk, freeze=False), task("siam features", len(images)) as advance:
        for i in range(0, len(images), batch_size):
            chunk = images[i : i + batch_size]
            parts.append(model.trunk(images_to_input(model, chunk)))
            advance(len(chunk))
    return torch.cat(parts) if parts else torch.zeros(0)


def losses(model: SiamModel, batch: SiamData) -> dict[str, torch.Tensor]:
    """The loss terms of one batch (module docstring); ``"loss"`` is their weighted sum."""
    feats = batch.inputs
    if batch.are_images:
        feats = model.trunk(images_to_input(model, feats))
    else:
        feats = feats.to(next(model.head.parameters()).device)
    out = model.head(feats)
    zero = out.output.sum() * 0.0
    terms = {"attributes": zero, "task": zero, "l1": zero}
    if batch.attributes is not None:
        a = batch.attributes.to(out.presence_logits.device)
        known = ~torch.isnan(a)
        if known.any():
            bce = F.binary_cross_entropy_with_logits(
                out.presence_logits[known], a[known].float(), reduction="mean"
            )
            terms["attributes"] = bce
    if batch.target is not None:
        y = batch.target.to(out.output.device)
        if model.config.task == "regression":
            known = ~torch.isnan(y)
            if known.any():
                terms["task"] = F.mse_loss(out.output[known, 0], y[known].float())
        else:
            known = y >= 0
            if known.any():
                terms["task"] = F.cross_entropy(out.output[known], y[known].long())
    if model.config.pooling == "templates":
        terms["l1"] = model.head.template_values().abs().mean()
    return terms


def _labelled(model: SiamModel, batch: SiamData) -> set[str]:
    """The loss terms this batch carries labels for."""
    have = {"l1"} if model.config.pooling == "templates" else set()
    if batch.attributes is not None and not torch.isnan(batch.attributes).all():
        have.add("attributes")
    if batch.target is not None:
        y = batch.target
        known = ~torch.isnan(y) if y.is_floating_point() else y >= 0
        if known.any():
            have.add("task")
    return have


def _batches(sets: Sequence[SiamData], batch_size: int, gen: torch.Generator):
    """Shuffled batches; with several sets, their batches alternate (A, B, A, B, ...)."""
    orders = [torch.randperm(len(s), generator=gen) for s in sets]
    chunks = [[o[i : i + batch_size] for i in range(0, len(o), batch_size)] for o in orders]
    for i in range(max(len(c) for c in chunks)):
        for s, c in zip(sets, chunks):
            if c:
                yield s.subset(c[i % len(c)])


def _optimizer(model: SiamModel, settings: TrainSettings):
    groups = [{"params": list(model.head.parameters()), "lr": settings.lr}]
    if not settings.freeze:
        groups.append({"params": list(model.trunk.parameters()), "lr": settings.trunk_lr})
    opt = torch.optim.Adam(groups)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=settings.step, gamma=settings.gamma)
    return opt, sched


def train(
    model: SiamModel,
    sets: SiamData | Sequence[SiamData],
    settings: TrainSettings | None = None,
    *,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    callback: Callable[[int, int, dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` in place; returns the per-epoch history of mean losses.

    Args:
        model: a :class:`SiamModel`.
        sets: one :class:`SiamData`, or several whose batches alternate.
        settings: optimisation settings.
        checkpoint: file written after every epoch (and read with ``resume``).
        resume: continue from ``checkpoint`` if it exists.
        callback: ``callback(step, total_steps, running_losses)`` after every batch.
    """
    settings = settings or TrainSettings()
    sets = [sets] if isinstance(sets, SiamData) else list(sets)
    if not settings.freeze and not all(s.are_images for s in sets):
        raise ValueError("fine-tuning (freeze=False) needs images, not cached features")
    opt, sched = _optimizer(model, settings)
    history: list[dict[str, float]] = []
    start = 0
    if resume and checkpoint is not None and Path(checkpoint).exists():
        state = load_checkpoint(checkpoint, model)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        history, start = state["history"], state["epoch"]
    elif model.config.task == "regression" and not history:
        ys = torch.cat([s.target for s in sets if s.target is not None] or [torch.zeros(1)])
        ys = ys[~torch.isnan(ys)]
        with torch.no_grad():
            model.head.bias.fill_(float(ys.mean()) if len(ys) else 0.0)
    per_epoch = max(math.ceil(len(s) / settings.batch_size) for s in sets) * len(sets)
    total = per_epoch * settings.epochs
    model.trunk.eval()  # batch-norm statistics stay fixed, also when fine-tuning
    for p in model.trunk.parameters():
        p.requires_grad_(not settings.freeze)
    with task("siam train", total) as advance:
        advance(per_epoch * start)
        for epoch in range(start, settings.epochs):
            gen = torch.Generator().manual_seed(settings.seed * 100_003 + epoch)
            sums: dict[str, float] = {}
            counts: dict[str, int] = {}
            count = 0
            model.head.train()
            for batch in _batches(sets, settings.batch_size, gen):
                terms = losses(model, batch)
                labelled = _labelled(model, batch)
                loss = (
                    settings.attribute_weight * terms["attributes"]
                    + settings.task_weight * terms["task"]
                    + settings.l1 * terms["l1"]
                )
                opt.zero_grad()
                loss.backward()
                opt.step()
                count += 1
                for k, v in {"loss": loss, **terms}.items():
                    if k == "loss" or k in labelled:  # average each term where it exists
                        sums[k] = sums.get(k, 0.0) + float(v.detach())
                        counts[k] = counts.get(k, 0) + 1
                advance(1)
                if callback is not None:
                    running = {k: v / counts[k] for k, v in sums.items()}
                    callback(epoch * per_epoch + count, total, running)
            sched.step()
            model.head.eval()
            history.append({"epoch": epoch + 1, **{k: v / counts[k] for k, v in sums.items()}})
            if checkpoint is not None:
                save_checkpoint(checkpoint, model, opt, sched, epoch + 1, history, settings)
    return history


def save_checkpoint(
    path, model: SiamModel, opt=None, sched=None, epoch=0, history=(), settings=None
):
    """Write plain state dicts and the JSON-able config to ``path`` (atomically)."""
    state = {
        "config": model.config.to_dict(),
        "head": model.head.state_dict(),
        "trunk": None if settings is None or settings.freeze else model.trunk.state_dict(),
        "optimizer": opt.state_dict() if opt is not None else None,
        "scheduler": sched.state_dict() if sched is not None else None,
        "epoch": int(epoch),
        "history": list(history),
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return write_bytes_atomic(path, buf.getvalue())


def load_checkpoint(path, model: SiamModel | None = None) -> dict:
    """Read a checkpoint (``weights_only=True``); load it into ``model`` or build one.

    Returns the checkpoint dict with ``"model"`` set to the loaded :class:`SiamModel`.
    """
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if model is None:
        model = SiamModel(SiamConfig(**state["config"]))
    else:
        ours = model.config.to_dict()
        differ = [k for k, v in state["config"].items() if ours.get(k) != v]
        if differ:
            raise ValueError(
                f"{path} was trained with other settings: "
                + ", ".join(f"{k}={state['config'][k]!r} (model {ours.get(k)!r})" for k in differ)
            )
    model.head.load_state_dict(state["head"])
    if state.get("trunk") is not None:
        model.trunk.load_state_dict(state["trunk"])
    model.eval()
    state["model"] = model
    return state
