"""One tiny network written in three layouts, for tests of layout reading.

``Twin`` is the channels-first reference (patch conv -> 1x1 conv ``proj`` ->
activation -> global mean -> fc); ``ChannelsLast`` computes the same function with
``proj`` an ``nn.Linear`` on an ``(N, h, w, C)`` map; ``Tokens`` on a token sequence
that starts with a class token. With the same weights the three agree, so any
per-position reading of ``proj`` must agree too; a layout read wrongly (height
taken as channels, the class token taken as a position) would not.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

C, K, S = 6, 3, 2  # channels, classes, patch stride: an 8x8 input gives a 4x4 grid


def weights(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = {"embed": (C, 3, S, S), "proj": (C, C), "fc": (K, C)}
    out = {}
    for name, shape in shapes.items():
        out[name] = torch.randn(shape, generator=g) / shape[1] ** 0.5
        out[name + "_b"] = torch.randn(shape[0], generator=g) * 0.1
    return out


class Twin(nn.Module):
    """The reference: patch conv -> 1x1 conv ``proj`` -> GELU -> global mean -> fc."""

    def __init__(self, w: dict, act: type[nn.Module] = nn.GELU):
        super().__init__()
        self.embed = nn.Conv2d(3, C, S, stride=S)
        self.proj = nn.Conv2d(C, C, 1)
        self.act = act()
        self.fc = nn.Linear(C, K)
        with torch.no_grad():
            self.embed.weight.copy_(w["embed"])
            self.embed.bias.copy_(w["embed_b"])
            self.proj.weight.copy_(w["proj"][:, :, None, None])
            self.proj.bias.copy_(w["proj_b"])
            self.fc.weight.copy_(w["fc"])
            self.fc.bias.copy_(w["fc_b"])

    def forward(self, x):
        return self.fc(self.act(self.proj(self.embed(x))).mean((2, 3)))


class ChannelsLast(nn.Module):
    """The same function with ``proj`` an ``nn.Linear`` on an (N, h, w, C) map."""

    def __init__(self, w: dict, act: type[nn.Module] = nn.GELU):
        super().__init__()
        twin = Twin(w, act)
        self.embed, self.act, self.fc = twin.embed, twin.act, twin.fc
        self.proj = nn.Linear(C, C)
        with torch.no_grad():
            self.proj.weight.copy_(w["proj"])
            self.proj.bias.copy_(w["proj_b"])

    def forward(self, x):
        return self.fc(self.act(self.proj(self.embed(x).permute(0, 2, 3, 1))).mean((1, 2)))


class Tokens(ChannelsLast):
    """The same function on tokens: a class token, then the 4x4 patches row by row."""

    def __init__(self, w: dict, token_name: str = "cls_token", act: type[nn.Module] = nn.GELU):
        super().__init__(w, act)
        self.token_name = token_name
        setattr(self, token_name, nn.Parameter(torch.randn(1, 1, C)))

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        cls = getattr(self, self.token_name).expand(len(x), -1, -1)
        h = self.act(self.proj(torch.cat([cls, t], dim=1)))
        return self.fc(h[:, 1:].mean(1))


class Blind(ChannelsLast):
    """Channels-last, but nothing says so: the linear map is functional, GELU the layer."""

    def forward(self, x):
        a = F.linear(self.embed(x).permute(0, 2, 3, 1), self.proj.weight, self.proj.bias)
        return self.fc(self.act(a).mean((1, 2)))


class PlainTokens(ChannelsLast):
    """The same function on a token sequence without special tokens (the 4x4 patches)."""

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        return self.fc(self.act(self.proj(t)).mean(1))
