"""The batching engine: prepared model, batched scoring, mask-row bookkeeping."""

import pytest
import torch
from torch import nn

from cnnlens.core.batching import FastNet, MaskRows, batch_size_for, chunks, score_batches
from cnnlens.core.tensors import target_scores


class Sum(nn.Module):
    """Logit c = (c + 1) * sum of the image: scores known by hand."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1, bias=False)
        nn.init.ones_(self.conv.weight)

    def forward(self, x):
        total = self.conv(x).flatten(1).sum(1, keepdim=True)  # (B, 1)
        return total * torch.arange(1.0, 4.0)  # (B, 3)


def test_fast_net_is_a_frozen_channels_last_copy_on_cpu():
    net = Sum()
    x = torch.rand(2, 3, 4, 4)
    fast = FastNet.of(net, x)
    assert fast.net is not net and fast.is_copy
    assert fast.memory_format == torch.channels_last
    assert not any(p.requires_grad for p in fast.net.parameters())
    assert all(p.requires_grad for p in net.parameters())
    assert net.conv.weight.is_contiguous()  # the caller's model is not converted
    assert fast.prepare(x).is_contiguous(memory_format=torch.channels_last)
    assert fast.empty(5, x).shape == (5, 3, 4, 4)


def test_scores_by_hand():
    x = torch.ones(2, 3, 2, 2)
    x[1] *= 2
    fast = FastNet.of(Sum(), x)
    got = fast.scores(x, torch.tensor([[0, 2], [1, 1]]), "logit")
    # image 0 sums to 12, image 1 to 24; logit c = (c + 1) * sum
    torch.testing.assert_close(got, torch.tensor([[12.0, 36.0], [48.0, 48.0]]))
    probs = fast.scores(x, torch.tensor([[2], [2]]), "prob")
    hand = torch.tensor([[12.0, 24.0, 36.0], [24.0, 48.0, 72.0]]).softmax(1)[:, 2:]
    torch.testing.assert_close(probs, hand)


@pytest.mark.parametrize("batch_size", [1, 2, 3, 7])
def test_score_batches_same_for_any_batch_size_and_lazy_images(batch_size):
    torch.manual_seed(0)
    images = torch.rand(7, 3, 4, 4)
    targets = torch.randint(0, 3, (7, 2))
    fast = FastNet.of(Sum(), images)
    whole = fast.scores(images, targets, "logit")
    seen = []
    got = score_batches(fast, images, targets, "logit", batch_size, advance=seen.append)
    lazy = score_batches(fast, lambda rows: images[rows], targets, "logit", batch_size)
    torch.testing.assert_close(got, whole)
    torch.testing.assert_close(lazy, whole)
    assert sum(seen) == 7 and max(seen) <= batch_size


def test_target_scores_by_hand_keep_dtype_and_graph():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    logits.requires_grad_(True)
    targets = torch.tensor([[2, 0], [1, 1]])
    got = target_scores(logits, targets, "logit")
    assert got.dtype == torch.float64 and got.requires_grad
    torch.testing.assert_close(got.detach(), torch.tensor([[3.0, 1.0], [0.0, 0.0]]).double())
    probs = target_scores(logits, targets, "prob").detach()
    e = torch.tensor([1.0, 2.0, 3.0]).double().exp()
    hand = torch.stack([e[2] / e.sum(), e[0] / e.sum()])
    torch.testing.assert_close(probs[0], hand)
    torch.testing.assert_close(probs[1], torch.full((2,), 1 / 3).double())
    logprob = target_scores(logits, targets, "logprob").detach()
    torch.testing.assert_close(logprob, probs.log())


def test_batch_size_for():
    assert batch_size_for(torch.zeros(1, 3, 224, 224), 7) == 7
    assert batch_size_for(torch.zeros(1, 3, 224, 224), None) == 4  # CPU budget: 4 at 224 px
    assert batch_size_for(torch.zeros(1, 3, 112, 112), None) == 16


def test_chunks():
    assert chunks(5, 2) == [slice(0, 2), slice(2, 4), slice(4, 5)]
    assert chunks(0, 3) == []
    with pytest.raises(ValueError):
        chunks(3, 0)


def test_mask_rows_image_major_then_target_then_area():
    targets = torch.tensor([[5, 7], [1, 2]])
    rows = MaskRows.of(targets, [0.1, 0.2, 0.3])
    assert len(rows) == 12 and rows.shape == (2, 2, 3)
    assert rows.owner.tolist() == [0] * 6 + [1] * 6
    assert rows.classes[:, 0].tolist() == [5, 5, 5, 7, 7, 7, 1, 1, 1, 2, 2, 2]
    assert rows.areas.tolist() == pytest.approx([0.1, 0.2, 0.3] * 4)
    folded = rows.fold(torch.arange(12.0))
    assert folded.shape == (2, 2, 3) and float(folded[1, 0, 2]) == 8.0


def test_mask_rows_per_target_and_joint():
    targets = torch.tensor([[5, 7], [1, 2]])
    rows = MaskRows.of(targets)
    assert rows.shape == (2, 2, 1) and rows.areas is None
    assert rows.owner.tolist() == [0, 0, 1, 1] and rows.classes.tolist() == [[5], [7], [1], [2]]
    joint = MaskRows.of(targets, joint=True)
    assert joint.shape == (2, 1, 1) and joint.owner.tolist() == [0, 1]
    assert torch.equal(joint.classes, targets)
    with pytest.raises(ValueError):
        MaskRows.of(targets, [0.1], joint=True)


def test_every_class_when_no_targets_and_the_plain_net():
    torch.manual_seed(0)
    images = torch.rand(5, 3, 4, 4)
    net = Sum()
    fast = FastNet.plain(net)
    assert fast.net is net and not fast.is_copy
    every = score_batches(fast, images, None, "logit", 2)
    assert every.shape == (5, 3)
    torch.testing.assert_close(every, net(images))
    picked = score_batches(fast, images, torch.tensor([[2]] * 5), "logit", 2)
    torch.testing.assert_close(picked[:, 0], every[:, 2])
    with pytest.raises(ValueError, match="no images"):
        score_batches(fast, images[:0], None, "logit", 2)
