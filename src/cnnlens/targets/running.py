"""How :func:`cnnlens.attribute` runs a method for target objects.

Two routes, chosen per call:

* **plain**: every target reads one raw output unit (``ClassLogit``, ``ClassProbability``
  for methods with a ``score`` parameter, and ``Regression`` for methods that take only
  output units). The method runs on the
  model itself with those unit indices and ``score`` set to the targets' (``"logit"`` or
  ``"prob"``): exactly what ``target=c`` does, so every method, CAM and excitation
  backprop included, applies.
* **head**: any other target. The method runs on the model's
  :class:`~cnnlens.targets.base.TargetHead` with class index ``k`` for the ``k``-th
  distinct target, and ``score="logit"`` where it has a ``score`` parameter (the head's
  columns are the targets' own values; a softmax over them would mean nothing). Methods
  registered with ``targets="output"`` refuse, saying why and what works.

``Explanation.targets`` then holds each target's ``index`` (its class, or -1) and
``extras["target"]`` the targets' descriptions, per image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..core.errors import MethodError
from ..core.registry import MethodInfo, registered
from ..core.tensors import MethodOutput
from ..models.base import LoadedModel
from .base import Target, head_of, target_rows
from .kinds import ClassProbability, MultiLabel

_BEFORE = {ClassProbability: "softmax", MultiLabel: "sigmoid"}


@dataclass
class TargetRun:
    """One method call prepared for target objects (see the module docstring)."""

    model: LoadedModel
    net: nn.Module
    target: torch.Tensor
    params: dict
    indices: torch.Tensor
    names: list[list[str]]
    prepare: list[Target] = field(default_factory=list)

    def call(self, info: MethodInfo, x: torch.Tensor) -> MethodOutput:
        """Prepare the targets (no gradients), run the method, relabel its targets."""
        with torch.no_grad():
            for t in self.prepare:
                t.prepare(self.net, x)
        out = info.fn(self.model, x, self.target, **self.params)
        extras = {**out.extras, "target": self.names}
        return MethodOutput(out.maps, self.indices.to(out.targets.device), extras)


def plan(
    info: MethodInfo, model: LoadedModel, x: torch.Tensor, target, params: dict
) -> TargetRun | None:
    """The run of ``info`` for ``target``, or None when ``target`` holds no target object.

    Raises:
        MethodError: a method that explains only raw output units given another target, or
            a ``score`` parameter at odds with the targets.
        TargetError: a malformed list of targets.
    """
    rows = target_rows(target, x.shape[0])
    if rows is None:
        return None
    unique = list({id(t): t for row in rows for t in row}.values())
    names = [[t.describe() for t in row] for row in rows]
    indices = torch.tensor([[t.index for t in row] for row in rows], device=x.device)
    takes_score = "score" in info.defaults
    modes = {t.score_name for t in unique}
    units = all(t.unit is not None for t in unique) and len(modes) == 1
    direct = info.targets != "any" or all(t.plain for t in unique)
    if units and direct and (takes_score or modes == {"logit"}):
        plain = torch.tensor([[t.unit for t in row] for row in rows], device=x.device)
        if takes_score:
            params = _with_score(params, modes.pop(), unique[0])
        return TargetRun(model, model.net, plain, params, indices, names)
    if info.targets != "any":
        raise MethodError(_refusal(info, next(t for t in unique if t.unit is None or
                                              t.score_name != "logit")))  # fmt: skip
    column = {id(t): k for k, t in enumerate(unique)}
    cols = torch.tensor([[column[id(t)] for t in row] for row in rows], device=x.device)
    head = LoadedModel(
        net=head_of(model.net, unique),
        preprocess_spec=model.preprocess_spec,
        class_names=[t.describe() for t in unique],
        name=model.name,
    )
    if takes_score:
        params = _with_score(params, "logit", unique[0])
    return TargetRun(head, model.net, cols, params, indices, names, unique)


def _with_score(params: dict, mode: str, t: Target) -> dict:
    given = params.get("score")
    if given is not None and given != mode:
        raise MethodError(
            f"score={given!r} does not go with target {t.describe()!r}, which says itself what "
            "is explained: leave score out (ClassProbability(c) explains a class's probability)"
        )
    return {**params, "score": mode}


def _refusal(info: MethodInfo, t: Target) -> str:
    why = info.targets_reason or "it explains one raw output unit of the model"
    hint = ""
    if type(t) in _BEFORE:
        hint = f"ClassLogit({t.index}) explains the same unit before the {_BEFORE[type(t)]}; "
    others = ", ".join(m.name for m in registered() if m.targets == "any")
    return f"{info.name} cannot explain {t.describe()}: {why}. {hint}methods that can: {others}"
