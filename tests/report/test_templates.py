"""Every HTML page and SVG chart renders through one autoescaping jinja environment.

Each page is rendered with hostile text in every place user text can reach it
(titles, layer and class names, captions, file names, settings, errors): the text
must come out escaped, and no ``<script>`` may appear beyond the page's own. A
source scan checks that no module but :mod:`cnnlens.report.templating` escapes
HTML itself or builds a document by hand.
"""

from __future__ import annotations

import re
import subprocess
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import jinja2
import numpy as np
import pytest
import torch
from markupsafe import Markup
from PIL import Image

from cnnlens.core.explanation import Explanation
from cnnlens.models.base import Prediction
from cnnlens.report import templating

HOSTILE = "<script>alert(1)</script>\"'&"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#x27;&amp;"
SRC = Path(__file__).resolve().parents[2] / "src" / "cnnlens"


def _assert_escaped(text: str, own_scripts: int = 0) -> None:
    """``HOSTILE`` appears only escaped; the page has only its own ``<script>`` elements."""
    assert HOSTILE not in text and "<script>alert" not in text
    assert ESCAPED in text
    assert text.count("<script") == own_scripts
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text)


def _picture() -> Image.Image:
    return Image.new("RGB", (8, 8), (30, 120, 200))


def test_sections_page():
    from cnnlens.featurevis.page import Section, render_page

    pic = _picture()
    text = render_page(
        HOSTILE,
        [Section(HOSTILE, HOSTILE, pic, [(pic, HOSTILE), (pic, "plain")]), Section("empty")],
        {"layer": HOSTILE, HOSTILE: 3},
    )
    _assert_escaped(text)
    assert text.count(ESCAPED) == 9  # title 2, setting key and value, heading 2, note, caption 2
    assert text.count(f'alt="{ESCAPED}"') == 2 and text.count("data:image/png;base64,") == 3


def test_siam_page_and_bars():
    from cnnlens.siam.explain import SiamExplanation
    from cnnlens.siam.page import bars_svg, render_explanation

    k = 3
    contributions = torch.tensor([[[1.5, -0.5, 0.25], [0.1, 0.2, -0.3]]])
    expl = SiamExplanation(
        attributes=[HOSTILE, "b", "c"],
        outputs=[HOSTILE, "other"],
        output=torch.tensor([[1.75, 0.0]]),
        bias=torch.tensor([0.5, 0.0]),
        contributions=contributions,
        pooled=torch.ones(1, k, 1),
        presence=torch.full((1, k), 0.5),
        weights=torch.ones(2, k),
        maps=torch.rand(1, k, 8, 8, generator=torch.Generator().manual_seed(0)),
        explained=torch.tensor([0]),
    )
    text = render_explanation(_picture(), expl, title=HOSTILE, settings={"ckpt": HOSTILE})
    _assert_escaped(text)
    assert f"prediction ({ESCAPED}): <b>1.7500</b>" in text
    assert f'<text x="4" y="18">{ESCAPED}</text>' in text  # the largest bar comes first
    assert "|difference| 0.00e+00" in text and text.count("<figure>") == 1 + 2 + 1
    svg = bars_svg([HOSTILE, "b"], [2.0, -1.0])
    ET.fromstring(svg)
    assert ESCAPED in svg and "<script" not in svg
    assert '<rect x="300.0" y="7" width="190.0" height="14" fill="#2ca02c"/>' in svg
    assert '<rect x="205.0" y="27" width="95.0" height="14" fill="#d62728"/>' in svg


def test_map_page(tmp_path):
    from cnnlens.analysis import write_map_page

    coords = np.array([[0.0, 0.0], [1.0, 2.0], [2.0, 1.0]])
    path = write_map_page(
        tmp_path / "sub" / "map.html",
        coords,
        [HOSTILE + ".png", "b.png", "c.png"],
        ["cat", HOSTILE, "cat"],
        HOSTILE,
        _picture(),
        {"model": HOSTILE},
    )
    text = path.read_text(encoding="utf-8")
    _assert_escaped(text, own_scripts=1)  # the zoom/pan script
    assert f"<title>{ESCAPED}.png · cat</title>" in text
    assert f"{ESCAPED} (1)</span>" in text and "cat (2)</span>" in text
    assert '<circle cx="20.0" cy="980.0" r="4"' in text and '<circle cx="500.0" cy="20.0"' in text


def test_benchmark_page():
    from cnnlens.evaluation.tables import html_page

    gen = torch.Generator().manual_seed(0)
    result = types.SimpleNamespace(
        suite=HOSTILE,
        rows=[
            {"method": HOSTILE, "pointing": 0.5, "deletion_auc": 0.25},
            {"method": "b", "pointing": 0.75, "deletion_auc": float("nan")},
            {"method": "centre", "pointing": 0.9},
        ],
        failures=[{"method": HOSTILE, "error": HOSTILE}],
        settings={"n_test": 2, "layer": HOSTILE},
        seconds=12.3,
        examples={
            "images": torch.rand(2, 3, 8, 8, generator=gen),
            "masks": torch.rand(2, 8, 8, generator=gen) > 0.5,
            "maps": {HOSTILE: torch.rand(2, 8, 8, generator=gen)},
        },
    )
    text = html_page(result, date="2026-01-02")
    _assert_escaped(text)
    assert f"<h1>cnnlens benchmark: {ESCAPED}</h1>" in text
    assert f"<li><b>{ESCAPED}</b>: {ESCAPED}</li>" in text
    # best per column in bold, the centre baseline excluded; NaN shown as a dash
    assert f"<tr><th>{ESCAPED}</th><td>0.500</td><td><b>0.250</b></td></tr>" in text
    assert "<tr><th>b</th><td><b>0.750</b></td><td>–</td></tr>" in text
    assert text.count("<img") == 2 * 2 and text.count(f'alt="{ESCAPED}"') == 2


def test_report_page(tmp_path):
    from cnnlens.report import build_report

    expl = Explanation(
        maps=torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0)),
        targets=torch.tensor([[1]]),
        method=HOSTILE,
        params={"layer": HOSTILE},
    )
    preds = Prediction(
        indices=torch.tensor([[1, 0]]), probs=torch.tensor([[0.75, 0.25]]), labels=[[HOSTILE, "x"]]
    )
    path = build_report(
        [expl],
        tmp_path,
        images=torch.rand(1, 3, 8, 8),
        names=[HOSTILE],
        predictions=preds,
        errors=[{"image": HOSTILE, "method": HOSTILE, "error": HOSTILE}],
        title=HOSTILE,
    )
    text = path.read_text(encoding="utf-8")
    _assert_escaped(text, own_scripts=1)  # the click-to-enlarge script
    assert f"<title>{ESCAPED}</title>" in text and f'<td class="msg">{ESCAPED}</td>' in text
    # the policy allows exactly that script, by the hash of its text
    import base64
    import hashlib

    body = text.split("<script>", 1)[1].split("</script>", 1)[0]
    digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', text)[1]
    assert f"script-src 'sha256-{digest}'" in policy and "default-src 'none'" in policy
    assert "unsafe-inline'; script" in policy and policy.count("unsafe") == 1  # styles only


def test_line_chart():
    from cnnlens.report.charts import line_chart

    svg = line_chart({HOSTILE: [1.0, 2.0], "b": [2.0, None]}, title=HOSTILE, xlabel=HOSTILE,
                     ylabel=HOSTILE, colors=["#000", HOSTILE])  # fmt: skip
    root = ET.fromstring(svg)
    _assert_escaped(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert [g.get("data-name") for g in root.iter(f"{ns}g") if g.get("class")] == [HOSTILE, "b"]
    assert root.find(f"{ns}title").text == HOSTILE


def test_environment_is_strict_and_escapes_once():
    env = templating.environment()
    assert env is templating.environment()  # built once
    with pytest.raises(jinja2.UndefinedError):
        env.from_string("{{ missing }}").render()
    template = env.from_string("{{ a }}|{{ b }}|{{ 3.14159|num('.2f') }}")
    page = template.render(a=HOSTILE, b=Markup("<i>x</i>"))
    assert page == f"{ESCAPED}|<i>x</i>|3.14"
    assert templating.escape(templating.escape(HOSTILE)) == ESCAPED  # markup is not escaped twice
    for name in env.list_templates():  # every shipped template compiles
        env.get_template(name)
    assert {"base.html.j2", "report.html.j2", "line_chart.svg.j2"} <= set(env.list_templates())


def test_only_the_templating_module_escapes_or_writes_documents():
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        text = path.read_text(encoding="utf-8")
        if rel != "report/templating.py":
            for needle in ("html.escape(", "markupsafe", "Markup("):
                if needle in text:
                    offenders.append(f"{rel}: {needle}")
        if re.search(r"<!doctype|<html[\s>]", text, re.IGNORECASE):
            offenders.append(f"{rel}: builds an HTML document (use a template)")
    assert offenders == []


def test_package_data_ships_the_templates():
    text = (SRC.parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    assert '"report/templates/*.j2"' in text
    assert all(p.suffix == ".j2" for p in templating.TEMPLATE_DIR.iterdir())


def test_cl_report_stays_callable_after_a_page_module_is_imported(tmp_path):
    # importing a subpackage binds it as an attribute of its parent; cnnlens/__init__
    # imports the light report package first and binds the function after it
    code = (
        "import sys, torch, cnnlens as cl, cnnlens.featurevis.page\n"
        "print(cl.report([], sys.argv[1], images=torch.rand(1, 3, 8, 8)))\n"
    )
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.stdout.strip() == str(tmp_path / "report.html")
    assert "No method produced a map" in (tmp_path / "report.html").read_text()
    import cnnlens as cl
    import cnnlens.report.builder  # noqa: F401

    assert callable(cl.report) and cl.report.__module__ == "cnnlens.report"
