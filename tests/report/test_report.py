"""Tests of `cnnlens.report`: output files, JSON/NPZ contents, escaping, and a real browser load."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnlens.core.explanation import Explanation
from cnnlens.models.base import Prediction
from cnnlens.report import build_report, report
from cnnlens.report.serialize import extras_subset, json_safe

NASTY = '<script>alert(1)</script>&"x".png'
N, T, H, W = 2, 3, 64, 64


def _smooth(noise: torch.Tensor) -> torch.Tensor:
    """Upsample coarse random values to ``H x W`` so maps look like real saliency blobs."""
    return F.interpolate(noise, size=(H, W), mode="bicubic", align_corners=False)


def _explanations() -> list[Explanation]:
    """Two hand-made methods (one signed) for 2 images, 3 targets each, fixed seed."""
    gen = torch.Generator().manual_seed(0)
    grad = Explanation(
        maps=_smooth(torch.rand(N, T, 6, 6, generator=gen)),
        targets=torch.tensor([[1, 2, 3], [4, 5, 6]]),
        method="gradient",
        params={"layer": Path("features/3"), "baseline": torch.zeros(2), "note": "<img src=x>"},
        seconds=0.125,
        extras={"layer_name": "features.3", "mask": torch.zeros(64, 64), "scale": 2.5},
    )
    signed = Explanation(
        maps=_smooth(torch.randn(N, T, 5, 5, generator=gen)),
        targets=torch.tensor([[1, 7, 8], [4, 0, 9]]),
        method="integrated_gradients",
        params={"steps": 16, "fn": print},
        seconds=1.5,
        signed=True,
    )
    return [grad, signed]


def _predictions() -> Prediction:
    probs = torch.tensor([[0.5, 0.2, 0.1, 0.1, 0.05], [0.9, 0.04, 0.03, 0.02, 0.01]])
    indices = torch.tensor([[1, 2, 3, 7, 8], [4, 5, 6, 0, 9]])
    labels = [[f"label {i}" for i in row] for row in indices.tolist()]
    labels[0][0] = "<b>tabby</b> cat"
    return Prediction(indices=indices, probs=probs, labels=labels)


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, list[Explanation]]:
    """A report written to a temporary folder, with the explanations used."""
    expls = _explanations()
    images = _smooth(torch.rand(N, 3, 4, 4, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    path = build_report(
        expls,
        tmp_path / "out",
        images=images,
        names=[NASTY, "dog.jpg"],
        predictions=_predictions(),
        errors=[{"image": "dog.jpg", "method": "occlusion", "error": "failed: <b>boom</b>"}],
        title="Test <report>",
    )
    return path, expls


def test_files_written(built: tuple[Path, list[Explanation]]) -> None:
    path, _ = built
    assert path.name == "report.html"
    for name in ("report.html", "results.json", "maps.npz"):
        assert (path.parent / name).is_file()
    assert not list(path.parent.glob("*.tmp"))
    assert report is build_report


def test_results_json(built: tuple[Path, list[Explanation]]) -> None:
    path, expls = built
    data = json.loads((path.parent / "results.json").read_text(encoding="utf-8"))
    assert data["title"] == "Test <report>"
    assert data["model"] is None
    assert "T" in data["created"]
    assert [im["name"] for im in data["images"]] == [NASTY, "dog.jpg"]

    preds = data["images"][0]["predictions"]
    assert [p["index"] for p in preds] == [1, 2, 3, 7, 8]
    assert preds[0]["label"] == "<b>tabby</b> cat"
    assert preds[0]["prob"] == pytest.approx(0.5)

    for e in expls:
        info = data["methods"][e.method]
        assert info["seconds"] == pytest.approx(e.seconds)
        assert info["signed"] is e.signed
        for i, im in enumerate(data["images"]):
            m = im["methods"][e.method]
            assert m["targets"] == e.targets[i].tolist()
            assert len(m["target_labels"]) == T
            assert m["min"] == pytest.approx(float(e.maps[i].min()))
            assert m["max"] == pytest.approx(float(e.maps[i].max()))

    # Labels come from the predictions where known, else a generic name.
    assert data["images"][0]["methods"]["gradient"]["target_labels"][0] == "<b>tabby</b> cat"
    params = data["methods"]["gradient"]["params"]
    assert params == {"layer": "features/3", "baseline": [0.0, 0.0], "note": "<img src=x>"}
    assert data["methods"]["integrated_gradients"]["params"]["fn"].startswith("<built-in")
    extras = data["methods"]["gradient"]["extras"]
    assert extras == {"layer_name": "features.3", "scale": 2.5}  # the big mask is left out
    assert data["errors"] == [
        {"image": "dog.jpg", "method": "occlusion", "error": "failed: <b>boom</b>"}
    ]


def test_maps_npz_round_trip(built: tuple[Path, list[Explanation]]) -> None:
    path, expls = built
    with np.load(path.parent / "maps.npz") as npz:
        assert sorted(npz.files) == sorted(
            [f"maps/{e.method}" for e in expls] + [f"targets/{e.method}" for e in expls]
        )
        for e in expls:
            maps = npz[f"maps/{e.method}"]
            targets = npz[f"targets/{e.method}"]
            assert maps.dtype == np.float32 and targets.dtype == np.int64
            np.testing.assert_array_equal(maps, e.maps.numpy())
            np.testing.assert_array_equal(targets, e.targets.numpy())


def test_html_escaped_and_offline(built: tuple[Path, list[Explanation]]) -> None:
    text = built[0].read_text(encoding="utf-8")
    assert "<script>alert(1)</script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&amp;" in text
    assert "<b>boom</b>" not in text and "&lt;b&gt;boom&lt;/b&gt;" in text
    assert "<b>tabby</b>" not in text
    assert "<img src=x>" not in text
    assert "Test &lt;report&gt;" in text
    urls = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", text)
    assert urls, "expected some src/href attributes"
    assert not [u for u in urls if u.lower().startswith(("http:", "https:", "//"))]
    assert not re.search(r"https?://", text)
    srcs = re.findall(r"""<img[^>]*\ssrc="([^"]+)\"""", text)
    assert srcs and all(s.startswith(("data:image/jpeg;base64,", "data:image/png;base64,"))
                        for s in srcs)  # fmt: skip
    # photos and overlays are JPEG; only the two colour bars (legend, captions) are PNG
    png = {s for s in srcs if s.startswith("data:image/png")}
    jpeg = [s for s in srcs if s.startswith("data:image/jpeg")]
    assert len(png) == 2 and len(jpeg) == N * (2 + 2 + 2 * T)


def test_defaults_from_inputs_and_no_methods(tmp_path: Path) -> None:
    expls = _explanations()
    for e in expls:
        e.inputs = torch.randn(N, 3, H, W)
    path = build_report(expls, tmp_path / "a")
    data = json.loads((path.parent / "results.json").read_text())
    assert [im["name"] for im in data["images"]] == ["image 0", "image 1"]
    assert data["images"][0]["methods"]["gradient"]["target_labels"][0] == "class 1"
    assert path.read_text().count("data:image/jpeg;base64,") == N * (2 + 2 + 2 * T)

    empty = build_report(
        [],
        tmp_path / "b",
        images=torch.rand(N, 3, H, W),
        predictions=_predictions(),
        errors=[{"image": None, "method": "gradcam", "error": "no conv layer"}],
    )
    text = empty.read_text()
    assert "No method produced a map" in text and "no conv layer" in text
    data = json.loads((empty.parent / "results.json").read_text())
    assert data["methods"] == {} and len(data["images"]) == N
    with np.load(empty.parent / "maps.npz") as npz:
        assert npz.files == []


def test_duplicate_method_names_and_mismatch(tmp_path: Path) -> None:
    a, _ = _explanations()
    path = build_report([a, a], tmp_path, images=torch.rand(N, 3, H, W))
    data = json.loads((path.parent / "results.json").read_text())
    assert list(data["methods"]) == ["gradient", "gradient-2"]
    with pytest.raises(ValueError, match="number of images"):
        build_report([a], tmp_path, names=["only one"])


def test_json_safe() -> None:
    assert json_safe({"a": (1, 2.0), "b": float("nan"), 3: np.float32(1.5)}) == {
        "a": [1, 2.0],
        "b": None,
        "3": 1.5,
    }
    assert extras_subset({"t": torch.ones(3), "obj": object()}) == {"t": [1.0, 1.0, 1.0]}


def _open_in_browser(path: Path, screenshot: str) -> tuple[list, list[str], list[str], str]:
    """Load ``path`` in headless Chromium; return image states, requests, errors, url."""
    from report.chromium import open_page

    with open_page(path) as (page, seen):
        sizes = page.evaluate(
            "() => Array.from(document.images, im => [im.complete, im.naturalWidth])"
        )
        assert "<script>" not in page.title()
        page.screenshot(path=screenshot, full_page=True)
    return sizes, seen["requests"], seen["errors"], path.resolve().as_uri()


@pytest.mark.browser
def test_report_in_browser(built: tuple[Path, list[Explanation]]) -> None:
    """Load the report in headless Chromium: all images decode, no errors, no network."""
    path, _ = built
    sizes, requests, console_errors, url = _open_in_browser(path, "/tmp/report_screenshot.png")
    expected = N + N * 2 + N * 2 * T  # grid photos + grid cells + per-target overlays
    assert len(sizes) >= expected
    assert all(done and width > 0 for done, width in sizes), sizes
    assert console_errors == []
    assert [u for u in requests if u != url and not u.startswith("data:")] == []


@pytest.mark.browser
def test_real_report_in_browser(tmp_path: Path) -> None:
    """A report of the bundled model on a sample photo, as `cnnlens explain` writes it."""
    import cnnlens as cl
    from cnnlens.pipeline import explain_files

    run = explain_files(
        cl.load_model(), [], methods="gradcam,cam,gradient", target="top2", out_dir=tmp_path
    )
    assert run.ok and run.errors == []
    sizes, requests, console_errors, url = _open_in_browser(
        run.report_path, "/tmp/real_report_screenshot.png"
    )
    # 3 photos + 3x3 grid cells + 3 photos again + 3x3x2 per-target overlays (+ colour bars)
    assert sum(1 for _, w in sizes if w == 224) >= 3 + 9 + 3 + 18
    assert all(done and width > 0 for done, width in sizes)
    assert console_errors == []
    assert [u for u in requests if u != url and not u.startswith("data:")] == []


def test_edit_panel_for_learned_masks(tmp_path: Path) -> None:
    # a method whose extras hold a mask, the edited image and scores gets an "edit" panel:
    # mask, edited image with "p -> p'", deleted area and the optimisation curves (SVG)
    import base64
    import xml.dom.minidom

    import cnnlens as cl
    from helpers import tiny_cnn

    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    e = cl.attribute(tiny_cnn(), x, "perturbation", target=[[1], [2]], iterations=6, mask_scale=4)
    g = cl.attribute(tiny_cnn(), x, "gradient", target=[[1], [2]])
    html = build_report([g, e], tmp_path).read_text()
    assert html.count('class="edit"') == 2  # one panel per image, none for gradient
    before, after = float(e.extras["score_before"][0, 0]), float(e.extras["score"][0, 0])
    assert f"{before:.3f} → {after:.3f}" in html
    assert f"area {100 * float(e.extras['area'][0, 0]):.1f}%" in html
    charts = re.findall(r'src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(charts) == 4  # score/area and loss, per image
    svg = base64.b64decode(charts[0]).decode()
    xml.dom.minidom.parseString(svg)  # well-formed
    assert "score" in svg and "area" in svg


def test_edit_panel_for_extremal_masks(tmp_path: Path) -> None:
    # extremal perturbations carry the same mask result: one panel per image, target and area
    import base64

    import cnnlens as cl
    from cnnlens.core.masks import MaskResult
    from helpers import tiny_cnn

    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    e = cl.attribute(tiny_cnn(), x, "extremal", target=[[1], [2]], areas=(0.1, 0.3), iterations=6)
    html = build_report([e], tmp_path).read_text()
    assert html.count('class="edit"') == 4
    r = MaskResult.of(e)
    for i, k in ((0, 0), (1, 1)):
        before, after = float(r.score_before[i, 0]), float(r.score[i, 0, k])
        assert f"{before:.3f} → {after:.3f}" in html
        assert f"area {100 * float(r.area[i, 0, k]):.1f}%" in html
    assert html.count("(target 10%)") == html.count("(target 30%)") == 2
    charts = re.findall(r'src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(charts) == 8  # score/area and the regulariser, per panel
    assert "regulariser" in base64.b64decode(charts[1]).decode()


def test_edit_panels_survive_joining_batches(tmp_path: Path) -> None:
    # the pipeline explains one image at a time and joins the parts (Explanation.cat):
    # every image keeps its edit panel, with its own scores
    import cnnlens as cl
    from cnnlens.core.explanation import Explanation
    from cnnlens.core.masks import MaskResult
    from helpers import tiny_cnn

    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    parts = [
        cl.attribute(
            tiny_cnn(), x[i : i + 1], "perturbation", target=[[i + 1]], iterations=4, mask_scale=4
        )  # fmt: skip
        for i in range(2)
    ]
    joined = Explanation.cat(parts)
    r = MaskResult.of(joined)
    assert r.mask.shape[0] == 2
    torch.testing.assert_close(r.score[1], MaskResult.of(parts[1]).score[0])
    html = build_report([joined], tmp_path).read_text()
    assert html.count('class="edit"') == 2
    after = float(MaskResult.of(parts[1]).score[0, 0, 0])
    assert f"→ {after:.3f}" in html
