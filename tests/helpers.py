"""Small models and inputs shared by tests (no weights are downloaded)."""

from __future__ import annotations

import torch
from torch import nn


class RaiseInBackward(torch.autograd.Function):
    """Identity forward; raises in backward (to test cleanup mid-backward)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("backward failure injected by the test")


class Trap(nn.Module):
    """Identity that can raise on forward or backward when armed."""

    def __init__(self):
        super().__init__()
        self.mode = "off"

    def forward(self, x):
        if self.mode == "forward":
            raise RuntimeError("forward failure injected by the test")
        if self.mode == "backward":
            return RaiseInBackward.apply(x)
        return x


def tiny_cnn(num_classes: int = 5, seed: int = 0) -> nn.Module:
    """Conv-BN-ReLU(inplace)-Conv-ReLU6-GAP-Linear: every method applies to it."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(inplace=True),
        Trap(),
        nn.Conv2d(4, 6, 3, padding=1, stride=2),
        nn.ReLU6(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, num_classes),
    )


def snapshot(net: nn.Module) -> dict:
    """Everything a cnnlens call must leave unchanged."""
    return {
        "training": [m.training for m in net.modules()],
        "requires_grad": [p.requires_grad for p in net.parameters()],
        "params": [p.detach().clone() for p in net.parameters()],
        "buffers": [b.detach().clone() for b in net.buffers()],
        "inplace": [getattr(m, "inplace", None) for m in net.modules()],
        "hooks": [sum(len(getattr(m, a)) for a in HOOK_ATTRS) for m in net.modules()],
    }


HOOK_ATTRS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
)


def assert_unchanged(before: dict, net: nn.Module) -> None:
    after = snapshot(net)
    assert after["training"] == before["training"], "training flags changed"
    assert after["requires_grad"] == before["requires_grad"], "requires_grad changed"
    assert after["inplace"] == before["inplace"], "in-place flags changed"
    assert after["hooks"] == before["hooks"], "hooks left on the model"
    for a, b in zip(after["params"], before["params"]):
        assert torch.equal(a, b), "parameters changed"
    for a, b in zip(after["buffers"], before["buffers"]):
        assert torch.equal(a, b), "buffers (e.g. BN running stats) changed"


class ProgressLog:
    """A progress reporter that records what it is told: ``starts`` as (description,
    total), every ``advance`` in ``steps``, and the ``finished`` descriptions."""

    def __init__(self):
        self.starts: list[tuple[str, int]] = []
        self.steps: list[int] = []
        self.finished: list[str] = []

    def start(self, description: str, total: int):
        self.starts.append((description, total))
        return lambda k=1: self.steps.append(k)

    def finish(self, description: str) -> None:
        self.finished.append(description)


def tiny_vit(num_classes: int = 5, seed: int = 0) -> nn.Module:
    """A 2-block timm ViT on 48 px inputs behind a Trap at index 3 (as in tiny_cnn),
    with a random (not zero) head, for the transformer methods."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)
    vit = VisionTransformer(
        img_size=48, patch_size=8, embed_dim=16, depth=2, num_heads=2, num_classes=num_classes
    )
    nn.init.normal_(vit.head.weight, std=0.5)
    return nn.Sequential(nn.Identity(), nn.Identity(), nn.Identity(), Trap(), vit)


class StopAfter:
    """A progress reporter that presses Ctrl-C once ``n`` steps have been reported."""

    def __init__(self, n: int):
        self.n, self.seen = n, 0

    def start(self, description: str, total: int):
        def advance(k: int = 1) -> None:
            self.seen += k
            if self.seen >= self.n:
                raise KeyboardInterrupt

        return advance

    def finish(self, description: str) -> None:
        pass
