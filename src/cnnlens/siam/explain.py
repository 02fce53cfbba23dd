"""What-where-how explanations of SIAM predictions (Marcos, Lobry & Tuia 2019).

A SIAM prediction is linear in its pooled attribute maps, so its explanation is
exact rather than estimated:

    y_o = b_o + sum_k r_ok,    r_ok = sum_t W_okt P_kt [+ 1/2 sum_{l != k} V_okl g_k g_l]

For each attribute the explanation gives *what* (its name and presence score
``g_k``), *how* (its contribution ``r_ok`` and effective weight) and *where*
(its map ``A_k``, upsampled bilinearly to the image). :meth:`SiamExplanation.check`
compares ``b + sum r`` with the output the model returned for one image (what the
CLI and the page print); :meth:`SiamExplanation.error` is the largest gap over all
images and outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..core.hooks import preserved
from .head import SiamOutput


@dataclass(frozen=True)
class SumCheck:
    """``bias + sum_k r_k`` against the model's output, for one image and output."""

    output_name: str
    bias: float
    total: float
    output: float

    @property
    def difference(self) -> float:
        """``|bias + total - output|``: float32 rounding only, for a correct model."""
        return abs(self.bias + self.total - self.output)

    def text(self) -> str:
        """One line: ``bias B + sum of contributions S = B+S; model output Y; |difference| D``."""
        return (
            f"bias {self.bias:+.6f} + sum of contributions {self.total:+.6f} = "
            f"{self.bias + self.total:+.6f}; model output {self.output:+.6f}; "
            f"|difference| {self.difference:.2e}"
        )


@dataclass
class SiamExplanation:
    """Per-image, per-attribute decomposition of SIAM outputs.

    Attributes:
        attributes: the ``K`` attribute names.
        outputs: the ``O`` output names.
        output: ``(N, O)`` model outputs.
        bias: ``(O,)`` the linear layer's bias.
        contributions: ``(N, O, K)``; ``output == bias + contributions.sum(-1)``.
        pooled: ``(N, K, T)`` pooled values entering the linear layer.
        presence: ``(N, K)`` average-pooled maps (attribute presence scores).
        weights: ``(O, K)`` effective weight per attribute (per unit of a uniform map).
        maps: ``(N, K, H, W)`` attribute maps upsampled to the input size.
        explained: ``(N,)`` the output explained per image (the given output, or
            the predicted class for classification).
    """

    attributes: list[str]
    outputs: list[str]
    output: torch.Tensor
    bias: torch.Tensor
    contributions: torch.Tensor
    pooled: torch.Tensor
    presence: torch.Tensor
    weights: torch.Tensor
    maps: torch.Tensor
    explained: torch.Tensor

    def error(self) -> float:
        """``max |bias + sum_k contributions - output|`` over images and outputs."""
        total = self.bias + self.contributions.sum(-1)
        return float((total - self.output).abs().max())

    def check(self, image: int = 0) -> SumCheck:
        """The sum check of image ``image``'s explained output, in float64.

        :class:`SumCheck` ``.text()`` is the line both ``cnnlens siam explain`` and the
        HTML page print, so the two always agree.
        """
        o = int(self.explained[image])
        r = self.contributions[image, o].double()
        return SumCheck(
            output_name=self.outputs[o] if o < len(self.outputs) else str(o),
            bias=float(self.bias[o]),
            total=float(r.sum()),
            output=float(self.output[image, o]),
        )

    def ranked(self, image: int = 0, n: int = 3) -> tuple[list[int], list[int]]:
        """Indices of the ``n`` most positive and ``n`` most negative contributions."""
        r = self.contributions[image, int(self.explained[image])]
        order = torch.argsort(r, descending=True).tolist()
        pos = [k for k in order if r[k] > 0][:n]
        neg = [k for k in reversed(order) if r[k] < 0][:n]
        return pos, neg

    def rows(self, image: int = 0) -> list[dict]:
        """Per attribute: name, contribution, presence and weight, for the explained output."""
        o = int(self.explained[image])
        return [
            {
                "attribute": name,
                "contribution": float(self.contributions[image, o, k]),
                "presence": float(self.presence[image, k]),
                "weight": float(self.weights[o, k]),
            }
            for k, name in enumerate(self.attributes)
        ]


@torch.no_grad()
def explain(model: nn.Module, x: torch.Tensor, output: int | None = None) -> SiamExplanation:
    """Decompose the model's outputs for normalised images ``x`` ``(N, 3, S, S)``.

    The forward pass runs in eval mode; the model's training flags are restored
    afterwards, exceptions included.

    Args:
        model: a :class:`~cnnlens.siam.model.SiamModel` (its ``config``, ``head``
            and a forward returning :class:`~cnnlens.siam.head.SiamOutput`).
        x: input batch, normalised like the backbone expects.
        output: the output to explain; default 0 for regression, the predicted
            class for classification.

    Returns:
        A :class:`SiamExplanation` of the ``N`` images (maps at ``S x S``).
    """
    with preserved(model, freeze=False):
        out: SiamOutput = model(x)
    n = x.shape[0]
    if output is not None:
        explained = torch.full((n,), int(output), dtype=torch.long)
    elif model.config.task == "classification":
        explained = out.output.argmax(1).cpu()
    else:
        explained = torch.zeros(n, dtype=torch.long)
    weights = torch.stack([model.head.effective_weights(o) for o in range(out.output.shape[1])])
    maps = F.interpolate(out.maps, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return SiamExplanation(
        attributes=list(model.config.attributes),
        outputs=list(model.config.outputs),
        output=out.output,
        bias=model.head.bias.detach().clone(),
        contributions=out.contributions,
        pooled=out.pooled,
        presence=out.presence,
        weights=weights,
        maps=maps,
        explained=explained,
    )


__all__ = ["SiamExplanation", "SumCheck", "explain"]
