"""``--target KIND:VALUE`` in ``cnnlens explain`` and ``neighbours --explain``, end to end on
tiny whole-model checkpoints (a classifier, a torchvision FCN, a torchvision Faster R-CNN),
with every map checked against the library call it stands for."""

from __future__ import annotations

import json
from collections import OrderedDict

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

import cnnlens as cl
import cnnlens.cli.analysis  # noqa: F401  (registers the commands)
import cnnlens.cli.explain  # noqa: F401
from cnnlens.cli import app
from cnnlens.core.errors import TargetError
from cnnlens.targets import DetectionBox, EmbeddingSimilarity, MultiLabel, SegmentationRegion
from cnnlens.targets.dense import dense_model
from cnnlens.targets.spec import parse_kind

runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.segmentation.fcn import FCN
    from torchvision.ops import MultiScaleRoIAlign

    root = tmp_path_factory.mktemp("targets")
    rng = np.random.default_rng(0)
    for i in range(4):
        pixels = rng.integers(0, 255, (60, 70, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"img{i}.png")
    torch.manual_seed(0)
    classifier = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2, padding=1),
        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5),
    )  # fmt: skip
    torch.save(classifier.eval(), root / "tiny.pt")
    body = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 6, 3, stride=4, padding=1), relu=nn.ReLU()))
    fcn = FCN(IntermediateLayerGetter(body, {"relu": "out"}), nn.Conv2d(6, 3, 1))
    torch.save(fcn.eval(), root / "fcn.pt")
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.ReLU())
    backbone.out_channels = 8
    det = FasterRCNN(
        backbone, num_classes=3, rpn_anchor_generator=AnchorGenerator(((32,),), ((1.0,),)),
        box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2), min_size=224, max_size=224,
        box_score_thresh=0.0,
    )  # fmt: skip
    nn.init.normal_(det.roi_heads.box_predictor.cls_score.weight, std=0.5)
    torch.save(det.eval(), root / "det.pt")
    return root


def _explain(files, model, target, methods="gradient", *extra):
    out = files / f"report-{model}-{target.replace(':', '_').replace(',', '_')}"
    args = ["explain", str(files / "img0.png"), "--model", str(files / model), "--trust-checkpoint",
            "--target", target, "--methods", methods, "-o", str(out)]  # fmt: skip
    return runner.invoke(app, [*args, *extra]), out


def _saved(out, method):
    results = json.loads((out / "results.json").read_text())["images"][0]["methods"][method]
    return results, torch.from_numpy(np.load(out / "maps.npz")[f"maps/{method}"])


def _input(files, model):
    loaded = cl.load_model(str(files / model), trust_checkpoint=True)
    return loaded, loaded.preprocess(cl.load_image(files / "img0.png"))


def test_parse_kind_spellings_and_what_is_not_a_kind():
    assert parse_kind("285") is None and parse_kind("top5") is None and parse_kind(None) is None
    assert parse_kind("SIM:C:/photos/ref.png").value == "C:/photos/ref.png"
    assert parse_kind("seg:15:0,0,10,10").kind == "seg"
    with pytest.raises(TargetError, match="write det:VALUE"):
        parse_kind("det:")


def test_explain_similarity_to_a_reference(files):
    result, out = _explain(files, "tiny.pt", f"sim:{files / 'img1.png'}", "gradient,cam")
    assert result.exit_code == 0, result.output
    assert "cam cannot explain similarity to img1.png" in result.output
    saved, maps = _saved(out, "gradient")
    assert saved["targets"] == [-1]
    assert saved["target_labels"] == ["similarity to img1.png (last linear layer's input)"]
    loaded, x = _input(files, "tiny.pt")
    ref = loaded.preprocess(cl.load_image(files / "img1.png"))
    e = cl.attribute(loaded, x, "gradient", target=EmbeddingSimilarity(ref))
    torch.testing.assert_close(maps, e.maps)


def test_explain_multilabel_classes(files):
    result, out = _explain(files, "tiny.pt", "multilabel:1,3")
    assert result.exit_code == 0, result.output
    saved, maps = _saved(out, "gradient")
    assert saved["targets"] == [1, 3] and maps.shape == (1, 2, 224, 224)
    loaded, x = _input(files, "tiny.pt")
    e = cl.attribute(loaded, x, "gradient", target=[[MultiLabel(1), MultiLabel(3)]])
    torch.testing.assert_close(maps, e.maps)


def test_explain_segmentation_region_in_a_box(files):
    result, out = _explain(files, "fcn.pt", "seg:2:0,0,112,224")
    assert result.exit_code == 0, result.output
    saved, maps = _saved(out, "gradient")
    assert saved["targets"] == [2]
    loaded, x = _input(files, "fcn.pt")
    e = cl.attribute(loaded, x, "gradient", target=SegmentationRegion(2, box=(0, 0, 112, 224)))
    torch.testing.assert_close(maps, e.maps)
    assert float(maps.std()) > 0
    predictions = json.loads((out / "results.json").read_text())["images"][0]["predictions"]
    with torch.no_grad():
        probs = torch.softmax(loaded.net(x)["out"], 1).mean((2, 3))[0]
    assert predictions[0]["index"] == int(probs.argmax())
    assert predictions[0]["prob"] == pytest.approx(float(probs.max()), rel=1e-5)


def test_explain_detection_box(files):
    loaded, _ = _input(files, "det.pt")
    dense = dense_model(loaded, "detection")
    assert dense.preprocess_spec.mean == (0.0, 0.0, 0.0)  # torchvision detectors normalise
    x = dense.preprocess(cl.load_image(files / "img0.png"))
    with torch.no_grad():
        top = dense.net(x)[0]
    box, label = [round(v, 2) for v in top["boxes"][0].tolist()], int(top["labels"][0])
    result, out = _explain(files, "det.pt", f"det:{','.join(map(str, box))}:{label}")
    assert result.exit_code == 0, result.output
    saved, maps = _saved(out, "gradient")
    assert saved["targets"] == [label]
    e = cl.attribute(dense, x, "gradient", target=DetectionBox(box, label=label))
    torch.testing.assert_close(maps, e.maps)
    assert float(maps.std()) > 0


@pytest.mark.parametrize(
    ("model", "target", "message"),
    [
        ("tiny.pt", "seg:2", "needs a segmentation model, but tiny is a classification model"),
        ("fcn.pt", "det:0,0,10,10", "needs a detection model, but fcn is a segmentation model"),
        ("tiny.pt", "sim:missing.png", "the reference image missing.png"),
        ("tiny.pt", "multilabel:x", "expected indices like 3 or 3,7, got 'x'"),
        ("tiny.pt", "logit:9", "9 is not an output of tiny, which has 5 (0 to 4)"),
        ("det.pt", "det:5,5,1,1", "a box is x0,y0,x1,y1 in input pixels"),
    ],
)
def test_explain_refuses_bad_kinds_before_any_work(files, model, target, message):
    result, out = _explain(files, model, target)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and not out.exists()


@pytest.fixture(scope="module")
def index(files):
    args = ["index", str(files), "--out", str(files / "idx"), "--layers", "2", "--workers", "0",
            "--model", str(files / "tiny.pt"), "--trust-checkpoint"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return files / "idx"


def test_neighbours_explain_maps_why_each_pair_is_similar(files, index):
    page = files / "nb.html"
    args = ["neighbours", str(index), "0", "-k", "2", "--explain", "gradient", "-o", str(page),
            "--model", str(files / "tiny.pt"), "--trust-checkpoint"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    html = page.read_text()
    assert html.count("is a neighbour</h2>") == 2
    assert html.count("gradient of the cosine similarity") == 2


def test_neighbours_explain_with_the_library(files, index):
    from cnnlens.analysis import nearest, open_index
    from cnnlens.analysis.neighbours import explain_neighbours

    idx = open_index(index)
    loaded, _ = _input(files, "tiny.pt")
    by_feat, _ = nearest(idx, 0, "2", k=2)
    why = explain_neighbours(loaded, idx, 0, by_feat, "2", "gradient")
    x = torch.stack([loaded.preprocess(cl.load_image(idx.paths[e]))[0]
                     for e in [0, *by_feat.indices[0].tolist()]])  # fmt: skip
    q, near = x[:1], x[1:]
    for j in range(2):
        t = EmbeddingSimilarity(near[j], layer="2")
        torch.testing.assert_close(
            why.query_maps[j], cl.attribute(loaded, q, "gradient", target=t).maps[0, 0]
        )
        u = EmbeddingSimilarity(q, layer="2")
        torch.testing.assert_close(
            why.neighbour_maps[j],
            cl.attribute(loaded, near[j : j + 1], "gradient", target=u).maps[0, 0],
        )
    features = np.asarray(idx.features("2"), np.float32)
    a, b = features[0], features[by_feat.indices[0]]
    cos = b @ a / (np.linalg.norm(a) * np.linalg.norm(b, axis=1))
    np.testing.assert_allclose(why.similarity.numpy(), cos, rtol=1e-3)


def test_neighbours_explain_refusals(files, index):
    base = ["neighbours", str(index), "0", "-k", "2", "-o", str(files / "nb2.html")]
    wrong = runner.invoke(app, [*base, "--explain", "gradient", "--weights", "none"])
    assert wrong.exit_code == 2 and "needs the model that built the index (tiny)" in wrong.output
    model = ["--model", str(files / "tiny.pt"), "--trust-checkpoint"]
    cam = runner.invoke(app, [*base, "--explain", "cam", *model])
    assert cam.exit_code == 2 and "cam cannot explain similarity to img0.png" in cam.output
