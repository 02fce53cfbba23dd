"""Incremental and approximate occlusion: equal to naive occlusion on tiny models that cover
every supported layer type and every fallback; drill-down and quality numbers by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnlens as cl
from cnnlens.attribution.incremental import IncrementalEngine, UnsupportedGraph, regions
from cnnlens.attribution.incremental import approximate as ap
from helpers import ProgressLog, assert_unchanged, snapshot, tiny_cnn


class SameConv(nn.Conv2d):
    """TF-"same" padding computed in forward from the input shape (like timm's Conv2dSame)."""

    def forward(self, x):
        pads = []
        for n, k, s, d in zip(x.shape[:1:-1], self.kernel_size[::-1], self.stride, self.dilation):
            total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation)


class StdConv(nn.Conv2d):
    """Weight standardisation in forward: geometry verification must demote it."""

    def forward(self, x):
        w = self.weight - self.weight.mean(dim=(1, 2, 3), keepdim=True)
        return F.conv2d(x, w, self.bias, self.stride, self.padding)


class Gate(nn.Module):
    """Squeeze-and-excitation-like global gate: an unknown leaf module (full fallback)."""

    def forward(self, x):
        return x * torch.sigmoid(x.mean(dim=(2, 3), keepdim=True))


class Zoo(nn.Module):
    """Every supported layer type: strided, depthwise, grouped, dilated and same-padded
    convs, eval batch norm, in-place and functional activations, max and average pooling,
    residual addition, channel concatenation; then unknown ops and a linear head."""

    def __init__(self, unknown: bool = True):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.ReLU(inplace=True)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.grouped = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=2)
        self.same = SameConv(8, 8, 4, stride=2)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.avg = nn.AvgPool2d(3, 1, 1)
        self.branch = nn.Conv2d(8, 4, 1)
        self.std = StdConv(12, 12, 3, padding=1)
        self.gate = Gate() if unknown else nn.Identity()
        self.unknown = unknown
        self.head = nn.Linear(12, 5)
        with torch.no_grad():  # non-trivial running statistics
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        x = self.act(self.bn(self.stem(x)))
        x = x + F.hardswish(self.dw(x))
        x = self.grouped(x).relu_()
        x = self.avg(self.pool(self.same(x)))
        x = torch.cat([x, self.branch(x)], dim=1)
        if self.unknown:
            x = self.std(F.interpolate(x, scale_factor=2.0))
        x = self.gate(x)
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


def _occluded(x, positions, win, value=0.0):
    batch = x.repeat(len(positions), 1, 1, 1)
    for j, (y, xx) in enumerate(positions):
        batch[j, :, y : y + win, xx : xx + win] = value
    return batch


def _check_engine(net, size, win, positions, **kw):
    torch.manual_seed(3)
    net.eval()
    x = torch.randn(1, 3, size, size)
    eng = IncrementalEngine(net, **kw)
    with torch.inference_mode():
        base = eng.prepare(x)
        ref = net(_occluded(x, positions, win))
        q = torch.zeros(len(positions), 3, win, win)
        ys = torch.tensor([p[0] for p in positions])
        xs = torch.tensor([p[1] for p in positions])
        out = eng.run(q, ys, xs)
        assert torch.allclose(base, net(x), atol=1e-5)
    scale = float(ref.max() - ref.min())
    assert float((out - ref).abs().max()) <= 1e-4 * scale
    return eng


CORNERS = [(0, 0), (0, 27), (27, 0), (27, 27), (13, 5), (20, 11), (1, 26)]


@pytest.mark.parametrize("unknown", [False, True])
def test_engine_equals_naive_on_every_layer_type_and_border(unknown):
    eng = _check_engine(Zoo(unknown), 32, 5, CORNERS)
    kinds = {eng.windows[n].op for n in eng.windows}
    assert kinds == {"conv", "max", "avg"}
    assert "std" not in {n.target for n in eng.windows}, "custom conv forward not trusted"
    assert "same" in {n.target for n in eng.windows}, "same padding read from shapes"
    assert 0 < eng.macs_done < eng.macs_naive


def test_engine_falls_back_when_the_band_covers_the_map():
    # a big window on a small image: the band covers every map from the first layer on
    eng = _check_engine(Zoo(False), 16, 12, [(0, 0), (4, 4), (2, 3)])
    assert eng.macs_done == eng.macs_naive
    # full_fraction 0: every op on whole maps, still exact
    _check_engine(Zoo(False), 32, 5, CORNERS, full_fraction=0.0)


def test_engine_on_the_shared_tiny_cnn_and_resnet_blocks():
    import torchvision

    _check_engine(tiny_cnn(), 24, 4, [(0, 0), (20, 20), (9, 13)])
    net = torchvision.models.resnet18(weights=None, num_classes=7)
    _check_engine(net, 64, 8, [(0, 0), (56, 56), (24, 40), (8, 0)])


class MiniVGG(nn.Module):
    """torchvision's VGG layout at toy width: conv-bn-relu stacks and max pools, an adaptive
    average pool that is not a plain window (8 -> 7 cells), flatten, dropout head."""

    def __init__(self):
        super().__init__()
        import torchvision

        self.features = torchvision.models.vgg.make_layers(
            [8, 8, "M", 16, "M", 16, 16, "M"], batch_norm=True
        )
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(16 * 7 * 7, 32), nn.ReLU(True), nn.Dropout(), nn.Linear(32, 6)
        )

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def test_engine_on_a_vgg_layout_saves_most_of_the_work():
    eng = _check_engine(MiniVGG(), 64, 8, [(0, 0), (56, 56), (24, 40), (8, 0), (31, 17)])
    # the patches stay small through all three stages: most multiply-adds are skipped
    assert eng.macs_done < 0.2 * eng.macs_naive


def test_engine_does_not_touch_the_model():
    net = tiny_cnn()
    net.train()
    before = snapshot(net)
    eng = IncrementalEngine(net)
    with torch.inference_mode():
        eng.prepare(torch.randn(1, 3, 16, 16))
        eng.run(torch.zeros(2, 3, 4, 4), torch.tensor([0, 8]), torch.tensor([4, 12]))
    assert_unchanged(before, net)


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            x = -x
        return self.fc(self.conv(x).mean(dim=(2, 3)))


def test_untraceable_model_falls_back_to_naive():
    with pytest.raises(UnsupportedGraph):
        IncrementalEngine(Untraceable())
    x, net = torch.randn(1, 3, 16, 16), Untraceable()
    e = cl.attribute(net, x, "occlusion", target=1, window=4, stride=4)
    assert e.extras["mode"].startswith("exact (incremental unavailable")
    naive = cl.attribute(net, x, "occlusion", target=1, window=4, stride=4, mode="exact")
    assert torch.equal(e.maps, naive.maps)


@pytest.mark.parametrize("baseline", ["zero", "blur", 0.5])
def test_method_incremental_equals_exact(baseline):
    net = Zoo(False)
    torch.manual_seed(1)
    x = torch.randn(2, 3, 32, 32)
    kw = dict(target=[[0, 3], [4, 1]], window=6, stride=3, baseline=baseline)
    inc = cl.attribute(net, x, "occlusion", mode="incremental", batch_size=5, **kw)
    ref = cl.attribute(net, x, "occlusion", mode="exact", **kw)
    assert inc.extras["positions"] == ref.extras["positions"] == 100
    scale = float(ref.maps.max() - ref.maps.min())
    assert float((inc.maps - ref.maps).abs().max()) <= 1e-4 * scale
    assert torch.equal(inc.targets, ref.targets)


@pytest.mark.parametrize(
    "mode, extra", [("exact", {}), ("incremental", {}), ("approximate", {"drill_fraction": 0.3})]
)
def test_progress_counts_windows(mode, extra):
    log = ProgressLog()
    x = torch.randn(2, 3, 32, 32)
    with cl.progress.reporting(log):
        e = cl.attribute(
            Zoo(False),
            x,
            "occlusion",
            target=1,
            window=6,
            stride=3,
            mode=mode,
            batch_size=7,
            **extra,
        )
    [(description, total)], steps = log.starts, log.steps
    assert description == "occlusion windows" and log.finished == [description]
    # one step per batch, never more than the batch size, summing to the windows run
    assert total == e.extras["windows_run"] == sum(steps)
    assert max(steps) <= 7 and len(steps) >= total // 7
    # fine rows/columns 0, 3, ..., 24 and the border window at 26: 10 x 10 windows; the
    # coarse stride 6 runs 0, 6, ..., 24, 26 (6 x 6), then ceil(0.3 * 100) = 30 are drilled
    expected = 2 * (36 + 30) if mode == "approximate" else 2 * 100
    assert total == expected


def test_default_mode_is_incremental_on_cpu_and_reports_savings():
    # "auto": incremental on CPU, naive batches on other devices (slower there)
    assert cl.list_methods("occlusion")[0].defaults["mode"] == "auto"
    e = cl.attribute(
        Zoo(False), torch.randn(1, 3, 64, 64), "occlusion", target=0, window=8, stride=4
    )
    assert e.extras["mode"] == "incremental"
    assert 0.2 < e.extras["macs_saved"] < 1


def test_default_runs_naive_batches_when_incremental_saves_too_little():
    net, x = Zoo(False), torch.randn(1, 3, 16, 16)
    kw = dict(target=1, window=12, stride=4)
    e = cl.attribute(net, x, "occlusion", **kw)  # the band covers every map at once
    assert e.extras["mode"].startswith("exact (incremental saves too little")
    assert torch.equal(e.maps, cl.attribute(net, x, "occlusion", mode="exact", **kw).maps)


def test_approximate_mode_leaves_model_unchanged_and_is_deterministic():
    net = tiny_cnn()
    net.train()
    before = snapshot(net)
    x = torch.randn(2, 3, 48, 48)
    kw = dict(target=[[1, 3], [0, 4]], window=8, stride=4, mode="approximate", quality=True)
    e = cl.attribute(net, x, "occlusion", **kw)
    assert_unchanged(before, net)
    assert e.maps.shape == (2, 2, 48, 48) and torch.isfinite(e.maps).all()
    assert e.extras["windows_run"] < 2 * e.extras["positions"]
    assert set(e.extras["quality"]) == {"pearson", "ssim"}
    assert torch.equal(e.maps, cl.attribute(net, x, "occlusion", **kw).maps)


def test_approximate_without_cap_or_drilldown_is_exact():
    x = torch.randn(1, 3, 32, 32)
    kw = dict(target=2, window=6, stride=3)
    e = cl.attribute(
        Zoo(False), x, "occlusion", mode="approximate", field_cap=None, drill_fraction=1.0,
        quality=True, **kw,
    )  # fmt: skip
    assert e.extras["quality"]["pearson"] == pytest.approx(1.0, abs=1e-9)
    assert e.extras["quality"]["ssim"] == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize(
    "bad", [dict(mode="fast"), dict(field_cap=0.0), dict(drill_fraction=2), dict(coarse_stride=1)]
)
def test_bad_mode_parameters_are_refused(bad):
    with pytest.raises(ValueError):
        cl.attribute(tiny_cnn(), torch.randn(1, 3, 16, 16), "occlusion", target=1, window=4,
                     stride=2, **bad)  # fmt: skip


# --------------------------------------------------------------------------- by hand


def test_conv_band_by_hand():
    # k=3, s=2, p=1: output o reads inputs 2o-1 .. 2o+1; input rows [4, 6) -> outputs 2, 3
    lo, hi = regions.conv_band(torch.tensor([4]), torch.tensor([6]), 3, 2, 1, 1, 8)
    assert (lo.item(), hi.item()) == (2, 4)
    # row 7 alone: outputs 3 (reads 5..7) and 4 (reads 7..9)
    lo, hi = regions.conv_band(torch.tensor([7]), torch.tensor([8]), 3, 2, 1, 1, 8)
    assert (lo.item(), hi.item()) == (3, 5)
    # 1x1 stride 2 skips odd rows: row 3 changes no output (empty band)
    lo, hi = regions.conv_band(torch.tensor([3]), torch.tensor([4]), 1, 2, 1, 0, 8)
    assert hi.item() <= lo.item()
    # dilation 2, k=3, p=2: o reads o-2, o, o+2; input [5, 6) -> outputs 3, 5, 7 -> [3, 8)
    lo, hi = regions.conv_band(torch.tensor([5]), torch.tensor([6]), 3, 1, 2, 2, 8)
    assert (lo.item(), hi.item()) == (3, 8)
    start, size = regions.uniform(torch.tensor([0, 5]), torch.tensor([2, 8]), 7)
    assert size == 3 and start.tolist() == [0, 4]
    start, size = regions.uniform(torch.tensor([0]), torch.tensor([6]), 10, cap=2)
    assert size == 2 and start.tolist() == [2]


def test_drilldown_by_hand():
    truth = {0: 1.0, 1: 10.0, 2: 3.0, 3: 0.0, 4: 5.0}  # drop of the window at column x
    calls = []

    def run(pos):
        calls.append(list(pos))
        return torch.tensor([[truth[x]] for _, x in pos])

    fine = [(0, x) for x in range(5)]
    coarse = [(0, 0), (0, 2), (0, 4)]
    drops, used = ap.drilldown(run, fine, coarse, (2, 2), (2, 6), fraction=0.2)
    # coarse map columns: 1 1 3 3 5 5; estimates: x=1 -> (1+3)/2 = 2, x=3 -> (3+5)/2 = 4;
    # one window (ceil(0.2 * 5)) is drilled: the larger estimate, x=3, whose drop is 0
    assert drops[:, 0].tolist() == [1.0, 2.0, 3.0, 0.0, 5.0]
    assert used == 4 and calls[1] == [(0, 3)]


def test_quality_numbers_by_hand():
    a, b = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[1.0, 2.0, 5.0]])
    # centred: (-1, 0, 1) and (-5/3, -2/3, 7/3): r = 4 / (sqrt(2) sqrt(78) / 3)
    assert ap.pearson(a, b) == pytest.approx(12 / math.sqrt(156), rel=1e-12)
    assert ap.pearson(a, 3 * a + 7) == pytest.approx(1.0)
    # one 7x7 window; exact: a single 1 among zeros; approx: exact + 1 (same variance)
    e = torch.zeros(7, 7)
    e[3, 3] = 1.0
    mu, c1 = 1 / 49, 1e-4
    expected = (2 * mu * (mu + 1) + c1) / (mu**2 + (mu + 1) ** 2 + c1)
    assert ap.ssim(e + 1, e) == pytest.approx(expected, rel=1e-9)
    q = ap.quality((e + 1)[None, None], e[None, None])
    assert q["pearson"] == pytest.approx(1.0) and q["ssim"] == pytest.approx(expected)


def test_ssim_matches_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    g = torch.Generator().manual_seed(0)
    e = torch.rand(20, 24, generator=g, dtype=torch.float64)
    a = e + 0.3 * torch.rand(20, 24, generator=g, dtype=torch.float64)
    rng = float(e.max() - e.min())
    ref = metrics.structural_similarity(a.numpy(), e.numpy(), data_range=rng, win_size=7)
    assert ap.ssim(a, e) == pytest.approx(ref, rel=1e-9)
