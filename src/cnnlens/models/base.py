"""`LoadedModel`: a network together with its preprocessing and class names."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..core.hooks import preserved
from ..core.layers import LayerInfo, trace_layers

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """How a PIL image becomes the network's input tensor.

    ``resize`` is the length of the shorter side after resizing, ``crop`` the
    side of the centre crop. ``resize=None`` resizes the whole image straight
    to ``crop x crop`` (no cropping). Pixel values are scaled to [0, 1], then
    normalised with ``mean`` and ``std``.
    """

    crop: int = 224
    resize: int | None = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"

    def _resample(self) -> int:
        modes = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}
        return modes.get(self.interpolation, Image.BILINEAR)

    def geometry(self, img: Image.Image) -> Image.Image:
        """Resize and crop ``img`` the way the model expects (still a PIL image)."""
        img = img.convert("RGB")
        if self.resize is None:
            return img.resize((self.crop, self.crop), self._resample())
        w, h = img.size
        scale = self.resize / min(w, h)
        nw, nh = max(self.crop, round(w * scale)), max(self.crop, round(h * scale))
        img = img.resize((nw, nh), self._resample())
        left, top = (nw - self.crop) // 2, (nh - self.crop) // 2
        return img.crop((left, top, left + self.crop, top + self.crop))

    def to_tensor(self, img: Image.Image) -> torch.Tensor:
        """A geometry-adjusted PIL image to a normalised ``(3, H, W)`` tensor."""
        arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
        t = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (t - mean) / std

    def normalize(self, rgb: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` RGB in [0, 1] to the network's input, on ``rgb``'s device and dtype."""
        mean = torch.tensor(self.mean, device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)
        return (rgb - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of the normalisation: ``(N, 3, H, W)`` back to [0, 1] RGB."""
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x * std + mean).clamp(0, 1)


@dataclass
class Prediction:
    """Top-k classes per image: ``indices`` and ``probs`` are ``(N, k)``; ``labels`` N lists."""

    indices: torch.Tensor
    probs: torch.Tensor
    labels: list[list[str]]

    def to_list(self) -> list[list[dict]]:
        """JSON-friendly form: per image a list of ``{index, label, prob}``."""
        out = []
        for idx_row, p_row, lab_row in zip(self.indices.tolist(), self.probs.tolist(), self.labels):
            out.append(
                [
                    {"index": i, "label": lab, "prob": p}
                    for i, p, lab in zip(idx_row, p_row, lab_row)
                ]
            )
        return out


@dataclass
class LoadedModel:
    """A classifier with everything needed to feed it and read its output.

    Attributes:
        net: the ``nn.Module`` mapping ``(N, 3, H, W)`` normalised images to logits.
        preprocess_spec: resize/crop/normalisation (see :class:`Preprocess`).
        class_names: one name per output; generic ``class_i`` names when unknown.
        name: architecture or file name, for reports.
    """

    net: nn.Module
    preprocess_spec: Preprocess = field(default_factory=Preprocess)
    class_names: list[str] = field(default_factory=list)
    name: str = "model"

    @classmethod
    def wrap(cls, model: nn.Module | LoadedModel) -> LoadedModel:
        """Return ``model`` itself if already loaded, else wrap it with ImageNet defaults."""
        if isinstance(model, LoadedModel):
            return model
        if not isinstance(model, nn.Module):
            raise TypeError(f"expected a LoadedModel or nn.Module, got {type(model).__name__}")
        return cls(net=model, name=type(model).__name__)

    def __repr__(self) -> str:
        # one line: the network's own repr and 1000 class names would fill a screen
        return (
            f"LoadedModel(name={self.name!r}, net={type(self.net).__name__}, "
            f"classes={len(self.class_names)}, input={self.preprocess_spec.crop}px, "
            f"device={self.device})"
        )

    @property
    def device(self) -> torch.device:
        p = next(self.net.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def to(self, device: str | torch.device) -> LoadedModel:
        self.net.to(device)
        return self

    def label(self, index: int) -> str:
        if 0 <= index < len(self.class_names):
            return self.class_names[index]
        return f"class_{index}"

    def preprocess(self, images: Image.Image | Sequence[Image.Image]) -> torch.Tensor:
        """One image or a list of images to a ``(N, 3, H, W)`` tensor on the model's device."""
        if isinstance(images, Image.Image):
            images = [images]
        spec = self.preprocess_spec
        batch = torch.stack([spec.to_tensor(spec.geometry(im)) for im in images])
        return batch.to(self.device)

    def display_images(self, x: torch.Tensor) -> torch.Tensor:
        """Input tensor back to [0, 1] RGB ``(N, 3, H, W)`` for display."""
        return self.preprocess_spec.denormalize(x.detach())

    @torch.no_grad()
    def predict(self, x: torch.Tensor, top_k: int = 5) -> Prediction:
        """Softmax top-k of the network on ``x`` (``(N, 3, H, W)``), in eval mode."""
        with preserved(self.net):
            logits = self.net(x)
        probs = F.softmax(logits.float(), dim=1)
        k = min(top_k, probs.shape[1])
        p, idx = probs.topk(k, dim=1)
        labels = [[self.label(i) for i in row] for row in idx.tolist()]
        return Prediction(indices=idx, probs=p, labels=labels)


def list_layers(model) -> list[LayerInfo]:
    """`cl.layers(model)`: every module, its type and output shape at the model's input size."""
    model = LoadedModel.wrap(model)
    size = model.preprocess_spec.crop
    return trace_layers(model.net, (size, size))
