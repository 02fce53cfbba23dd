"""The support matrix (docs/support.md): every registered method on every architecture of
``cnnlens.evaluation.support_archs.ARCHS`` (torchvision, timm, Hugging Face configs and
the bundled model, random weights) gives a finite, non-constant map on the input grid or
refuses with a ``MethodError``; never another exception, a NaN or a constant map. Each
cell's outcome must be the one ``docs/support.json`` records, and ``docs/support.md``
must be what that JSON gives, so the page is the code's own output.

Each architecture is built once (the cells run architecture by architecture and only the
current one is kept). Score-CAM and Ablation-CAM on the four 768/1024-channel models (one
forward pass per channel, 10-40 s each) are marked ``slow``: ``-m "not slow"`` leaves them out.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from cnnlens.core.errors import MethodError
from cnnlens.evaluation import support
from cnnlens.evaluation.support_archs import ARCHS, arch, build
from cnnlens.methods import method_names
from helpers import tiny_cnn

DOCS = Path(__file__).resolve().parents[1] / "docs"
REGENERATE = "re-run `python benchmarks/support_matrix.py` and review the diff of docs/support.md"
METHODS = method_names()
SLOW = {
    (a, m)
    for a in ("swin_t", "vit_b_16", "convnext_tiny", "densenet121")
    for m in ("scorecam", "ablationcam")
}
# Cells that fail today: bugs to fix, listed here so that they stay visible (strict: a fix
# makes the test fail until the entry goes).
KNOWN_FAILURES = {
    ("timm/levit_128s", "scorecam"): "Score-CAM's softmax weights are near uniform on a random "
    "model and the channel mean of LeViT's signed last-stage tokens is negative at every "
    "position, so the clamped map is zero",
    **dict.fromkeys(
        [("convnext_tiny", "ablationcam"), ("timm/convnext_nano", "ablationcam")],
        "ConvNeXt's last stage is signed (no ReLU at its end) and on the random model the "
        "ablation-weighted sum is negative at all four positions of the 2x2 map, so the clamped "
        "map is zero (checked by hand: -0.55..-0.27 and -0.24..-0.21 before the ReLU)",
    ),
}


def _marks(name: str, method: str) -> list:
    marks = [pytest.mark.slow] if (name, method) in SLOW else []
    if (name, method) in KNOWN_FAILURES:
        marks.append(pytest.mark.xfail(reason=KNOWN_FAILURES[name, method], strict=True))
    return marks


CELLS = [
    pytest.param(a.name, m, marks=_marks(a.name, m), id=f"{a.name}-{m}")
    for a in ARCHS
    for m in METHODS
]


@pytest.fixture(scope="module", autouse=True)
def _one_cpu_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # small models: one thread is as fast and steadier under load
    yield
    torch.set_num_threads(before)


_BUILT: dict[str, tuple] = {}


def _built(name: str):
    if name not in _BUILT:
        _BUILT.clear()  # one architecture at a time
        _BUILT[name] = build(arch(name))
    return _BUILT[name]


@pytest.fixture(scope="module")
def recorded() -> dict:
    cells, _ = support.from_json((DOCS / "support.json").read_text(encoding="utf-8"))
    return {(c.arch, c.method): c for c in cells}


@pytest.mark.parametrize(("name", "method"), CELLS)
def test_cell_gives_a_map_or_refuses(name, method, recorded):
    if arch(name).library == "transformers":
        pytest.importorskip("transformers", reason="Hugging Face models need the hf extra")
    model, x = _built(name)
    cell = support.run_cell(model, x, name, method)
    assert cell.kind in ("map", "refused"), f"{name} / {method}: {cell.kind}: {cell.reason}"
    if cell.kind == "refused":
        assert cell.reason and "\n" not in cell.reason, "a refusal is one line saying why"
    want = recorded.get((name, method))
    assert want is not None, f"{name} / {method} is not in docs/support.json; {REGENERATE}"
    assert cell.outcome() == want.outcome(), f"docs/support.json says otherwise; {REGENERATE}"


# ----------------------------------------------------------------------------- the page


def test_page_is_what_the_json_gives():
    cells, meta = support.from_json((DOCS / "support.json").read_text(encoding="utf-8"))
    page = (DOCS / "support.md").read_text(encoding="utf-8")
    assert page == support.markdown(cells, meta), REGENERATE


def test_json_covers_every_architecture_and_method():
    cells, meta = support.from_json((DOCS / "support.json").read_text(encoding="utf-8"))
    assert [(c.arch, c.method) for c in cells] == [(a.name, m) for a in ARCHS for m in METHODS], (
        REGENERATE
    )
    assert meta["sizes"] == {a.name: a.size for a in ARCHS}
    assert all(c.kind in support.KINDS for c in cells)


def test_matrix_has_the_architectures_the_issue_names():
    names = {a.name for a in ARCHS}
    named = "swin_t vit_b_16 googlenet densenet121 mobilenet_v3_small regnet_y_400mf"
    named += " squeezenet1_1 efficientnet_b0 timm/vit_tiny_patch16_224"
    named += " timm/deit_tiny_patch16_224 timm/convnext_nano timm/levit_128s"
    named += " timm/mobilevitv2_050 timm/efficientnet_b0"
    assert set(named.split()) <= names
    assert {a.library for a in ARCHS} == {"torchvision", "timm", "transformers", "bundled"}
    # >= 20 architectures in the quick run: only single cells are slow, never a whole row
    assert len(ARCHS) >= 20
    assert all(any((a.name, m) not in SLOW for m in METHODS) for a in ARCHS)


# ----------------------------------------------------------------------------- the cells


def test_check_map_accepts_a_map_and_names_each_defect():
    x = torch.zeros(1, 3, 8, 6)
    good = torch.arange(48.0).reshape(1, 1, 8, 6)
    assert support.check_map(good, x) == ""
    assert "shape (1, 1, 4, 3)" in support.check_map(good[..., ::2, ::2], x)
    assert "expected (1, 1, 8, 6)" in support.check_map(good.expand(1, 2, 8, 6), x)
    nan = good.clone()
    nan[0, 0, 2, 3] = float("nan")
    nan[0, 0, 5, 1] = float("inf")
    assert support.check_map(nan, x) == "2 of 48 map values are not finite"
    assert support.check_map(torch.full((1, 1, 8, 6), 0.25), x) == (
        "constant map (every value 0.25)"
    )
    # a map that differs from a constant only by float rounding is constant too
    assert support.check_map(1e3 + good * 1e-7, x).startswith("constant map")


class _Raises(nn.Module):
    def forward(self, x):
        raise RuntimeError("shapes do not match")


class _NaN(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = tiny_cnn()

    def forward(self, x):
        return self.net(x) * float("nan")


def test_run_cell_tells_maps_refusals_and_failures_apart():
    x = torch.randn(1, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    cell = support.run_cell(tiny_cnn(), x, "tiny", "gradient")
    assert (cell.kind, cell.reason, cell.arch, cell.method) == ("map", "", "tiny", "gradient")
    assert support.run_cell(tiny_cnn(), x, "tiny", "gradcam").outcome() == ("map", "", "5")
    cell = support.run_cell(tiny_cnn(), x, "tiny", "attention_rollout")
    assert cell.kind == "refused" and "self-attention" in cell.reason
    with pytest.raises(MethodError, match=cell.reason[:30]):
        import cnnlens as cl

        cl.attribute(tiny_cnn(), x, "attention_rollout")
    cell = support.run_cell(_Raises(), x, "raises", "occlusion")
    assert cell.outcome() == ("failure", "RuntimeError: shapes do not match", "")
    cell = support.run_cell(_NaN(), x, "nan", "gradient", target=0)
    assert cell.kind == "failure" and "not finite" in cell.reason


def test_short_reasons_and_share():
    cells = [
        support.Cell("a", "gradcam", "map"),
        support.Cell("a", "cam", "refused", "CAM needs global average pooling of 'x' ..."),
        support.Cell(
            "a", "excitation_backprop", "refused",
            "excitation backprop is undefined at module 'f.0' (LayerNorm): it divides ...",
        ),
        support.Cell("a", "attention_rollout", "refused", "Net has no global self-attention"),
        support.Cell("a", "rise", "failure", "constant map (every value 0)"),
    ]  # fmt: skip
    labels = [support.short_reason(c) for c in cells]
    assert labels == ["✓", "head not GAP+linear", "EB: LayerNorm", "no ViT attention", "FAILURE"]
    assert support.short_reason(support.Cell("a", "b", "refused", "one two three")) == (
        "one two three"
    )
    assert support.share_of_maps(cells) == 0.2
    again, meta = support.from_json(support.to_json(cells, {"k": 1}))
    assert [c.outcome() for c in again] == [c.outcome() for c in cells] and meta == {"k": 1}


# ------------------------------------------------------- fixes the matrix found (core/)


class _PooledTokens(nn.Module):
    """Hugging Face Swin's head in small: tokens -> final norm -> transpose ->
    AdaptiveAvgPool1d -> linear. 32 px, 4 px patches: 8 x 8 tokens of 16 features, so
    the pooled (N, 16, 1) could pass for 16 tokens on a 4 x 4 grid (stride 8)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Conv2d(3, 16, 4, stride=4)
        self.norm = nn.LayerNorm(16)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2) + 0.5  # (N, 64, 16), residual-like
        pooled = self.pool(self.norm(tokens).transpose(1, 2))  # (N, 16, 1)
        return self.head(pooled.flatten(1))


def test_sequence_pooling_is_never_read_as_tokens():
    from cnnlens.core.layers import default_layer
    from cnnlens.core.layouts import layout_of

    net = _PooledTokens().eval()
    with pytest.raises(MethodError, match=r"\(N, 16, 1\) is pooled over a sequence"):
        layout_of(net, "pool", (3, 32, 32))
    # the final norm reads a tensor no candidate outputs (the embedding's output went
    # through flatten, transpose and an addition), so it stays the default
    assert default_layer(net, (32, 32)) == "norm"
    import cnnlens as cl

    e = cl.attribute(net, torch.randn(1, 3, 32, 32), "gradcam")
    assert (e.extras["layer"], e.extras["layout"]) == ("norm", "tokens (0 prefix + 8x8 grid)")
