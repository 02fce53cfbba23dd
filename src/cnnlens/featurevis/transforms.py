"""Transformation robustness: random, differentiable changes applied before each step.

An image that excites a unit only at one exact alignment is a property of the
pixel grid, not of the unit. Applying a small random transformation to the
image before every forward pass and optimising the expected objective favours
patterns that survive shifts, zooms and rotations (Mordvintsev et al. 2015,
"Inceptionism"; Olah et al. 2017, "Feature visualization", section
"Transformation robustness").

Each transform is a callable ``t(x, generator) -> x'`` on ``(B, 3, H, W)`` images
in [0, 1]; every image of the batch draws its own random parameters from the
CPU ``generator`` (so a seed fixes everything, on any device). They compose
with :class:`Compose` or a plain list.

* :class:`Pad` ``(width, value)``: a constant grey border, so that jitter and
  rotation do not drag the image's edges into view.
* :class:`Jitter` ``(d)``: a random crop of size ``(H - d, W - d)`` (a shift of
  0-d pixels in each direction).
* :class:`RandomScale` ``(low, high)``: zoom by a factor drawn uniformly from
  ``[low, high]`` around the centre, keeping the size.
* :class:`RandomRotate` ``(degrees)``: rotate by an angle drawn uniformly from
  ``[-degrees, degrees]`` around the centre.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _uniform(generator: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample each image with its own ``2 x 3`` affine matrix (output -> input coordinates)."""
    theta = theta.to(x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class Pad:
    """Pad every side by ``width`` pixels of constant ``value`` (grey by default)."""

    def __init__(self, width: int, value: float = 0.5):
        if width < 0:
            raise ValueError(f"pad width must be >= 0, got {width}")
        self.width, self.value = int(width), float(value)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.width == 0:
            return x
        return F.pad(x, (self.width,) * 4, mode="constant", value=self.value)

    def __repr__(self) -> str:
        return f"Pad({self.width}, value={self.value:g})"


class Jitter:
    """Random crop of ``(H - d, W - d)``: shifts each image by 0-d pixels."""

    def __init__(self, d: int):
        if d < 0:
            raise ValueError(f"jitter must be >= 0 pixels, got {d}")
        self.d = int(d)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.d == 0:
            return x
        b, _, h, w = x.shape
        if self.d >= min(h, w):
            raise ValueError(f"jitter {self.d} is too large for a {w}x{h} image")
        oy = torch.randint(0, self.d + 1, (b,), generator=generator).to(x.device)
        ox = torch.randint(0, self.d + 1, (b,), generator=generator).to(x.device)
        rows = oy[:, None] + torch.arange(h - self.d, device=x.device)[None, :]
        cols = ox[:, None] + torch.arange(w - self.d, device=x.device)[None, :]
        batch = torch.arange(b, device=x.device)[:, None, None]
        out = x.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
        return out.permute(0, 3, 1, 2)

    def __repr__(self) -> str:
        return f"Jitter({self.d})"


class RandomScale:
    """Zoom each image by a factor from ``[low, high]`` about its centre (same size)."""

    def __init__(self, low: float = 0.9, high: float = 1.1):
        if not 0 < low <= high:
            raise ValueError(f"scale range must satisfy 0 < low <= high, got {low}, {high}")
        self.low, self.high = float(low), float(high)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        s = _uniform(generator, x.shape[0], self.low, self.high)
        theta = torch.zeros(x.shape[0], 2, 3)
        theta[:, 0, 0] = 1.0 / s
        theta[:, 1, 1] = 1.0 / s
        return _affine(x, theta)

    def __repr__(self) -> str:
        return f"RandomScale({self.low:g}, {self.high:g})"


class RandomRotate:
    """Rotate each image by an angle from ``[-degrees, degrees]`` about its centre."""

    def __init__(self, degrees: float = 10.0):
        if degrees < 0:
            raise ValueError(f"rotation range must be >= 0 degrees, got {degrees}")
        self.degrees = float(degrees)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        a = _uniform(generator, x.shape[0], -self.degrees, self.degrees) * (math.pi / 180)
        h, w = x.shape[-2:]
        cos, sin = torch.cos(a), torch.sin(a)
        theta = torch.zeros(x.shape[0], 2, 3)
        # normalised coordinates stretch x by w and y by h; correct so the rotation is rigid
        theta[:, 0, 0] = cos
        theta[:, 0, 1] = -sin * h / w
        theta[:, 1, 0] = sin * w / h
        theta[:, 1, 1] = cos
        return _affine(x, theta)

    def __repr__(self) -> str:
        return f"RandomRotate({self.degrees:g})"


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for t in self.transforms:
            x = t(x, generator)
        return x

    def __repr__(self) -> str:
        return "Compose([" + ", ".join(map(repr, self.transforms)) + "])"


def standard(scale: float = 1.0) -> Compose:
    """The default robustness for 128-px renders: pad 12, jitter 8, scale 0.9-1.1,
    rotate +-10 degrees, jitter 4. ``scale`` multiplies the pixel amounts (use
    ``size / 128`` for other sizes)."""

    def px(v: int) -> int:
        return max(0, round(v * scale))

    return Compose(
        [Pad(px(12)), Jitter(px(8)), RandomScale(0.9, 1.1), RandomRotate(10.0), Jitter(px(4))]
    )


def as_transform(spec) -> Compose:
    """``"standard"``, ``None``/``"none"`` (identity), a transform, or a list of transforms."""
    if spec is None or spec == "none":
        return Compose([])
    if spec == "standard":
        return standard()
    if isinstance(spec, Compose):
        return spec
    if isinstance(spec, (list, tuple)):
        return Compose(spec)
    if callable(spec):
        return Compose([spec])
    raise ValueError(f"transforms must be 'standard', 'none', a transform or a list, got {spec!r}")
