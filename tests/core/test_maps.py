"""core.maps: one map per image, and per-map min-max scaling."""

import pytest
import torch

from cnnlens.core.explanation import Explanation
from cnnlens.core.maps import minmax, one_per_image


def test_one_per_image_reads_every_spelling():
    m = torch.arange(8.0).view(2, 2, 2)
    e = Explanation(maps=m.unsqueeze(1), targets=torch.zeros(2, 1, dtype=torch.long), method="x")
    for spelling in (m, m.unsqueeze(1), e, m.long()):
        got = one_per_image(spelling)
        assert got.dtype == torch.float32 and torch.equal(got, m)


def test_one_per_image_refuses_what_it_cannot_read():
    with pytest.raises(ValueError, match="2 targets per image, but one map per image"):
        one_per_image(torch.zeros(3, 2, 4, 4))
    with pytest.raises(ValueError, match=r"maps must be \(N, H, W\)"):
        one_per_image(torch.zeros(4, 4))
    with pytest.raises(TypeError, match="masks must be a tensor"):
        one_per_image([[0.0]], "masks")
    nan = torch.full((1, 2, 2), float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        one_per_image(nan)
    assert torch.isnan(one_per_image(nan, finite=False)).all()


def test_minmax_by_hand():
    maps = torch.tensor([[[1.0, 3.0], [5.0, 9.0]], [[2.0, 2.0], [2.0, 2.0]]])
    want = torch.tensor([[[0.0, 0.25], [0.5, 1.0]], [[0.0, 0.0], [0.0, 0.0]]])
    assert torch.equal(minmax(maps), want)  # a constant map becomes 0
    assert torch.equal(minmax(maps.flatten(1), dims=1), want.flatten(1))
    assert minmax(maps.unsqueeze(1)).shape == (2, 1, 2, 2)
