"""DeepLIFT (rescale) and DeepLIFT-SHAP: hand-computed multipliers, Captum 0.9 cross-checks,
completeness, functional activations, and refusals of operations without a rule."""

from __future__ import annotations

import copy
import functools
import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import cnnlens as cl
from cnnlens.attribution.deeplift import deeplift, deeplift_shap
from cnnlens.models.base import LoadedModel
from helpers import tiny_cnn

captum_dl = pytest.importorskip("captum.attr._core.deep_lift")
DeepLift, DeepLiftShap = captum_dl.DeepLift, captum_dl.DeepLiftShap


def _run(net, x, target=0, **kw) -> torch.Tensor:
    return deeplift(LoadedModel.wrap(net.eval()), x, target, **kw).maps[:, 0]


def _captum(cls, net, x, ref, target) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(net.eval()).attribute(x, ref, target=target).sum(1).detach()


def _agree(ours: torch.Tensor, theirs: torch.Tensor) -> tuple[float, float]:
    a, b = ours.flatten().double(), theirs.flatten().double()
    pearson = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
    return pearson, float((a - b).abs().max() / (b.max() - b.min()))


# ----------------------------------------------------------------------------- by hand


class Mlp(nn.Module):
    """x (1, 1, 1, 2) -> Linear(W1, b1) -> ReLU -> Linear(W2): weights chosen by hand."""

    def __init__(self, functional: bool = False):
        super().__init__()
        self.functional = functional
        self.fc1, self.relu, self.fc2 = nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1, bias=False)
        with torch.no_grad():
            self.fc1.weight.copy_(torch.tensor([[1.0, -1.0], [2.0, 1.0]]))
            self.fc1.bias.copy_(torch.tensor([0.0, -1.0]))
            self.fc2.weight.copy_(torch.tensor([[1.0, 2.0]]))

    def forward(self, x):
        z = self.fc1(x.flatten(1))
        return self.fc2(F.relu(z) if self.functional else self.relu(z))


X = torch.tensor([[[[3.0, 1.0]]]])


@pytest.mark.parametrize("functional", [False, True])
def test_rescale_multipliers_by_hand(functional):
    # z = W1 x + b1 = [3 - 1, 6 + 1 - 1] = [2, 6]; on the zero reference z0 = b1 = [0, -1].
    # ReLU multipliers (y - y0) / (z - z0) = [(2 - 0) / 2, (6 - 0) / 7] = [1, 6/7].
    # Input multipliers W1^T (W2^T * m) = W1^T [1, 12/7] = [1 + 24/7, -1 + 12/7] = [31/7, 5/7].
    # Contributions (x - 0) * m = [93/7, 5/7]; they add up to 14 = s(x) - s(0) = (2 + 12) - 0.
    out = deeplift(LoadedModel.wrap(Mlp(functional)), X, 0)
    torch.testing.assert_close(out.maps[0, 0, 0], torch.tensor([93 / 7, 5 / 7]))
    assert abs(float(out.extras["delta"])) < 1e-5


def test_captum_keeps_the_gradient_of_a_functional_relu():
    # Captum hooks nn.ReLU modules only: through F.relu its multipliers are the gradient,
    # relu'(z) = [1, 1], so m = W1^T [1, 2] = [5, 1] and C = [15, 1], adding up to 16, not 14.
    theirs = _captum(DeepLift, Mlp(functional=True), X, torch.zeros_like(X), 0)
    torch.testing.assert_close(theirs[0, 0], torch.tensor([15.0, 1.0]))
    torch.testing.assert_close(_captum(DeepLift, Mlp(), X, torch.zeros_like(X), 0)[0, 0],
                               torch.tensor([93 / 7, 5 / 7]))  # fmt: skip


def test_relu6_rescale_by_hand():
    # ReLU6 on x = [8, 3] against x0 = [-1, 1]: m = [(6 - 0) / 9, (3 - 1) / 2] = [2/3, 1],
    # C = [9 * 2/3, 2 * 1] = [6, 2], adding up to (6 + 3) - (0 + 1) = 8.
    net = nn.Sequential(nn.ReLU6(inplace=True), nn.Flatten(), nn.Linear(2, 1, bias=False))
    nn.init.ones_(net[2].weight)
    got = _run(net, torch.tensor([[[[8.0, 3.0]]]]), baseline=torch.tensor([[[[-1.0, 1.0]]]]))
    torch.testing.assert_close(got[0, 0], torch.tensor([6.0, 2.0]))


class Pool(nn.Module):
    def __init__(self, relu: bool, kernel=(1, 2), stride=None):
        super().__init__()
        self.relu = nn.ReLU() if relu else nn.Identity()
        self.pool = nn.MaxPool2d(kernel, stride)

    def forward(self, x):
        return self.pool(self.relu(x)).flatten(1).sum(1, keepdim=True)


def _row(*values):
    return torch.tensor([[[list(values)]]])


def test_max_pool_rule_by_hand():
    # One window [3, 1] against [0, 2]: y = 3 at position 0, y0 = 2 at position 1, change 1,
    # all to the input's maximum (y >= y0): m = [1 / 3, 0]; the ReLU before it has
    # m = [3/3, -1/-1] = [1, 1], so C = [3 * 1/3, 0] = [1, 0]: they add up to 1.
    torch.testing.assert_close(_run(Pool(True), _row(3.0, 1.0), baseline=_row(0.0, 2.0))[0, 0],
                               torch.tensor([1.0, 0.0]))  # fmt: skip
    # Captum gives [3, 0] (sum 3): the ReLU's rule multiplies the gradient that reached its
    # output *before* the pooling rule rewrote it (both hooks sit on the same tensor).
    theirs = _captum(DeepLift, Pool(True), _row(3.0, 1.0), _row(0.0, 2.0), 0)
    torch.testing.assert_close(theirs[0, 0], torch.tensor([3.0, 0.0]))
    # The reference wins: [1, 0] against [0, 4]: change 1 - 4 = -3 goes to the reference's
    # maximum (position 1, z - z0 = -4): m = [0, 3/4], C = [0, -3].
    torch.testing.assert_close(_run(Pool(False), _row(1.0, 0.0), baseline=_row(0.0, 4.0))[0, 0],
                               torch.tensor([0.0, -3.0]))  # fmt: skip


def test_overlapping_max_pool_adds_the_changes_of_both_windows():
    # [0, 5, 0] against zeros, windows of 2 with stride 1: both pick position 1 (change 5
    # each), so C = [0, 10, 0], adding up to 5 + 5. Captum's max_unpool keeps one of them.
    x = _row(0.0, 5.0, 0.0)
    ours = _run(Pool(False, (1, 2), 1), x)
    torch.testing.assert_close(ours[0, 0], torch.tensor([0.0, 10.0, 0.0]))
    theirs = _captum(DeepLift, Pool(False, (1, 2), 1), x, torch.zeros_like(x), 0)
    torch.testing.assert_close(theirs[0, 0], torch.tensor([0.0, 5.0, 0.0]))


def test_equal_input_and_reference_gives_zero_not_nan():
    x = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    out = deeplift(LoadedModel.wrap(tiny_cnn().eval()), x, 1, baseline=x)
    assert torch.equal(out.maps, torch.zeros_like(out.maps))


# ----------------------------------------------------------------------------- Captum


class Fresh(nn.Module):
    """A copy of its input: keeps Captum's pooling hook off the previous ReLU's output."""

    def forward(self, x):
        return x.clone()


class Block(nn.Module):
    """torchvision's BasicBlock with its second ReLU a module of its own (for Captum)."""

    def __init__(self, b):
        super().__init__()
        self.b, self.relu2 = b, nn.ReLU()

    def forward(self, x):
        b = self.b
        out = b.bn2(b.conv2(b.relu(b.bn1(b.conv1(x)))))
        return self.relu2(out + (x if b.downsample is None else b.downsample(x)))


def captum_ready(net: nn.Module) -> nn.Module:
    """The same maths in the form Captum handles: no in-place ReLU, no ReLU used twice,
    a copy between a ReLU and the max pooling after it."""
    net = copy.deepcopy(net)
    for m in list(net.modules()):
        if hasattr(m, "inplace"):
            m.inplace = False
        for name, child in list(m.named_children()):
            if isinstance(child, nn.MaxPool2d):
                setattr(m, name, nn.Sequential(Fresh(), child))
            if isinstance(child, torchvision.models.resnet.BasicBlock):
                setattr(m, name, Block(child))
    return net


@functools.cache
def _resnet():
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=10)
    net.maxpool = nn.MaxPool2d(2)  # non-overlapping: Captum drops changes on the 3x3/2 stem
    return net.eval()


@functools.cache
def _vgg():
    torch.manual_seed(0)
    net = torchvision.models.vgg11(weights=None)
    net.avgpool = nn.AdaptiveAvgPool2d(1)  # a small head: the 25088 x 4096 layer only costs time
    net.classifier = nn.Sequential(nn.Linear(512, 64), nn.ReLU(True), nn.Linear(64, 10))
    return net.eval()


def test_captum_refuses_resnet_reusing_its_relu():
    net = _resnet()
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(RuntimeError, match="used more than once"):
        _captum(DeepLift, net, x, torch.zeros_like(x), 1)
    assert torch.isfinite(_run(net, x, 1)).all()  # ours reads each call on its own


@pytest.mark.parametrize("build", [_resnet, _vgg], ids=["resnet18", "vgg11"])
def test_deeplift_and_shap_match_captum(build):
    net = build()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 32, 32, generator=g)
    ref = 0.3 * torch.randn(1, 3, 32, 32, generator=g)
    ours = _run(net, x, [3, 7], baseline=ref)
    theirs = _captum(DeepLift, captum_ready(net), x, ref.expand_as(x), [3, 7])
    pearson, gap = _agree(ours, theirs)
    assert pearson >= 0.999 and gap <= 1e-4, (pearson, gap)
    dist = 0.5 * torch.randn(2, 3, 32, 32, generator=g)
    out = deeplift_shap(LoadedModel.wrap(net), x, [3, 7], baselines=dist)
    theirs = _captum(DeepLiftShap, captum_ready(net), x, dist, [3, 7])
    pearson, gap = _agree(out.maps[:, 0], theirs)
    assert pearson >= 0.999 and gap <= 1e-4, (pearson, gap)
    assert out.extras["delta_max"].abs().max() < 1e-4


@pytest.fixture(scope="module")
def bundled():
    model = cl.load_model()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    return model, x


def test_bundled_model_matches_captum_once_relu6_has_its_rule(bundled, monkeypatch):
    model, x = bundled
    ref = torch.zeros_like(x)
    ours = deeplift(model, x, 285)
    plain = _captum(DeepLift, captum_ready(model.net), x, ref, 285)
    # Captum has no rule for ReLU6 (timm's BatchNormAct2d act): it keeps the gradient there.
    assert _agree(ours.maps[:, 0], plain)[0] < 0.99
    monkeypatch.setitem(captum_dl.SUPPORTED_NON_LINEAR, nn.ReLU6, captum_dl.nonlinear)
    pearson, gap = _agree(ours.maps[:, 0], _captum(DeepLift, captum_ready(model.net), x, ref, 285))
    assert pearson >= 0.999 and gap <= 1e-4, (pearson, gap)
    with torch.no_grad():
        change = float(model.net(x)[0, 285] - model.net(ref)[0, 285])
    assert abs(float(ours.extras["delta"])) <= 1e-4 * max(1.0, abs(change))


# ----------------------------------------------------------------------------- properties


def test_shap_is_the_mean_of_deeplift_over_references_and_batching_does_not_matter():
    model = LoadedModel.wrap(tiny_cnn().eval())
    g = torch.Generator().manual_seed(3)
    x, dist = torch.randn(2, 3, 16, 16, generator=g), torch.randn(3, 3, 16, 16, generator=g)
    shap = deeplift_shap(model, x, [[1, 2], [0, 4]], baselines=dist, batch_size=2)
    each = [deeplift(model, x, [[1, 2], [0, 4]], baseline=b).maps for b in dist]
    torch.testing.assert_close(shap.maps, torch.stack(each).mean(0), atol=1e-6, rtol=1e-5)
    names = deeplift_shap(model, x, 1, baselines=["zero", "blur"]).maps
    pair = [deeplift(model, x, 1, baseline=b).maps for b in ("zero", "blur")]
    torch.testing.assert_close(names, (pair[0] + pair[1]) / 2, atol=1e-6, rtol=1e-5)


class Gated(nn.Module):
    """conv -> squeeze-excitation gate x * sigmoid(fc(pool(x))) -> head."""

    def __init__(self, inner: nn.Module | None = None):
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 4, 3), nn.Linear(4, 5)
        self.se = inner or SE()

    def forward(self, x):
        return self.head(self.se(F.relu(self.conv(x))).mean((2, 3)))


class SE(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.fc(x.mean((2, 3), keepdim=True)))


class Attention(nn.Module):
    def forward(self, x):
        t = x.flatten(2).transpose(1, 2)
        return (t.softmax(-1) + t).transpose(1, 2).reshape(x.shape)


class Clamped(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        return self.fc(x).clamp(min=0.1)  # a ReLU-like written as clamp: no rule


@pytest.mark.parametrize(
    "inner, what",
    [
        (SE(), r"at Tensor\.mul called in module 'se'.*multiplies two input-dependent"),
        (nn.GroupNorm(2, 4), r"F\.group_norm called in module 'se'.*normalises"),
        (Attention(), r"softmax called in module 'se'.*couples"),
        (Clamped(), r"clamp called in module 'se'.*nonlinear tensor maths"),
    ],
    ids=["gate", "norm", "softmax", "clamp"],
)
def test_operations_without_a_rule_are_refused(inner, what):
    x = torch.randn(1, 3, 10, 10)
    for method in ("deeplift", "deeplift_shap"):
        with pytest.raises(cl.MethodError, match=what) as err:
            cl.attribute(Gated(inner), x, method, target=1)
        assert "integrated_gradients" in str(err.value)


def test_activation_module_written_as_a_product_gets_the_rescale_rule():
    class Swish(nn.Module):  # found by behaviour; its own x * sigmoid(x) is not a gate
        def forward(self, x):
            return x * torch.sigmoid(x)

    net = nn.Sequential(nn.Conv2d(3, 4, 3), Swish(), nn.Flatten(), nn.LazyLinear(5))
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    net(x)
    out = cl.attribute(net, x, "deeplift", target=2)
    assert out.extras["delta"].abs().max() < 1e-5
    gap = _agree(out.maps, cl.attribute(net, x, "input_x_gradient", target=2, reduce="sum").maps)
    assert gap[1] > 1e-3  # not the plain gradient times input
