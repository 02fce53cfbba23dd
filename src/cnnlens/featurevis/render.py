"""Activation maximisation: render many objectives in one batch.

Each objective gets its own image (or ``images_per_objective`` images), all
optimised together in one batch: image ``i`` ascends the gradient of its own
objective only, because the loss is the sum of per-image scores and images do
not interact in an eval-mode CNN (except through ``diversity``, which is taken
within each objective's group). Every step:

    x   = image_param()                  # (B, 3, H, W) in (0, 1)
    x'  = transforms(x)                  # random pad / jitter / scale / rotate
    A   = activations of net((x' - mean) / std)
    loss = -sum_i objective_i(A[rows of i])
    Adam step on the parameters of x

Defaults follow Olah et al. 2017 ("Feature visualization", Distill) and its
Lucid code base: 128 px, 512 steps, Adam with learning rate 0.05, a Fourier
parameterisation in decorrelated colour space and the standard robustness
transforms; docs/featurevis.md records how they behave on the bundled model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core import progress
from ..core.hooks import preserved
from ..models.base import LoadedModel
from .engine import forward_fn, probe, views_for
from .objectives import Activations, Objective, as_objective
from .params import PARAMS, ImageParam
from .transforms import as_transform

ObjectiveSpec = Objective | str


@dataclass
class Dream:
    """The result of :func:`dream`.

    Attributes:
        images: ``(N * k, 3, H, W)`` in [0, 1] on the model's device; the ``k =
            images_per_objective`` images of objective ``i`` are rows ``i*k .. i*k+k-1``.
        objectives: the ``N`` objectives, in order.
        scores: ``(steps, N * k)``: each image's objective value at each step (on the
            transformed image the network saw at that step).
        params: every setting, for reports and reproduction.
        seconds: wall-clock time of the optimisation.
    """

    images: torch.Tensor
    objectives: list[Objective]
    scores: torch.Tensor
    params: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def descriptions(self) -> list[str]:
        return [o.description for o in self.objectives]


def _objectives(objectives: ObjectiveSpec | Sequence[ObjectiveSpec]) -> list[Objective]:
    if isinstance(objectives, (str, Objective)):
        objectives = [objectives]
    objs = [as_objective(o) for o in objectives]
    if not objs:
        raise ValueError("render needs at least one objective")
    return objs


def _param_factory(param) -> Callable[..., ImageParam]:
    if callable(param):
        return param
    if param not in PARAMS:
        raise ValueError(f"param must be one of {', '.join(PARAMS)} or a callable, got {param!r}")
    return PARAMS[param]


def _default_batch(device: torch.device) -> int:
    return 64 if device.type == "cuda" else 32


def dream(
    model: LoadedModel | nn.Module,
    objectives: ObjectiveSpec | Sequence[ObjectiveSpec],
    *,
    steps: int = 512,
    size: int = 128,
    seed: int = 0,
    lr: float = 0.05,
    param: str | Callable[..., ImageParam] = "fourier",
    decorrelate: bool | None = None,
    transforms: Any = "standard",
    images_per_objective: int = 1,
    batch_size: int | None = None,
    optimizer: str = "adam",
    init: torch.Tensor | None = None,
    input_size: int | None = None,
) -> Dream:
    """Optimise one image per objective (or several), all in one batch.

    Args:
        model: a ``LoadedModel`` (its mean/std normalise the images) or a bare module.
        objectives: objectives or ``"layer:channel"`` strings (``"logits:k"``: class k).
        steps: optimisation steps (0 returns the starting images).
        size: image side in pixels.
        seed: fixes the start and every random transform (same seed, same images on CPU).
        lr: learning rate.
        param: ``"fourier"``, ``"pixel"``, ``"dense"`` or a factory
            ``(n, size, *, generator, device, init, ...) -> ImageParam``.
        decorrelate: optimise in decorrelated colour space (default: the
            parameterisation's own default; ``True`` for fourier and pixel).
        transforms: ``"standard"``, ``"none"``, a transform or a list of them.
        images_per_objective: images rendered for each objective (for ``diversity``).
        batch_size: images per optimisation batch (default 32 on CPU, 64 on CUDA);
            rounded down to a multiple of ``images_per_objective``.
        optimizer: ``"adam"`` or ``"sgd"`` (the seeds' generator recipe).
        init: start images in [0, 1], ``(N * k, 3, size, size)`` or ``(1, 3, size, size)``.
        input_size: resize the transformed images to this side (bilinear) before the
            network; ``None`` feeds them as they are (the network is fully convolutional).

    Progress: a :mod:`cnnlens.core.progress` task ``"dream <layers>"`` of ``steps`` times
    the number of batches, advanced after every optimisation step (all steps cost the
    same, so a front end can estimate the time left from the first few).

    Returns:
        A :class:`Dream`.
    """
    loaded = LoadedModel.wrap(model)
    net = loaded.net
    objs = _objectives(objectives)
    k = int(images_per_objective)
    if k < 1 or steps < 0:
        raise ValueError("images_per_objective must be >= 1 and steps >= 0")
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    factory = _param_factory(param)
    transform = as_transform(transforms)
    device = loaded.device
    total = len(objs) * k
    if init is not None:
        init = init.detach().to(device, torch.float32)
        if (
            init.dim() != 4
            or tuple(init.shape[1:]) != (3, size, size)
            or (init.shape[0] not in (1, total))
        ):
            raise ValueError(
                f"init must hold {total} or 1 image(s) of shape (3, {size}, {size}), "
                f"got {tuple(init.shape)}"
            )
        if init.shape[0] == 1 and total > 1:
            init = init.expand(total, *init.shape[1:])
    batch = batch_size or _default_batch(device)
    per_batch = max(1, batch // k)
    layers = sorted(set().union(*(o.layers for o in objs)))
    norm = loaded.preprocess_spec.normalize
    extra = {} if decorrelate is None else {"decorrelate": decorrelate}
    rng = torch.Generator().manual_seed(int(seed))
    images, scores = [], []
    start = time.perf_counter()
    chunks = [objs[i : i + per_batch] for i in range(0, len(objs), per_batch)]
    with preserved(net), torch.enable_grad():
        side = input_size or size
        grey = torch.full((1, 3, side, side), 0.5, device=device)
        views = views_for(net, layers, (3, side, side))
        shapes, reused = probe(net, layers, norm(grey), views)
        for o in objs:
            o.check(shapes)
        with (
            forward_fn(net, layers, early_stop=not reused, views=views) as fwd,
            progress.task(f"dream {', '.join(layers)}", steps * len(chunks)) as advance,
        ):
            done = 0
            for chunk in chunks:
                n = len(chunk) * k
                p = factory(
                    n,
                    size,
                    generator=rng,
                    device=device,
                    init=None if init is None else init[done : done + n],
                    **extra,
                )
                opt = _optimizer(optimizer, p.params, lr)
                history = []
                for _ in range(steps):
                    img = p()
                    seen = transform(img, rng)
                    if input_size is not None:
                        seen = F.interpolate(seen, size=(input_size, input_size), mode="bilinear")
                    acts = fwd(norm(seen))
                    acts.image = img
                    values = _scores(chunk, acts, k)
                    opt.zero_grad(set_to_none=True)
                    (-values.sum()).backward()
                    opt.step()
                    history.append(values.detach())
                    advance(1)
                with torch.no_grad():
                    images.append(p().detach())
                scores.append(torch.stack(history) if history else torch.empty(0, n))
                done += n
    params = {
        "steps": steps,
        "size": size,
        "seed": seed,
        "lr": lr,
        "param": getattr(param, "__name__", str(param)),
        "decorrelate": decorrelate
        if decorrelate is not None or not isinstance(param, str)
        else param != "dense",
        "transforms": repr(transform),
        "images_per_objective": k,
        "batch_size": batch,
        "optimizer": optimizer,
        "init": init is not None,
        "input_size": input_size,
    }
    return Dream(
        images=torch.cat(images),
        objectives=objs,
        scores=torch.cat([s.to("cpu") for s in scores], dim=1),
        params=params,
        seconds=time.perf_counter() - start,
    )


def _optimizer(name: str, params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    return torch.optim.Adam(params, lr=lr)


def _scores(objs: Sequence[Objective], acts: Activations, k: int) -> torch.Tensor:
    """Objective ``i`` on its own rows ``i*k .. i*k+k-1``, concatenated: ``(len(objs) * k,)``."""
    if len(objs) == 1:
        return objs[0](acts)
    return torch.cat([o(acts.rows(slice(i * k, (i + 1) * k))) for i, o in enumerate(objs)])


def render(
    model: LoadedModel | nn.Module,
    objectives: ObjectiveSpec | Sequence[ObjectiveSpec],
    *,
    steps: int = 512,
    seed: int = 0,
    **kwargs: Any,
) -> torch.Tensor:
    """``cl.featurevis.render(model, ["blocks.3:7", "logits:285"], steps=512, seed=0)``.

    The images of :func:`dream` (same arguments): ``(N * images_per_objective, 3, H, W)``
    in [0, 1], one per objective, in order.
    """
    return dream(model, objectives, steps=steps, seed=seed, **kwargs).images


@torch.no_grad()
def evaluate(
    model: LoadedModel | nn.Module,
    objectives: ObjectiveSpec | Sequence[ObjectiveSpec],
    images: torch.Tensor,
    *,
    images_per_objective: int = 1,
) -> torch.Tensor:
    """Each objective's value on its own images, untransformed: ``(N * k,)``.

    Regularisers see ``images`` as the rendered image. Use it to compare a
    dream with its starting point (``dream(..., steps=0)``) or with a photo.
    """
    loaded = LoadedModel.wrap(model)
    objs = _objectives(objectives)
    k = int(images_per_objective)
    if images.shape[0] != len(objs) * k:
        raise ValueError(
            f"{len(objs)} objective(s) x {k} image(s) each need {len(objs) * k} images, "
            f"got {images.shape[0]}"
        )
    images = images.to(loaded.device, torch.float32)
    layers = sorted(set().union(*(o.layers for o in objs)))
    norm = loaded.preprocess_spec.normalize
    views = views_for(loaded.net, layers, tuple(images.shape[1:]))
    with preserved(loaded.net), forward_fn(loaded.net, layers, views=views) as fwd:
        acts = fwd(norm(images))
        acts.image = images
        return _scores(objs, acts, k)


@torch.no_grad()
def channel_means(model: LoadedModel | nn.Module, images: torch.Tensor, layer: str) -> torch.Tensor:
    """Mean activation of every channel of ``layer`` for each image: ``(N, C)``.

    ``channel_means(model, dreams, "blocks.3")[i, j]`` is how strongly dream ``i``
    drives channel ``j``: the specificity matrix of a set of channel dreams.
    """
    loaded = LoadedModel.wrap(model)
    images = images.to(loaded.device, torch.float32)
    norm = loaded.preprocess_spec.normalize
    views = views_for(loaded.net, [layer], tuple(images.shape[1:]))
    with preserved(loaded.net), forward_fn(loaded.net, [layer], views=views) as fwd:
        a = fwd(norm(images))[layer]
    return a.flatten(2).mean(dim=2)
