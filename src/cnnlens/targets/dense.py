"""Models seen by the explain pipeline for target kinds (``cnnlens explain --target KIND:``).

:class:`TargetedModel` names the maps of a target without a class (index -1) after the
target, so the report says "similarity to ref.png" rather than a class. :class:`DenseModel`
is one whose ``predict`` reads a segmentation map or detections instead of one row of
logits, so the explain pipeline and its report work unchanged: a segmentation model
"predicts" the classes with the largest mean probability over the pixels, a detection
model its highest-scoring detections (an image with fewer than ``k`` detections is padded
with class -1, probability 0).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from ..core.errors import TargetError
from ..core.hooks import preserved
from ..models.base import LoadedModel, Prediction
from .kinds import dense_output, detections


@dataclass(repr=False)
class TargetedModel(LoadedModel):
    """A loaded model whose label of index -1 is ``target_label``."""

    target_label: str = ""

    def label(self, index: int) -> str:
        if index == -1 and self.target_label:
            return self.target_label
        return super().label(index)

    @classmethod
    def of(cls, model: LoadedModel, target_label: str) -> TargetedModel:
        spec, names = model.preprocess_spec, list(model.class_names)
        return cls(model.net, spec, names, model.name, target_label=target_label)


@dataclass(repr=False)
class DenseModel(TargetedModel):
    """A segmentation or detection model with its preprocessing (``task`` says which)."""

    task: str = "segmentation"

    @torch.no_grad()
    def predict(self, x: torch.Tensor, top_k: int = 5) -> Prediction:
        with preserved(self.net):
            out = self.net(x)
        if self.task == "segmentation":
            probs = F.softmax(dense_output(out).float(), dim=1).mean((2, 3))
            p, idx = probs.topk(min(top_k, probs.shape[1]), dim=1)
        else:
            rows = []
            for det in detections(out, x.shape[0]):
                order = det["scores"].argsort(descending=True)[:top_k]
                labels = det.get("labels", torch.full_like(det["scores"], -1).long())
                found = [(int(labels[i]), float(det["scores"][i])) for i in order]
                rows.append(found + [(-1, 0.0)] * (top_k - len(found)))
            idx = torch.tensor([[c for c, _ in r] for r in rows], dtype=torch.long)
            p = torch.tensor([[s for _, s in r] for r in rows])
        labels = [[self.label(i) if i >= 0 else "no detection" for i in r] for r in idx.tolist()]
        return Prediction(indices=idx, probs=p, labels=labels)


def task_of(model: LoadedModel) -> str:
    """``"classification"``, ``"segmentation"`` or ``"detection"``, from one forward pass on a
    blank image at the model's input size."""
    size = model.preprocess_spec.crop
    x = torch.zeros(1, 3, size, size, device=model.device)
    with preserved(model.net), torch.no_grad():
        out = model.net(x)
    if isinstance(out, (list, tuple)) and out and isinstance(out[0], dict) and "boxes" in out[0]:
        return "detection"
    if isinstance(out, dict) or getattr(getattr(out, "logits", out), "dim", lambda: 0)() == 4:
        return "segmentation"
    return "classification"


def dense_model(model: LoadedModel, task: str, target_label: str = "") -> DenseModel:
    """``model`` as a :class:`DenseModel` for ``task`` (``"segmentation"`` or ``"detection"``).

    A detector that normalises its input itself (torchvision's: its ``transform`` holds
    ``image_mean``) is fed pixels in [0, 1].

    Raises:
        TargetError: the model's output is not of that kind.
    """
    found = task_of(model)
    if found != task:
        raise TargetError(
            f"this target needs a {task} model, but {model.name} is a {found} model; load a "
            f"torchvision {task} model saved whole (torch.save(model, FILE)) with --model FILE"
        )
    spec = model.preprocess_spec
    if task == "detection" and hasattr(getattr(model.net, "transform", None), "image_mean"):
        spec = replace(spec, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    names = list(model.class_names)
    return DenseModel(model.net, spec, names, model.name, target_label, task=task)
