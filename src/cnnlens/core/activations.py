"""Activations recognised by what they compute, not by their class.

Modified-backward methods (guided backprop, deconvnet, excitation backprop) need
to know which units are activations and what kind. A class list misses timm's
own classes (``timm.layers.GELU``, ``Swish``, ``HardSwish``, ``QuickGELU``) and
every user-written one, so cnnlens *probes* instead.

**The rule.** A candidate is a leaf module with no parameters and no buffers (or
one of torch's own activation classes, such as a single-slope ``nn.PReLU``), or an
activation function called inside ``forward`` (see
:mod:`cnnlens.core.functional`). Its ``forward`` runs, without hooks or autograd,
on a fixed ``(2, 3, 6, 9)`` float32 probe holding the grid ``z = -8, -7.95, ...,
8``. It is an activation when the output has the input's shape, is finite, is the
same on a second run, is *elementwise* (permuting the input's entries permutes the
output's in the same way) and is not affine (an identity, an eval-mode dropout or
a scale are not activations). The curve ``f(z)`` then names its family:

* ``relu``: ``f(z) = max(z, 0)`` (to 1e-5);
* ``clipped``: ``f(z) = min(max(z, 0), t)`` with ``0 < t < 8`` (ReLU6, ``t = 6``);
* ``rectifier``: ``f(z)`` within 10% of ``z`` for ``z`` in ``[4, 8]`` and
  ``|f(z)| <= |z| / 2`` for ``z`` in ``[-8, -4]``: it passes large inputs and
  suppresses negative ones. *Signed* when it goes below zero: *self-gated*
  (``z * gate(z)``, non-monotonic: SiLU/Swish, GELU, Mish, Hardswish, QuickGELU)
  or *leaky* (monotonic: LeakyReLU, ELU, SELU, PReLU); else a non-negative rectifier
  other than max(z, 0) (Softplus, a threshold);
* ``saturating``: flat at both ends (``|f(8) - f(6)|`` and ``|f(-8) - f(-6)|``
  under 5% of its range): Sigmoid, Hardsigmoid, Tanh, Softsign;
* ``other``: any other elementwise nonlinearity.

A module whose ``forward`` fails on the probe (it needs another shape or extra
arguments, or is per-channel like a multi-slope PReLU) is not an activation.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

FAMILIES = ("relu", "clipped", "rectifier", "saturating", "other")
RECTIFYING = ("relu", "clipped", "rectifier")
_SHAPE = (2, 3, 6, 9)
_STEP = 20  # grid points per unit of z


@dataclass(frozen=True)
class Behaviour:
    """What an elementwise activation does, read from its curve on ``[-8, 8]``.

    ``family`` is one of :data:`FAMILIES`; ``top`` the ceiling of a clipped ReLU;
    ``low`` / ``at`` the curve's minimum and where it is reached; ``monotonic``
    whether it never decreases; ``lo`` / ``hi`` its range on the grid.
    """

    family: str
    top: float | None
    low: float
    at: float
    monotonic: bool
    lo: float
    hi: float

    @property
    def rectifying(self) -> bool:
        """ReLU-like or a smooth gate: passes large inputs, suppresses negative ones."""
        return self.family in RECTIFYING

    @property
    def signed(self) -> bool:
        return self.low < -1e-6

    def describe(self) -> str:
        """A short phrase naming the family, with the measured facts behind it."""
        if self.family == "relu":
            return "a ReLU, max(z, 0)"
        if self.family == "clipped":
            return f"a clipped ReLU, min(max(z, 0), {self.top:g})"
        if self.family == "rectifier" and self.signed and not self.monotonic:
            return (
                f"a self-gated activation z*gate(z), negative down to {self.low:.3g} "
                f"at z = {self.at:.3g}"
            )
        if self.family == "rectifier" and self.signed:
            return f"a leaky rectifier, negative down to {self.low:.3g} on [-8, 8]"
        if self.family == "rectifier":
            return "a non-negative rectifier that is not max(z, 0)"
        if self.family == "saturating":
            return f"a saturating squashing function with outputs in [{self.lo:.3g}, {self.hi:.3g}]"
        return "an elementwise nonlinearity that is neither a rectifier nor a squashing function"


def _grid() -> torch.Tensor:
    """The probe: the grid -8..8 in steps of 1/20, padded to :data:`_SHAPE`."""
    n = 1
    for s in _SHAPE:
        n *= s
    z = torch.arange(-8 * _STEP, 8 * _STEP + 1, dtype=torch.float32) / _STEP
    pad = torch.tensor([0.5, -0.5, 0.25], dtype=torch.float32)
    return torch.cat([z, pad])[:n].reshape(_SHAPE)


def _run(fn: Callable[[torch.Tensor], torch.Tensor], t: torch.Tensor) -> torch.Tensor | None:
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = fn(t.clone())
    except Exception:  # any failure on the probe: not an activation (see module docstring)
        return None
    if not isinstance(out, torch.Tensor) or out.shape != t.shape or not out.is_floating_point():
        return None
    return out.detach().float()


def classify(fn: Callable[[torch.Tensor], torch.Tensor]) -> Behaviour | None:
    """The :class:`Behaviour` of an elementwise function of one tensor, or None.

    Args:
        fn: called on clones of the probe tensor (it may work in place).

    Returns:
        None when ``fn`` is not an elementwise nonlinearity (see the module docstring).
    """
    p = _grid()
    out = _run(fn, p)
    if out is None or not torch.isfinite(out).all():
        return None
    n = p.numel()
    perm = (torch.arange(n) * 101) % n  # a fixed permutation (101 is prime to n)
    again = _run(fn, p)
    shuffled = _run(fn, p.flatten()[perm].reshape(_SHAPE))
    scale = max(1.0, float(out.abs().max()))
    if again is None or shuffled is None or not torch.equal(again, out):
        return None
    if (shuffled.flatten() - out.flatten()[perm]).abs().max() > 1e-6 * scale:
        return None  # couples entries (softmax, normalisation) or depends on position
    m = 16 * _STEP + 1
    z, f = p.flatten()[:m], out.flatten()[:m]
    tol = 1e-5 * scale
    at = {k: float(f[int(round((k + 8) * _STEP))]) for k in (-8, -6, 0, 6, 8)}
    slope = (at[8] - at[-8]) / 16
    if (f - (slope * z + at[0])).abs().max() <= tol:
        return None  # affine: identity, eval-mode dropout, a scale
    i = int(f.argmin())
    facts = dict(
        top=None,
        low=float(f[i]),
        at=float(z[i]),
        monotonic=bool((f.diff() >= -tol).all()),
        lo=float(f.min()),
        hi=float(f.max()),
    )
    if (f - z.clamp_min(0)).abs().max() <= tol:
        return Behaviour("relu", **facts)
    top = at[8]
    if 0 < top < 8 and (f - z.clamp(0, top)).abs().max() <= tol:
        return Behaviour("clipped", **{**facts, "top": top})
    pos, neg = z >= 4, z <= -4
    if ((f[pos] - z[pos]).abs() <= 0.1 * z[pos]).all() and (f[neg].abs() <= -0.5 * z[neg]).all():
        return Behaviour("rectifier", **facts)
    span = facts["hi"] - facts["lo"]
    if abs(at[8] - at[6]) <= 0.05 * span and abs(at[-8] - at[-6]) <= 0.05 * span:
        return Behaviour("saturating", **facts)
    return Behaviour("other", **facts)


def is_candidate(module: nn.Module) -> bool:
    """Whether ``module`` may be an activation: a leaf with no parameters or buffers,
    or a leaf whose class is one of torch's activation modules (``nn.PReLU``)."""
    if next(module.children(), None) is not None:
        return False
    if type(module).__module__.startswith("torch.nn.modules.activation"):
        return True
    if isinstance(module, nn.PReLU):
        return True
    bare = next(module.parameters(recurse=False), None) is None
    return bare and next(module.buffers(recurse=False), None) is None


def module_behaviour(module: nn.Module) -> Behaviour | None:
    """The :class:`Behaviour` of an activation module, or None if it is not one.

    The module's ``forward`` is called directly on the probe (its hooks do not run).
    """
    if not is_candidate(module):
        return None
    return classify(module.forward)


def local_slope(
    fn: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, behaviour: Behaviour
) -> torch.Tensor:
    """``f'(z)`` elementwise: exact masks for ReLU (``[z > 0]``) and clipped ReLUs
    (``[0 < z < t]``), autograd through ``fn`` for every other family."""
    if behaviour.family == "relu":
        return z > 0
    if behaviour.family == "clipped":
        return (z > 0) & (z < behaviour.top)
    with torch.enable_grad():
        zz = z.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(fn(zz.clone()).sum(), zz)
    return g


__all__ = [
    "FAMILIES",
    "RECTIFYING",
    "Behaviour",
    "classify",
    "is_candidate",
    "local_slope",
    "module_behaviour",
]
