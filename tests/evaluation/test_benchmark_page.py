"""The benchmark page's example maps: every header sits over its own column (issue 23).

The rows start with a row number; the header row used to lack a cell for it, so each
method's name sat over the previous column (``gradcam`` over the photo) and the last
method (``random``) had no header.
"""

from __future__ import annotations

import re
import types
from pathlib import Path

import pytest
import torch

from cnnlens.evaluation.tables import html_page

METHODS = ["gradcam", "occlusion", "gradient", "rise", "centre", "random"]
N_EXAMPLES = 3


def _result() -> types.SimpleNamespace:
    gen = torch.Generator().manual_seed(0)
    return types.SimpleNamespace(
        suite="planted",
        rows=[{"method": m, "pointing": 0.1 * i} for i, m in enumerate(METHODS)],
        failures=[],
        settings={"n_test": 20},
        seconds=5.0,
        examples={
            "images": torch.rand(N_EXAMPLES, 3, 32, 32, generator=gen),
            "masks": torch.rand(N_EXAMPLES, 32, 32, generator=gen) > 0.7,
            "maps": {m: torch.rand(N_EXAMPLES, 32, 32, generator=gen) for m in METHODS},
        },
    )


def _examples_table(text: str) -> str:
    return text.split('<table class="maps">', 1)[1].split("</table>", 1)[0]


def test_header_row_has_a_cell_for_every_column() -> None:
    table = _examples_table(html_page(_result(), date="2026-01-02"))
    head, body = table.split("</thead>", 1)
    headers = [re.sub(r"<[^>]+>", "", h) for h in re.findall(r"<th[^>]*>(.*?)</th>", head)]
    assert headers == ["#", "image", *METHODS]
    rows = re.findall(r"<tr>(.*?)</tr>", body)
    assert len(rows) == N_EXAMPLES
    for k, row in enumerate(rows, start=1):
        cells = re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row)
        assert len(cells) == len(headers)
        assert cells[0] == str(k)
        assert re.findall(r'alt="([^"]+)"', row) == [f"example {k}", *METHODS]
        assert re.findall(r'<div class="cap"[^>]*>([^<]+)</div>', row) == ["image", *METHODS]


@pytest.mark.browser
def test_headers_sit_over_their_maps_in_browser(tmp_path: Path) -> None:
    """In Chromium: the header above each cell (by position) names that cell's map."""
    from report.chromium import open_page, outside_requests

    path = tmp_path / "benchmark.html"
    path.write_text(html_page(_result(), date="2026-01-02"), encoding="utf-8")
    with open_page(path, width=1400, height=900) as (page, seen):
        found = page.evaluate("""() => {
          const table = document.querySelector('table.maps');
          const heads = Array.from(table.querySelectorAll('thead th'), th => {
            const r = th.getBoundingClientRect();
            return {text: th.textContent.trim(), left: r.left, right: r.right};
          });
          const rows = Array.from(table.querySelectorAll('tbody tr'), tr =>
            Array.from(tr.querySelectorAll('td'), td => {
              const img = td.querySelector('img').getBoundingClientRect();
              const x = img.left + img.width / 2;
              const over = heads.filter(h => h.left <= x && x < h.right).map(h => h.text);
              return {over, cap: td.querySelector('.cap').textContent, alt:
                      td.querySelector('img').alt, w: img.width};
            }));
          return {heads: heads.map(h => h.text), rows};
        }""")
        page.screenshot(path=str(tmp_path / "benchmark.png"), full_page=True)
        assert seen["errors"] == [] and outside_requests(path, seen) == []
    assert found["heads"] == ["#", "image", *METHODS]  # "random" has its header
    assert len(found["rows"]) == N_EXAMPLES
    for k, cells in enumerate(found["rows"], start=1):
        assert [c["over"] for c in cells] == [["image"]] + [[m] for m in METHODS]
        assert [c["cap"] for c in cells] == ["image", *METHODS]
        assert [c["alt"] for c in cells] == [f"example {k}", *METHODS]
        assert all(c["w"] == 112 for c in cells)
