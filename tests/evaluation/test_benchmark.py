"""The benchmark runner: rows per method, baselines, resuming, outputs, CLI, VOC suite."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import cnnlens as cl
from cnnlens.evaluation import maps as maps_module
from cnnlens.evaluation.sources import planted_suite, voc_suite
from cnnlens.evaluation.suite import run_benchmark
from cnnlens.evaluation.tables import html_page, markdown, write_outputs
from helpers import tiny_cnn

FIXTURES = Path(__file__).parents[1] / "fixtures"
TINY_TRAIN = {"epochs": 1, "n_train": 96, "width": 8, "progress": False}


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CNNLENS_CACHE", str(cache))
        from cnnlens.datasets import PlantedSpec

        spec = PlantedSpec(size=48, seed=3)
        return planted_suite(12, 8, 8, spec=spec, train=TINY_TRAIN)


def test_rows_for_methods_and_baselines_and_failures_recorded(suite, tmp_path):
    params = {"gradcam": {"layer": "no.such.layer"}}
    res = run_benchmark(suite, ["gradient", "gradcam"], tmp_path, params=params, chunk=5,
                        sanity_images=3)  # fmt: skip
    assert [r["method"] for r in res.rows] == ["gradient", "centre", "random"]
    assert [f["method"] for f in res.failures] == ["gradcam"]
    assert "no.such.layer" in res.failures[0]["error"]
    g = res.row("gradient")
    for key in ("pointing", "relevance_mass", "rank_accuracy", "deletion_auc", "insertion_auc",
                "loc_value", "loc_energy", "loc_mean", "cue_clean", "cue_confounded"):  # fmt: skip
        assert 0.0 <= g[key] <= 1.0, key
    assert -1.0 <= g["sanity_rho"] <= 1.0
    assert "sanity_rho" not in res.row("centre")  # baselines have no model to randomise
    assert g["n"] == 12 and g["seconds_per_image"] > 0


def test_centre_baseline_scores_what_geometry_says(suite, tmp_path):
    res = run_benchmark(suite, [], tmp_path, sanity_images=0)
    test = suite.test
    h, w = test.masks.shape[-2:]
    r = 15 * min(h, w) / 224  # the default tolerance, scaled from 224 px
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    near = ((yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2) <= r * r  # around the peak
    hits = torch.tensor([bool((m & near).any()) for m in test.masks])
    per_class = [hits[test.targets == c].float().mean() for c in test.targets.unique()]
    expected = float(torch.stack(per_class).mean())
    assert res.row("centre")["pointing"] == pytest.approx(expected)


def test_rerun_resumes_from_cached_chunks(suite, tmp_path, monkeypatch):
    first = run_benchmark(suite, ["gradient"], tmp_path, chunk=5, sanity_images=0)
    chunks = sorted((tmp_path / "maps" / "test").glob("gradient-*/*.pt"))
    assert len(chunks) == 3  # 12 images, 5 per chunk
    chunks[1].unlink()  # as if the run had stopped there
    calls = []
    real = maps_module.attribute

    def counting(*args, **kwargs):
        calls.append(args[1].shape[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(maps_module, "attribute", counting)
    again = run_benchmark(suite, ["gradient"], tmp_path, chunk=5, sanity_images=0)
    assert calls == [5]  # only the missing chunk was computed (test split, gradient)
    a, b = first.row("gradient"), again.row("gradient")
    for key in ("pointing", "relevance_mass", "deletion_auc", "loc_energy", "cue_confounded"):
        assert a[key] == pytest.approx(b[key]), key


def test_a_resumed_run_does_not_rescore_finished_methods(suite, tmp_path, monkeypatch):
    import cnnlens.evaluation.suite as suite_module

    first = run_benchmark(suite, ["gradient"], tmp_path, chunk=5, sanity_images=2)
    scored = []
    real = suite_module.score_maps

    def counting(*args, **kwargs):
        scored.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(suite_module, "score_maps", counting)
    again = run_benchmark(suite, ["gradient"], tmp_path, chunk=5, sanity_images=2)
    assert scored == []  # gradient, centre and random rows all read back
    for method in ("gradient", "centre", "random"):
        a, b = first.row(method), again.row(method)
        assert a.keys() == b.keys()
        for key, value in a.items():
            if isinstance(value, float):
                assert value == pytest.approx(b[key], nan_ok=True), (method, key)
    assert torch.equal(first.examples["maps"]["gradient"], again.examples["maps"]["gradient"])
    other = run_benchmark(suite, ["gradient"], tmp_path, chunk=5, sanity_images=3)
    assert len(scored) == 3  # another sanity setting: every row scored again
    assert other.row("gradient")["n"] == first.row("gradient")["n"]


def test_an_interrupted_run_keeps_finished_chunks(suite, tmp_path, monkeypatch):
    real, calls = maps_module.attribute, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(maps_module, "attribute", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(suite, ["gradient"], tmp_path, chunk=5, sanity_images=0)
    assert len(list((tmp_path / "maps" / "test").glob("gradient-*/*.pt"))) == 2


def test_other_parameters_do_not_reuse_cached_maps(suite, tmp_path):
    run_benchmark(suite, ["smoothgrad"], tmp_path, chunk=12, sanity_images=0)
    run_benchmark(suite, ["smoothgrad"], tmp_path, chunk=12, sanity_images=0,
                  params={"smoothgrad": {"samples": 3}})  # fmt: skip
    assert len(list((tmp_path / "maps" / "test").glob("smoothgrad-*"))) == 2


def test_other_targets_do_not_reuse_cached_maps(suite, tmp_path):
    store = maps_module.MapStore(tmp_path, suite.model, chunk=4)
    x, t = suite.test.x[:4], suite.test.targets[:4]
    first, _ = store.maps("test", "gradient", x, t)
    other, _ = store.maps("test", "gradient", x, (t + 1) % 3)
    again, _ = store.maps("test", "gradient", x, t)
    assert len(list((tmp_path / "test").glob("gradient-*"))) == 2
    assert not torch.equal(first, other) and torch.equal(first, again)


def test_outputs_table_json_and_escaped_html(suite, tmp_path):
    res = run_benchmark(suite, ["gradient"], tmp_path, sanity_images=0)
    res.rows[0]["method"] = "<script>x</script>"
    paths = write_outputs(res, tmp_path, date="2026-11-22")
    md = paths["md"].read_text()
    assert "| method | pointing ↑" in md and "2026-11-22" in md
    assert len([line for line in md.splitlines() if line.startswith("| ")]) == 1 + 3
    data = json.loads(paths["json"].read_text())
    assert [r["method"] for r in data["rows"]][1:] == ["centre", "random"]
    page = html_page(res)
    assert "<script>x</script>" not in page and "&lt;script&gt;" in page
    assert page.count("<img") == (1 + 3) * res.examples["images"].shape[0]
    assert "nan" not in markdown(res).lower()


def _voc_root(tmp_path: Path) -> Path:
    from cnnlens.datasets import read_voc

    root = tmp_path / "VOC2012"
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    for xml in sorted((FIXTURES / "voc").glob("*.xml")):
        (root / "Annotations" / xml.name).write_text(xml.read_text())
        ann = read_voc(xml)[0]
        img = Image.new("RGB", (ann.width, ann.height), (120, 90, 60))
        img.save(root / "JPEGImages" / Path(ann.image_path).name)
    return root


def test_voc_suite_pairs_every_class_present(tmp_path):
    from cnnlens.datasets import read_voc

    root = _voc_root(tmp_path)
    anns = read_voc(root / "Annotations")
    names = sorted({o.label for a in anns for o in a.objects})
    model = cl.LoadedModel(tiny_cnn(num_classes=len(names)), cl.Preprocess(crop=32, resize=None),
                           class_names=names)  # fmt: skip
    suite = voc_suite(root, model)
    pairs = sum(len({o.label for o in a.objects}) for a in anns)
    assert len(suite.test) == pairs
    assert suite.test.masks.shape[1:] == (32, 32)
    for m, boxes in zip(suite.test.masks, suite.test.boxes):
        assert m.any() and boxes
    res = run_benchmark(suite, ["gradient"], tmp_path / "out", sanity_images=0)
    assert math.isfinite(res.row("gradient")["pointing"])
    assert "loc_energy" not in res.row("gradient")  # no held-out split to choose α on


def test_cli_benchmark_writes_the_table(tmp_path, monkeypatch):
    from cnnlens.cli import app
    from cnnlens.cli.checks import parse_params

    assert parse_params(["rise.masks=100", "occlusion.window=8", "gradcam.layer=block4"]) == {
        "rise": {"masks": 100},
        "occlusion": {"window": 8},
        "gradcam": {"layer": "block4"},
    }
    monkeypatch.setenv("CNNLENS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "bench"
    args = ["benchmark", "--methods", "gradient,gradcam", "--images", "6", "--val-images", "4",
            "--cue-images", "4", "--sanity-images", "2", "--epochs", "1", "--train-images", "64",
            "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "| gradcam |" in result.output
    assert {p.name for p in out.iterdir()} >= {"benchmark.md", "benchmark.json", "benchmark.html"}
    bad = CliRunner().invoke(app, ["benchmark", "--suite", "imagenet"])
    assert bad.exit_code == 2 and "planted, voc, coco" in bad.output
