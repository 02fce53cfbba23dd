"""Every attribution method, and the calls that find and run them.

Importing this module imports each method module once, which fills the
registry (as timm's ``models/__init__`` does); nothing in :mod:`cnnlens.core`
imports it back. :func:`attribute` looks a method up by name (or alias), runs it
with the model in eval mode and its parameters frozen, and restores the
model's state afterwards, exceptions included.
"""

from __future__ import annotations

import inspect
import time

import torch

from .attribution import (  # noqa: F401  (importing registers the methods)
    cam,
    cam_ablation,
    cam_eigen,
    cam_gradients,
    cam_variants,
    deeplift,
    excitation,
    fullgrad,
    gradient,
    gradient_shap,
    guided,
    integrated,
    kernel_shap,
    lime,
    lrp,
    occlusion,
    rise,
    shapley,
    smoothgrad,
    transformer,
)
from .core.errors import MethodError
from .core.explanation import Explanation
from .core.hooks import preserved
from .core.registry import MethodInfo, lookup, registered
from .models.base import LoadedModel
from .perturbation import extremal, game  # noqa: F401  (registers "extremal", "meaningful_perturbation")
from .targets.running import plan


def list_methods(pattern: str = "*") -> list[MethodInfo]:
    """Registered methods whose name matches the shell-style ``pattern``, sorted by name."""
    return registered(pattern)


def method_names() -> list[str]:
    """Just the names, in registry order (sorted)."""
    return [m.name for m in registered()]


def get_method(name: str) -> MethodInfo:
    """The method registered as ``name`` (or an alias of it).

    Raises:
        MethodError: unknown name; the message lists the closest and all valid names.
    """
    return lookup(name)


def _check_input(x: torch.Tensor, model: LoadedModel) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a tensor (use model.preprocess(image)), got {type(x).__name__}")
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise ValueError(f"x must be (N, C, H, W), got shape {tuple(x.shape)}")
    if x.device != model.device:
        raise ValueError(
            f"x is on {x.device} but the model is on {model.device}; move one of them "
            "(model.to(device) or x.to(device))"
        )
    return x


def _bind_params(fn, method: str, params: dict) -> dict:
    sig = inspect.signature(fn)
    accepted = [p for p in list(sig.parameters)[3:]]
    unknown = [k for k in params if k not in accepted]
    if unknown:
        raise MethodError(
            f"method {method!r} has no parameter {', '.join(map(repr, unknown))}; "
            f"it takes {', '.join(accepted) or 'none'}"
        )
    merged = {k: sig.parameters[k].default for k in accepted}
    merged.update(params)
    return merged


def attribute(
    model, x: torch.Tensor, method: str = "gradcam", target=None, **params
) -> Explanation:
    """Explain the model's output on ``x`` with a registered method.

    Args:
        model: a :class:`LoadedModel` or a bare ``nn.Module`` (inputs taken as normalised),
            a classifier or, with a target object, any model (segmentation, detection).
        x: ``(N, 3, H, W)`` (or ``(3, H, W)``) input on the model's device.
        method: a name from :func:`cnnlens.list_methods`.
        target: ``None`` (top-1), a class index, one entry per image, a tensor,
            or ``"top5"``-style strings; or a target object of :mod:`cnnlens.targets`
            (``EmbeddingSimilarity(ref)``, ``SegmentationRegion(c)``, ...), one per image,
            or a list of them per image.
        **params: the method's own parameters (``layer``, ``window``, ...).

    Returns:
        An :class:`Explanation` with ``maps (N, T, H, W)`` on ``x``'s device. For target
        objects ``targets`` holds each one's class index (-1 when it has none) and
        ``extras["target"]`` their descriptions.

    Raises:
        MethodError: also for a target object the method's maths cannot explain
            (``MethodInfo.targets == "output"``: CAM, excitation backprop).
    """
    model = LoadedModel.wrap(model)
    info = get_method(method)
    x = _check_input(x, model)
    merged = _bind_params(info.fn, method, params)
    start = time.perf_counter()
    # Gradients are switched on even inside a caller's torch.no_grad() block.
    with preserved(model.net), torch.enable_grad():
        run = plan(info, model, x, target, params)
        if run is None:
            out = info.fn(model, x, target, **params)
        else:
            out = run.call(info, x)
            if "score" in run.params:  # the score the targets set
                merged["score"] = run.params["score"]
    seconds = time.perf_counter() - start
    extras = dict(out.extras)
    signed = bool(extras.pop("signed", info.signed))
    return Explanation(
        maps=out.maps,
        targets=out.targets,
        method=method,
        params=merged,
        seconds=seconds,
        signed=signed,
        extras=extras,
        inputs=x,
    )
