"""Image parameterisations: how the optimised numbers become an image in [0, 1].

Gradient ascent does not care only about *what* is optimised but *in which
coordinates* (Olah et al. 2017, "Feature visualization", Distill, section
"Preconditioning and parameterization"; Mordvintsev et al. 2018,
"Differentiable image parameterizations"). Each parameterisation here is an
:class:`ImageParam`: a list of leaf tensors to optimise and a function giving
``(B, 3, H, W)`` images in the open interval (0, 1).

* ``pixel``: one number per pixel and channel.
* ``fourier``: the image's 2-D real FFT coefficients, scaled by ``1 / f^decay``
  (``f`` the spatial frequency in cycles per pixel, floored at ``1 / max(H, W)``).
  Natural images have roughly a ``1 / f`` amplitude spectrum, so equal steps on
  the coefficients change the image with natural statistics instead of
  favouring high frequencies.
* ``dense``: the seeds' "generator" baseline — a dense layer applied to the
  constant input 1, whose weights are the image (mathematically pixel space;
  kept for comparison with the Keras recipe, usually trained with SGD).

``decorrelate=True`` (all but ``dense`` by default) optimises in a decorrelated
colour space: ``rgb = M d`` with ``M = V diag(sqrt(lambda))``, the square root of
the ImageNet RGB covariance from its principal components (eigenvalues
``lambda`` and eigenvectors ``V`` published with AlexNet, Krizhevsky et al.
2012, section 4.1), scaled so its largest column has norm 1. A sigmoid maps the
result to (0, 1), so every parameterisation yields a valid image whatever the
parameter values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

# ImageNet RGB principal components (Krizhevsky et al. 2012): columns are eigenvectors.
_EIGVAL = torch.tensor([0.2175, 0.0188, 0.0045])
_EIGVEC = torch.tensor(
    [
        [-0.5675, 0.7192, 0.4009],
        [-0.5808, -0.0045, -0.8140],
        [-0.5836, -0.6948, 0.4203],
    ]
)
_SQRT_COV = _EIGVEC * _EIGVAL.sqrt()
#: Decorrelated -> RGB colour matrix (3 x 3), largest column norm 1.
COLOR_MATRIX = _SQRT_COV / _SQRT_COV.norm(dim=0).max()

#: Gain of the Fourier parameterisation: with the default ``sd`` the initial image
#: is a faint cloud around grey and one Adam step of 0.05 changes it gently.
FOURIER_GAIN = 0.25

_EPS = 1e-4


@dataclass
class ImageParam:
    """Optimisable tensors and the function that turns them into images.

    Attributes:
        params: leaf tensors with ``requires_grad=True``, handed to the optimiser.
        image_fn: returns ``(B, 3, H, W)`` images in (0, 1), differentiable in ``params``.
        name: ``"fourier"``, ``"pixel"``, ``"dense"`` or a custom name.
    """

    params: list[torch.Tensor]
    image_fn: Callable[[], torch.Tensor]
    name: str

    def __call__(self) -> torch.Tensor:
        return self.image_fn()


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if h < 8 or w < 8:
        raise ValueError(f"image size must be at least 8x8, got {h}x{w}")
    return h, w


def _to_rgb(d: torch.Tensor, decorrelate: bool) -> torch.Tensor:
    if decorrelate:
        d = torch.einsum("rc,bchw->brhw", COLOR_MATRIX.to(d.device, d.dtype), d)
    return torch.sigmoid(d)


def _from_rgb(image: torch.Tensor, decorrelate: bool) -> torch.Tensor:
    """Inverse of :func:`_to_rgb` (for starting from a given image)."""
    z = torch.logit(image.clamp(_EPS, 1 - _EPS))
    if decorrelate:
        inv = torch.linalg.inv(COLOR_MATRIX).to(z.device, z.dtype)
        z = torch.einsum("cr,brhw->bchw", inv, z)
    return z


def _randn(shape, sd: float, generator, device) -> torch.Tensor:
    # Drawn on the CPU so the same seed gives the same start on every device.
    return (torch.randn(shape, generator=generator) * sd).to(device)


def _check_init(init: torch.Tensor | None, n: int, hw: tuple[int, int]) -> None:
    if init is not None and tuple(init.shape) != (n, 3, *hw):
        raise ValueError(f"init must have shape {(n, 3, *hw)}, got {tuple(init.shape)}")


def pixel(
    n: int,
    size: int | tuple[int, int] = 128,
    *,
    sd: float = 0.01,
    decorrelate: bool = True,
    init: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
) -> ImageParam:
    """One parameter per pixel and channel.

    Args:
        n: number of images.
        size: side or ``(H, W)``.
        sd: standard deviation of the random start (before the sigmoid).
        decorrelate: optimise in decorrelated colour space.
        init: optional start images ``(n, 3, H, W)`` in [0, 1] (then ``sd`` is unused).
        generator: CPU random generator for the start.
        device: where the parameters live.
    """
    hw = _size(size)
    _check_init(init, n, hw)
    if init is None:
        raw = _randn((n, 3, *hw), sd, generator, device)
    else:
        raw = _from_rgb(init.detach().to(device, torch.float32), decorrelate)
    raw.requires_grad_(True)
    return ImageParam([raw], lambda: _to_rgb(raw, decorrelate), "pixel")


def frequencies(h: int, w: int, device=None) -> torch.Tensor:
    """Frequency magnitude (cycles per pixel) of each ``rfft2`` coefficient: ``(h, w // 2 + 1)``."""
    fy = torch.fft.fftfreq(h, device=device)[:, None]
    fx = torch.fft.rfftfreq(w, device=device)[None, :]
    return torch.sqrt(fx**2 + fy**2)


def fourier(
    n: int,
    size: int | tuple[int, int] = 128,
    *,
    sd: float = 0.01,
    decay: float = 1.0,
    decorrelate: bool = True,
    init: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
) -> ImageParam:
    """Coefficients of the image's real 2-D FFT, scaled by ``1 / f^decay``.

    Args:
        n: number of images.
        size: side or ``(H, W)``.
        sd: standard deviation of the random coefficients at the start.
        decay: exponent of the frequency scaling (0: white, plain pixels in another basis).
        decorrelate: optimise in decorrelated colour space.
        init: optional start images ``(n, 3, H, W)`` in [0, 1].
        generator: CPU random generator for the start.
        device: where the parameters live.
    """
    h, w = _size(size)
    _check_init(init, n, (h, w))
    scale = frequencies(h, w).clamp(min=1.0 / max(h, w)).pow(-decay).to(device)
    scale = scale * FOURIER_GAIN
    if init is None:
        coeffs = _randn((n, 3, h, w // 2 + 1, 2), sd, generator, device)
    else:
        d = _from_rgb(init.detach().to(device, torch.float32), decorrelate)
        spec = torch.fft.rfft2(d, norm="ortho") / scale
        coeffs = torch.view_as_real(spec).contiguous()
    coeffs.requires_grad_(True)

    def image():
        spec = torch.view_as_complex(coeffs) * scale
        d = torch.fft.irfft2(spec, s=(h, w), norm="ortho")
        return _to_rgb(d, decorrelate)

    return ImageParam([coeffs], image, "fourier")


def dense(
    n: int,
    size: int | tuple[int, int] = 128,
    *,
    sd: float = 0.01,
    decorrelate: bool = False,
    init: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
) -> ImageParam:
    """The "generator" baseline: ``image = sigmoid(reshape(W @ [1]))`` for a dense ``W``.

    One dense layer per image maps the constant input 1 to ``3 x H x W`` outputs;
    its weights are what is optimised, the network stays frozen. Same arguments
    as :func:`pixel`.
    """
    h, w = _size(size)
    _check_init(init, n, (h, w))
    if init is None:
        weight = _randn((n, 3 * h * w, 1), sd, generator, device)
    else:
        raw = _from_rgb(init.detach().to(device, torch.float32), decorrelate)
        weight = raw.reshape(n, 3 * h * w, 1).clone()
    weight.requires_grad_(True)
    one = torch.ones(n, 1, 1, device=device)

    def image():
        return _to_rgb(torch.bmm(weight, one).view(n, 3, h, w), decorrelate)

    return ImageParam([weight], image, "dense")


#: Parameterisations by name, as ``render(param=...)`` and the CLI accept them.
PARAMS: dict[str, Callable[..., ImageParam]] = {"fourier": fourier, "pixel": pixel, "dense": dense}
