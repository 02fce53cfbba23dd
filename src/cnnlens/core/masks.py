"""The result every mask-learning method returns: :class:`MaskResult`.

Meaningful perturbation (``meaningful_perturbation``, Fong & Vedaldi 2017) and
extremal perturbations (``extremal``, Fong, Patrick & Vedaldi 2019) both learn,
for each image ``x``, target ``c`` and (for extremal) area ``a``, a mask
``m`` in [0, 1] and edit the image with it, ``Φ(x; m)`` (1 keeps a pixel, 0
perturbs it fully). They return the same structure, so the report's edit panel,
:func:`cnnlens.perturbation.label_recovery` and
:func:`cnnlens.perturbation.representativeness` read either the same way.

Shapes: ``N`` images, ``T`` targets, ``A`` areas (1 for meaningful perturbation),
``I`` iterations, ``C, H, W`` the input's channels and size. The result sits in
the explanation's extras under :data:`KEY`; :meth:`MaskResult.of` fetches it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

KEY = "mask_result"  # where the result sits in ``Explanation.extras``

GAMES = ("delete", "preserve")


@dataclass(frozen=True)
class MaskResult:
    """Learned masks, the images they make, and what the model says about them.

    Attributes:
        mask: ``(N, T, A, H, W)`` the keep-mask ``m`` of each image, target and area
            (1 = kept, 0 = perturbed), in [0, 1].
        edited: ``(N, T, A, C, H, W)`` the edited images ``Φ(x; m)``, normalised like ``x``.
        score: ``(N, T, A)`` the target score of each edited image.
        score_before: ``(N, T)`` the target score of the image itself, ``f_c(x)``.
        score_perturbed: ``(N, T)`` the target score of the fully perturbed image,
            ``f_c(Φ(x; 0))``.
        area: ``(N, T, A)`` the fraction of the image the explanation selects: the
            deleted fraction ``mean(1 - m)`` when ``game == "delete"``, the kept
            fraction ``mean(m)`` when ``game == "preserve"``.
        curves: per optimisation quantity (e.g. ``"score"``, ``"area"``, ``"loss"``)
            its value per mask and iteration, ``(N, T, A, I)``.
        game: ``"delete"`` (find what must go) or ``"preserve"`` (what must stay).
        areas: the target areas ``a`` (length ``A``), or None when the method has none.
        perturbation: the operator Φ: ``"blur"``, ``"constant"`` or ``"noise"``.
    """

    mask: torch.Tensor
    edited: torch.Tensor
    score: torch.Tensor
    score_before: torch.Tensor
    score_perturbed: torch.Tensor
    area: torch.Tensor
    curves: dict[str, torch.Tensor] = field(default_factory=dict)
    game: str = "delete"
    areas: list[float] | None = None
    perturbation: str = "blur"

    def __post_init__(self) -> None:
        if self.mask.dim() != 5:
            raise ValueError(f"mask must be (N, T, A, H, W), got {tuple(self.mask.shape)}")
        n, t, a, h, w = self.mask.shape
        edited = tuple(self.edited.shape)
        if len(edited) != 6 or edited[:3] != (n, t, a) or edited[4:] != (h, w):
            raise ValueError(f"edited must be ({n}, {t}, {a}, C, {h}, {w}), got {edited}")
        for name, shape in (("score", (n, t, a)), ("area", (n, t, a)),
                            ("score_before", (n, t)), ("score_perturbed", (n, t))):  # fmt: skip
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(f"{name} must be {shape} to match the masks, got {got}")
        for name, curve in self.curves.items():
            if tuple(curve.shape[:3]) != (n, t, a) or curve.dim() != 4:
                got = tuple(curve.shape)
                raise ValueError(f"curve {name!r} must be ({n}, {t}, {a}, I), got {got}")
        if self.game not in GAMES:
            raise ValueError(f"game must be 'delete' or 'preserve', got {self.game!r}")
        if self.areas is not None and len(self.areas) != a:
            raise ValueError(f"{len(self.areas)} areas for {a} masks per target")

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(N, T, A)``: images, targets, areas."""
        n, t, a = self.mask.shape[:3]
        return (n, t, a)

    @classmethod
    def of(cls, expl: Any) -> MaskResult:
        """The mask result an :class:`~cnnlens.core.explanation.Explanation` carries.

        Args:
            expl: an Explanation (read through ``extras``, ``method`` and ``len``, so
                that :mod:`.explanation` may import this module), or a MaskResult
                (returned as it is).

        Raises:
            ValueError: the explanation's method learns no masks.
        """
        if isinstance(expl, MaskResult):
            return expl
        found = expl.extras.get(KEY)
        if not isinstance(found, MaskResult):
            raise ValueError(
                f"the {expl.method!r} explanation carries no learned masks "
                f"(extras[{KEY!r}]); methods that learn masks: meaningful_perturbation, extremal"
            )
        if found.shape[0] != len(expl):
            raise ValueError(
                f"the mask result holds {found.shape[0]} images but the explanation {len(expl)}"
            )
        return found

    @classmethod
    def cat(cls, parts: Sequence[MaskResult]) -> MaskResult:
        """Join results of the same method computed on consecutive batches of images.

        Curves of parts that ran fewer iterations than the longest are padded with NaN.
        """
        if not parts:
            raise ValueError("nothing to concatenate")
        first = parts[0]
        if any((p.game, p.areas, p.perturbation) != (first.game, first.areas, first.perturbation)
               for p in parts):  # fmt: skip
            raise ValueError("can only concatenate mask results of one method and setting")

        def join(name: str) -> torch.Tensor:
            return torch.cat([getattr(p, name) for p in parts])

        # batches that stopped after different numbers of iterations (extremal stops once
        # every mask has converged) are padded with NaN to the longest: nothing is lost
        names = [k for k in first.curves if all(k in p.curves for p in parts)]
        longest = max((p.curves[k].shape[-1] for p in parts for k in names), default=0)

        def padded(curve: torch.Tensor) -> torch.Tensor:
            missing = longest - curve.shape[-1]
            if not missing:
                return curve
            nan = curve.new_full((*curve.shape[:-1], missing), float("nan"))
            return torch.cat([curve, nan], dim=-1)

        curves = {k: torch.cat([padded(p.curves[k]) for p in parts]) for k in names}
        return cls(
            mask=join("mask"),
            edited=join("edited"),
            score=join("score"),
            score_before=join("score_before"),
            score_perturbed=join("score_perturbed"),
            area=join("area"),
            curves=curves,
            game=first.game,
            areas=first.areas,
            perturbation=first.perturbation,
        )


__all__ = ["GAMES", "KEY", "MaskResult"]
