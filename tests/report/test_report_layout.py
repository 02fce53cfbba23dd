"""The report page at scale (issue 23): 19 methods at 1400 px, colour-bar ends, parameters,
compact pictures and the page size in the footer."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cnnlens.core.explanation import Explanation
from cnnlens.models.base import Prediction
from cnnlens.report import build_report
from cnnlens.report.pictures import human_size, jpeg_bytes, photo
from cnnlens.report.views import method_cells, param_rows

SHOTS = Path("/tmp/cnnlens-shots")


def _photos(n: int = 3) -> torch.Tensor:
    """The first ``n`` bundled sample photos, ``(n, 3, 224, 224)`` in [0, 1]."""
    from cnnlens.io import sample_images

    out = []
    for pil in list(sample_images().values())[:n]:
        arr = np.asarray(pil.convert("RGB").resize((224, 224)), dtype=np.float32) / 255
        out.append(torch.from_numpy(arr).permute(2, 0, 1))
    return torch.stack(out)


def _cnn_methods() -> list[str]:
    from cnnlens.methods import get_method, method_names

    return [m for m in method_names() if get_method(m).family != "transformer"]


N_METHODS = len(_cnn_methods())


def _nineteen(n: int = 3) -> list[Explanation]:
    """One explanation with smooth random maps per registered method (every 4th signed)."""
    from cnnlens.methods import get_method, method_names

    # the issue counted 19 methods; every registered CNN method since (32 on 2026-12-03)
    names = [m for m in method_names() if get_method(m).family != "transformer"]
    assert len(names) >= 19
    gen = torch.Generator().manual_seed(0)
    out = []
    for j, name in enumerate(names):
        coarse = torch.rand(n, 1, 7, 7, generator=gen) - (0.5 if j % 4 == 1 else 0.0)
        out.append(
            Explanation(
                maps=F.interpolate(coarse, size=(224, 224), mode="bicubic", align_corners=False),
                targets=torch.tensor([[281], [967], [417]])[:n],
                method=name,
                params={"layer": None, "field_cap": None, "steps": 8},
                seconds=0.25 * j,
                signed=j % 4 == 1,
                extras={"layer": "layer4.1"} if j % 2 else {},
            )
        )
    return out


def _predictions() -> Prediction:
    indices = torch.tensor([[281, 282], [967, 968], [417, 418]])
    labels = [["tabby", "tiger cat"], ["espresso", "cup"], ["balloon", "kite"]]
    return Prediction(indices=indices, probs=torch.tensor([[0.8, 0.1]] * 3), labels=labels)


@pytest.fixture(scope="module")
def wide_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wide")
    names = ["chelsea", "coffee", "astronaut"]
    return build_report(_nineteen(), out, images=_photos(), names=names, predictions=_predictions())


# Per header link: every text node (one name part, see templating.wrap_parts) and the
# number of line boxes it occupies; a part cut mid-word would occupy two.
_HEADER_PARTS = """() => Array.from(document.querySelectorAll('table.grid thead th a'), a => {
  const parts = Array.from(a.childNodes).filter(n => n.nodeType === 3).map(n => {
    const r = document.createRange(); r.selectNodeContents(n);
    return [n.textContent, r.getClientRects().length];
  });
  const cs = getComputedStyle(a.closest('th'));
  return {name: a.textContent, parts, wrap: cs.overflowWrap, brk: cs.wordBreak,
          lines: Math.round(a.getBoundingClientRect().height / parseFloat(cs.lineHeight))};
})"""


@pytest.mark.browser
def test_nineteen_methods_at_1400px(wide_report: Path) -> None:
    """The grid scrolls sideways with its image column fixed, names wrap only at ``_``,
    the per-image maps sit side by side, and a click shows a map enlarged."""
    from report.chromium import open_page, outside_requests

    SHOTS.mkdir(exist_ok=True)
    with open_page(wide_report, width=1400, height=900) as (page, seen):
        page.screenshot(path=str(SHOTS / "report-19-methods-1400.png"), full_page=True)
        box = page.evaluate("""() => { const s = document.querySelector('.scroll');
          const r = s.getBoundingClientRect(), cs = getComputedStyle(s);
          return {sw: s.scrollWidth, cw: s.clientWidth, ox: cs.overflowX, h: r.height,
                  vh: innerHeight, right: r.right, vw: innerWidth}; }""")
        assert box["sw"] > box["cw"] + 1000  # 19+ columns do not fit: the rest scrolls
        assert box["ox"] in ("auto", "scroll")
        # the box fits the window, so its scroll bar is on screen, not below 3 tall rows
        assert box["h"] <= box["vh"] and box["right"] <= box["vw"]

        def xs() -> tuple[float, float]:
            return page.evaluate("""() => [
              document.querySelector('table.grid tbody td.first img').getBoundingClientRect().x,
              document.querySelectorAll('table.grid thead th')[5].getBoundingClientRect().x]""")

        photo_x, col_x = xs()
        page.evaluate("() => { document.querySelector('.scroll').scrollLeft = 700; }")
        page.wait_for_timeout(100)
        photo_after, col_after = xs()
        assert abs(photo_after - photo_x) < 1  # the image column stays put ...
        assert col_after == pytest.approx(col_x - 700, abs=1)  # ... while the maps move
        page.screenshot(path=str(SHOTS / "report-19-methods-scrolled.png"))

        headers = page.evaluate(_HEADER_PARTS)
        assert len(headers) == N_METHODS
        for h in headers:
            assert (h["wrap"], h["brk"]) == ("normal", "normal"), h
            assert all(lines == 1 for _, lines in h["parts"]), h  # no part split over lines
        long = next(h for h in headers if h["name"] == "contrastive_excitation_backprop")
        assert [p for p, _ in long["parts"]] == ["contrastive_", "excitation_", "backprop"]
        assert long["lines"] >= 2  # it does wrap, at the underscores

        tiles = page.evaluate("""() => Array.from(
          document.querySelectorAll('#image-0 .method'), m => [
            Math.round(m.getBoundingClientRect().top),
            Math.round(m.querySelector('figure.target img').getBoundingClientRect().top),
            Math.round(m.getBoundingClientRect().width)])""")
        assert len(tiles) == N_METHODS
        first_row = [t for t in tiles if t[0] == tiles[0][0]]
        assert len(first_row) >= 5  # side by side, not one map per full-width row
        assert len({t[1] for t in first_row}) == 1  # the maps of a row line up
        assert all(w < 400 for _, _, w in tiles)

        page.evaluate("() => { document.querySelector('.scroll').scrollLeft = 0; }")
        thumb = page.locator("table.grid tbody td:not(.first) img.zoomable").nth(3)
        src, small = thumb.get_attribute("src"), thumb.bounding_box()["width"]
        assert page.evaluate("() => document.getElementById('zoom').open") is False
        thumb.click()
        big = page.evaluate("""() => { const d = document.getElementById('zoom');
          const im = d.querySelector('img');
          return {open: d.open, src: im.src, w: im.getBoundingClientRect().width,
                  cap: d.querySelector('figcaption').textContent}; }""")
        assert big["open"] and big["src"] == src and big["w"] > 3 * small
        assert "chelsea" in big["cap"] and f" {_cnn_methods()[3]} " in big["cap"]
        page.screenshot(path=str(SHOTS / "report-zoomed.png"))
        page.keyboard.press("Escape")
        assert page.evaluate("() => document.getElementById('zoom').open") is False
        thumb.click()
        page.mouse.click(5, 5)  # a click anywhere closes it too
        assert page.evaluate("() => document.getElementById('zoom').open") is False
        assert seen["errors"] == []  # also: the policy did not block the page's script
        assert outside_requests(wide_report, seen) == []


def test_parameters_show_resolved_values_and_drop_unset_ones(wide_report: Path) -> None:
    rows = param_rows(
        {"layer": None, "field_cap": None, "mode": "auto", "window": 32, "flag": None},
        {"layer": "bn2", "mode": "incremental", "flag": True, "positions": 169},
    )
    assert rows == [
        {"key": "layer", "value": "bn2", "auto": True},
        {"key": "mode", "value": "incremental", "auto": True},
        {"key": "window", "value": "32", "auto": False},
    ]
    text = wide_report.read_text(encoding="utf-8")
    table = text.split('id="methods"', 1)[1].split("</table>", 1)[0]
    auto = '<code>layer=layer4.1 <span class="muted">(auto)</span></code>'
    assert table.count(auto) == N_METHODS // 2  # every other method records its layer
    assert "None" not in table and "field_cap" not in table
    assert table.count("<code>steps=8</code>") == N_METHODS


def test_colour_bar_ends_are_the_range_the_colours_span(tmp_path: Path) -> None:
    # 1000 values 0..999: the 99.5th percentile lies at 0.995 * 999 = 994.005 (linear
    # interpolation), so the bar runs from 0 to "≥ 994"; signed, the values are -500..499
    # and the 99.5th percentile of |v| is 497.005 (sorted |v|: 0, 1, 1, 2, 2, ..., 500)
    values = torch.arange(1000.0).view(1, 1, 20, 50)
    plain = Explanation(values, torch.tensor([[3]]), "plain")
    signed = Explanation(values - 500, torch.tensor([[3]]), "signed", signed=True)
    flat_top = values.clone().view(-1)
    flat_top[-10:] = 999.0  # the top 1% are equal: nothing is clipped
    capped = Explanation(flat_top.view(1, 1, 20, 50), torch.tensor([[3]]), "capped")

    def ends(e: Explanation) -> tuple[str, str]:
        (cell,) = method_cells(e, [None], lambda c, i: f"class {c}", 5)[0]
        return cell["lo"], cell["hi"]

    assert ends(plain) == ("0", "≥ 994")
    assert ends(signed) == ("≤ -497", "≥ 497")
    assert ends(capped) == ("0", "999")
    lo, hi = plain.display_range(0.995)
    assert float(hi) == pytest.approx(994.005) and float(lo) == 0
    shown = plain.normalized(0.995).flatten()
    assert float(shown[994]) < 1 and float(shown[995]) == 1  # colours do saturate there

    path = build_report([plain, signed], tmp_path, images=torch.rand(1, 3, 20, 50))
    text = path.read_text(encoding="utf-8")
    assert '<span class="lo">0</span>' in text and '<span class="hi">≥ 994</span>' in text
    assert '<span class="lo">≤ -497</span>' in text and '<span class="hi">≥ 497</span>' in text
    assert "map values 0 to 999" in text  # the raw range is still said (tooltip, zoom caption)


def test_overlays_are_jpeg_and_much_smaller() -> None:
    """Bytes per 224-px overlay of the chelsea photo, PNG (before) and JPEG (now)."""
    from cnnlens.colormaps import overlay

    pic = photo(_photos(1)[0])
    gen = torch.Generator().manual_seed(0)
    smooth = F.interpolate(torch.rand(1, 1, 7, 7, generator=gen), size=(224, 224), mode="bicubic")
    noisy = torch.rand(1, 1, 224, 224, generator=gen) ** 4  # speckled, like gradient maps
    sizes = {}
    for kind, m in (("smooth", smooth), ("noisy", noisy)):
        img = overlay(pic, m[0, 0].numpy(), alpha=0.5)
        png = io.BytesIO()
        img.save(png, "PNG")
        sizes[kind] = (len(png.getvalue()), len(jpeg_bytes(img)))
    print(f"bytes per overlay (PNG, JPEG): {sizes}")
    for png_size, jpeg_size in sizes.values():
        assert jpeg_size * 3 < png_size
    assert Image.open(io.BytesIO(jpeg_bytes(pic))).size == (224, 224)


def test_footer_gives_the_page_size(wide_report: Path) -> None:
    data = wide_report.read_bytes()
    footer = re.search(r"this page: ([^(<]+) \(pictures as JPEG\)", data.decode())[1]
    assert footer == human_size(len(data))
    assert footer.endswith(" MB") or footer.endswith(" kB")
    assert [human_size(n) for n in (0, 812, 48_000, 999_499, 999_500, 3_449_999)] == [
        "0 B", "812 B", "48 kB", "999 kB", "1.0 MB", "3.4 MB"
    ]  # fmt: skip
