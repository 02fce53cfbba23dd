"""MaskResult: shape checks and joining results of consecutive batches."""

import math

import pytest
import torch

from cnnlens.core.masks import MaskResult


def part(n: int, iterations: int, fill: float) -> MaskResult:
    t, a, h, w = 1, 2, 4, 4
    return MaskResult(
        mask=torch.full((n, t, a, h, w), fill),
        edited=torch.full((n, t, a, 3, h, w), fill),
        score=torch.full((n, t, a), fill),
        score_before=torch.full((n, t), fill),
        score_perturbed=torch.full((n, t), fill),
        area=torch.full((n, t, a), fill),
        curves={"score": torch.arange(float(n * t * a * iterations)).view(n, t, a, iterations)},
        areas=[0.1, 0.2],
    )


def test_cat_pads_shorter_curves_with_nan():
    # extremal stops once every mask has converged, so batches run different lengths
    joined = MaskResult.cat([part(1, 5, 0.0), part(2, 3, 1.0)])
    assert joined.mask.shape == (3, 1, 2, 4, 4) and joined.edited.shape == (3, 1, 2, 3, 4, 4)
    assert joined.score[:, 0, 0].tolist() == [0.0, 1.0, 1.0]
    curve = joined.curves["score"]
    assert curve.shape == (3, 1, 2, 5)
    assert curve[0, 0, 1].tolist() == [5.0, 6.0, 7.0, 8.0, 9.0]
    assert curve[2, 0, 1, :3].tolist() == [9.0, 10.0, 11.0]
    assert all(math.isnan(v) for v in curve[1:, :, :, 3:].flatten().tolist())


def test_cat_refuses_other_settings_and_shapes_are_checked():
    other = part(1, 3, 0.0)
    other = MaskResult(**{**other.__dict__, "areas": [0.3, 0.4]})
    with pytest.raises(ValueError, match="one method and setting"):
        MaskResult.cat([part(1, 3, 0.0), other])
    with pytest.raises(ValueError, match="edited must be"):
        MaskResult(**{**part(1, 3, 0.0).__dict__, "edited": torch.zeros(1, 1, 2, 3, 5, 5)})
