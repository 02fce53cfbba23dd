"""Target kinds (cnnlens.targets): each kind's score and maps against hand computations on
tiny models, the two routes through cl.attribute, refusals, and torchvision segmentation
and detection models with random weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnlens as cl
from cnnlens.targets import (
    ClassLogit,
    ClassProbability,
    DetectionBox,
    EmbeddingSimilarity,
    MultiLabel,
    Regression,
    SegmentationRegion,
    Target,
    head_of,
)
from helpers import assert_unchanged, snapshot, tiny_cnn, tiny_vit


def _x(n=2, size=48, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g)


def _input_gradient(score_fn, x):
    """max over colour of |d score / d x| per image: the `gradient` method's map, by hand."""
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(score_fn(xg).sum(), xg)
    return g.abs().amax(1)


def _gradient(net, x, target):
    return cl.attribute(net, x, "gradient", target=target).maps[:, 0]


# ----------------------------------------------------------------------------- class kinds


def test_class_logit_is_a_plain_class_index_for_every_route():
    net, x = tiny_cnn().eval(), _x()
    for method in ("gradient", "cam", "occlusion"):
        a = cl.attribute(net, x, method, target=ClassLogit(3))
        b = cl.attribute(
            net, x, method, target=3, **({"score": "logit"} if method == "occlusion" else {})
        )
        torch.testing.assert_close(a.maps, b.maps)
        assert a.targets.tolist() == [[3], [3]] and a.extras["target"][0] == ["logit of class 3"]
    e = cl.attribute(net, x, "occlusion", target=ClassLogit(3))
    assert e.params["score"] == "logit"  # occlusion's default "prob" does not apply


def test_class_probability_plain_with_score_and_through_the_head_without():
    net, x = tiny_cnn().eval(), _x()
    e = cl.attribute(net, x, "gradient", target=ClassProbability(2))
    hand = _input_gradient(lambda v: F.softmax(net(v), 1)[:, 2], x)
    torch.testing.assert_close(e.maps[:, 0], hand)
    assert e.params["score"] == "prob"
    # LayerCAM has no score parameter: the head's column is softmax(z)_2
    e = cl.attribute(net, x, "layercam", target=ClassProbability(2), layer="4")
    a = net[:5](x).detach().requires_grad_(True)
    s = F.softmax(net[5:](a), 1)[:, 2]
    (g,) = torch.autograd.grad(s.sum(), a)
    hand = (g.clamp_min(0) * a).sum(1, keepdim=True).clamp_min(0)
    hand = F.interpolate(hand, size=(48, 48), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(e.maps[:, 0], hand.detach())


def test_multilabel_is_the_sigmoid_of_the_logit():
    net, x = tiny_cnn().eval(), _x()
    t = MultiLabel(1)
    z = net(x)[:, 1].detach()
    torch.testing.assert_close(t(net, x), torch.sigmoid(z))
    # d sigmoid(z)/dx = s (1 - s) dz/dx: the map is the logit's map times s (1 - s)
    s = torch.sigmoid(z).view(2, 1, 1)
    torch.testing.assert_close(_gradient(net, x, t), s * (1 - s) * _gradient(net, x, 1))


def test_regression_output_including_a_one_dimensional_one():
    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    two = nn.Sequential(body, nn.Linear(4, 2)).eval()
    one = nn.Sequential(two, _Column(1))  # (N,) output: one regression value per image
    x = _x()
    torch.testing.assert_close(Regression(1)(two, x), two(x)[:, 1])
    hand = _input_gradient(lambda v: two(v)[:, 1], x)
    torch.testing.assert_close(_gradient(two, x, Regression(1)), hand)
    torch.testing.assert_close(_gradient(one, x, Regression(0)), hand)
    # CAM reads output unit 1 of the (N, 2) output: the same as target=1
    torch.testing.assert_close(
        cl.attribute(two, x, "cam", target=Regression(1)).maps,
        cl.attribute(two, x, "cam", target=1).maps,
    )


class _Column(nn.Module):
    def __init__(self, i):
        super().__init__()
        self.i = i

    def forward(self, z):
        return z[:, self.i]


# ----------------------------------------------------------------------------- embeddings


def test_embedding_similarity_default_layer_is_the_last_linear_input():
    net, x = tiny_cnn().eval(), _x()
    ref = _x(1, seed=7)[0]
    t = EmbeddingSimilarity(ref)
    with torch.no_grad():
        t.prepare(net, x)
    feats = net[:8]  # conv ... flatten: what the Linear reads

    def cosine(v):
        return F.cosine_similarity(feats(v), feats(ref[None]).detach(), dim=1)

    torch.testing.assert_close(t(net, x), cosine(x))
    torch.testing.assert_close(_gradient(net, x, t), _input_gradient(cosine, x))
    # the same reference given as its embedding
    vec = feats(ref[None]).detach()[0]
    torch.testing.assert_close(_gradient(net, x, EmbeddingSimilarity(vec)), _gradient(net, x, t))


def test_embedding_similarity_at_a_named_layer_is_pooled_like_the_index():
    net, x = tiny_cnn().eval(), _x()
    ref = _x(1, seed=7)
    t = EmbeddingSimilarity(ref, layer="4")
    with torch.no_grad():
        t.prepare(net, x)

    def cosine(v):
        return F.cosine_similarity(net[:5](v).mean((2, 3)), net[:5](ref).mean((2, 3)), dim=1)

    torch.testing.assert_close(t(net, x), cosine(x).detach())
    assert t.describe() == "similarity to the reference (pooled 4)"
    # the image explained against itself is as similar as can be
    self_sim = EmbeddingSimilarity(x[:1], layer="4")
    self_sim.prepare(net, x[:1])
    torch.testing.assert_close(self_sim(net, x[:1]), torch.ones(1))


def test_occlusion_through_the_head_drops_the_target_score():
    net, x = tiny_cnn().eval(), _x(1)
    t = EmbeddingSimilarity(_x(1, seed=5))
    e = cl.attribute(net, x, "occlusion", target=t, window=24, stride=24, baseline=0.0)
    assert e.extras["mode"].startswith("exact") and "whole forward passes" in e.extras["mode"]
    t.prepare(net, x)
    base = t(net, x).detach()
    for y0 in (0, 24):
        for x0 in (0, 24):
            occluded = x.clone()
            occluded[..., y0 : y0 + 24, x0 : x0 + 24] = 0
            drop = base - t(net, occluded).detach()
            torch.testing.assert_close(e.maps[0, 0, y0 + 5, x0 + 7], drop[0])


def test_several_targets_per_image_share_one_map_row_each():
    net, x = tiny_cnn().eval(), _x()
    a, b = EmbeddingSimilarity(_x(1, seed=3)), MultiLabel(4)
    e = cl.attribute(net, x, "gradient", target=[[a, b], [b, a]])
    assert e.maps.shape == (2, 2, 48, 48) and e.targets.tolist() == [[-1, 4], [4, -1]]
    torch.testing.assert_close(e.maps[0, 1], _gradient(net, x, b)[0])
    torch.testing.assert_close(e.maps[1, 1], _gradient(net, x, a)[1])


def test_transformer_methods_take_targets_and_leave_the_model_unchanged():
    net = tiny_vit()
    nn.init.normal_(net[4].head.weight, std=0.5)
    x = _x()
    before = snapshot(net)
    t = EmbeddingSimilarity(_x(1, seed=2))
    r = cl.attribute(net, x, "transformer_relevance", target=t)
    g = cl.attribute(net, x, "gradcam", target=t)
    assert r.params["score"] == "logit" and torch.isfinite(r.maps).all()
    assert g.maps.std() > 0 and r.maps.std() > 0
    # rollout does not depend on the target at all
    torch.testing.assert_close(
        cl.attribute(net, x, "attention_rollout", target=t).maps,
        cl.attribute(net, x, "attention_rollout", target=1).maps,
    )
    assert_unchanged(before, net)


# ----------------------------------------------------------------------------- refusals


def test_output_only_methods_refuse_other_targets_with_the_reason():
    net, x = tiny_cnn().eval(), _x()
    assert cl.get_method("cam").targets == "output" and cl.get_method("gradcam").targets == "any"
    with pytest.raises(cl.MethodError, match=r"ClassLogit\(2\) explains the same unit before"):
        cl.attribute(net, x, "cam", target=MultiLabel(2))
    with pytest.raises(cl.MethodError, match="global average pooling.*methods that can: "):
        cl.attribute(net, x, "cam", target=EmbeddingSimilarity(_x(1)))
    with pytest.raises(cl.MethodError, match="excitation backprop starts from one output unit"):
        cl.attribute(net, x, "excitation_backprop", target=ClassProbability(1))


def test_score_at_odds_with_the_target_and_malformed_lists_are_refused():
    net, x = tiny_cnn().eval(), _x()
    with pytest.raises(cl.MethodError, match="score='prob' does not go with target"):
        cl.attribute(net, x, "gradient", target=MultiLabel(1), score="prob")
    with pytest.raises(cl.TargetError, match="not both"):
        cl.attribute(net, x, "gradient", target=[MultiLabel(1), 2])
    with pytest.raises(cl.TargetError, match="one entry per image"):
        cl.attribute(net, x, "gradient", target=[MultiLabel(1)])
    with pytest.raises(cl.TargetError, match="out of range, the model has 5"):
        cl.attribute(net, x, "gradient", target=MultiLabel(9))


def test_a_target_that_fails_leaves_the_model_as_it_came():
    class Broken(Target):
        def score(self, output):
            raise RuntimeError("score failure injected by the test")

    net = tiny_cnn()
    net.train()
    before = snapshot(net)
    for method in ("gradcam", "occlusion", "guided_backprop"):
        with pytest.raises(RuntimeError, match="injected"):
            cl.attribute(net, _x(), method, target=Broken())
        assert_unchanged(before, net)


def test_the_head_is_the_net_seen_through_its_targets():
    net = tiny_cnn()
    head = head_of(net, [ClassLogit(1), MultiLabel(2)])
    assert type(head).__name__ == "Sequential"
    assert [n for n, _ in head.named_modules()] == [n for n, _ in net.named_modules()]
    assert list(head.parameters()) == list(net.parameters())
    head.eval()
    assert not net.training and not net[1].training
    x = _x()
    z = net(x)
    torch.testing.assert_close(head(x), torch.stack([z[:, 1], torch.sigmoid(z[:, 2])], 1))


# ----------------------------------------------------------------------------- segmentation


class TinySegmenter(nn.Module):
    """Conv (stride 2) -> ReLU -> 1x1 conv to 3 classes; returns {"out": (N, 3, H/2, W/2)}."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU())
        self.classifier = nn.Conv2d(4, 3, 1)

    def forward(self, x):
        return {"out": self.classifier(self.body(x))}


def test_segmentation_region_sums_the_class_logits_over_the_mask():
    net, x = TinySegmenter(), _x(2, 16)
    out = net(x)["out"].detach()  # (2, 3, 8, 8)
    torch.testing.assert_close(SegmentationRegion(1)(net, x), out[:, 1].sum((1, 2)))
    # a box in input pixels is the mask 1 inside it, resized (nearest) to the 8x8 output
    box = SegmentationRegion(2, box=(4, 0, 12, 8))
    torch.testing.assert_close(box(net, x), out[:, 2, 0:4, 2:6].sum((1, 2)))
    mask = torch.zeros(16, 16)
    mask[0:8, 4:12] = 1
    torch.testing.assert_close(SegmentationRegion(2, mask)(net, x), box(net, x))
    small = torch.zeros(8, 8)
    small[0:4, 2:6] = 0.5
    torch.testing.assert_close(SegmentationRegion(2, small)(net, x), 0.5 * box(net, x))
    hand = _input_gradient(lambda v: net(v)["out"][:, 2, 0:4, 2:6].sum((1, 2)), x)
    torch.testing.assert_close(_gradient(net, x, box), hand)
    with pytest.raises(cl.MethodError, match="reads a row of scores per image"):
        cl.attribute(net, x, "gradient", target=MultiLabel(0))
    with pytest.raises(cl.MethodError, match="SegmentationRegion reads"):
        cl.attribute(tiny_cnn(), _x(), "gradient", target=SegmentationRegion(1))


def test_torchvision_fcn_segmentation_region():
    from torchvision.models.segmentation import fcn_resnet50

    torch.manual_seed(0)
    net = fcn_resnet50(weights=None, weights_backbone=None, num_classes=4, aux_loss=False)
    x = _x(1, 64)
    before = snapshot(net)
    t = SegmentationRegion(3, box=(16, 16, 48, 48))
    e = cl.attribute(net, x, "gradient", target=t)
    with torch.no_grad():
        net.eval()
        expected = net(x)["out"][:, 3, 16:48, 16:48].sum((1, 2))
        torch.testing.assert_close(t(net, x), expected)
        net.train()
    assert e.maps.shape == (1, 1, 64, 64) and torch.isfinite(e.maps).all() and e.maps.std() > 0
    assert e.targets.tolist() == [[3]]
    assert_unchanged(before, net)


# ----------------------------------------------------------------------------- detection


class TinyDetector(nn.Module):
    """Three fixed boxes on 16x16 images; box k scores sigmoid(2 * mean of x over its box),
    has label k + 1 and is kept when its score is over 0.5 (torchvision's eval output: one
    dict per image, detections under the threshold dropped)."""

    BOXES = ((0.0, 0.0, 8.0, 8.0), (8.0, 8.0, 16.0, 16.0), (0.0, 8.0, 8.0, 16.0))

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, x):
        out = []
        for img in x:
            s = [img[:, int(b[1]) : int(b[3]), int(b[0]) : int(b[2])].mean() for b in self.BOXES]
            scores = torch.sigmoid(self.scale * torch.stack(s))
            keep = scores > 0.5
            out.append(
                {
                    "boxes": torch.tensor(self.BOXES)[keep],
                    "scores": scores[keep],
                    "labels": torch.tensor([1, 2, 3])[keep],
                }
            )
        return out


def test_detection_box_scores_the_best_matching_detection():
    net, x = TinyDetector(), _x(2, 16).abs()  # every box kept

    def box_score(v, k):
        return torch.sigmoid(2 * v[:, :, 8:16, 8:16].mean((1, 2, 3))) if k == 1 else None

    t = DetectionBox((7.0, 7.0, 16.0, 16.0))  # IoU 64/81 with box 1, < 0.5 with the others
    torch.testing.assert_close(t(net, x), box_score(x, 1))
    torch.testing.assert_close(_gradient(net, x, t), _input_gradient(lambda v: box_score(v, 1), x))
    e = cl.attribute(net, x, "gradient", target=DetectionBox((7, 7, 16, 16), label=2))
    assert e.targets.tolist() == [[2], [2]]
    with pytest.raises(cl.MethodError, match=r"no detection of class 3 overlaps.*best IoU 0\.79"):
        cl.attribute(net, x, "gradient", target=DetectionBox((7, 7, 16, 16), label=3))
    # a copy whose box is blanked loses the detection: it scores 0, the drop is the score
    e = cl.attribute(net, x[:1], "occlusion", target=t, window=8, stride=8, baseline=0.0)
    torch.testing.assert_close(e.maps[0, 0, 12, 12], box_score(x[:1], 1)[0])
    assert float(e.maps[0, 0, 4, 4]) == 0.0


def test_torchvision_faster_rcnn_detection_box():
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    torch.manual_seed(0)
    net = fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=3, box_score_thresh=0.0,
        min_size=64, max_size=64,
    )  # fmt: skip
    nn.init.normal_(net.roi_heads.box_predictor.cls_score.weight, std=0.5)
    net.eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        top = net(x)[0]
    box, label = top["boxes"][0].tolist(), int(top["labels"][0])
    before = snapshot(net)
    t = DetectionBox(box, label=label)
    torch.testing.assert_close(t(net, x), top["scores"][:1])
    e = cl.attribute(net, x, "gradient", target=t)
    assert e.maps.shape == (1, 1, 64, 64) and torch.isfinite(e.maps).all() and e.maps.std() > 0
    assert_unchanged(before, net)
