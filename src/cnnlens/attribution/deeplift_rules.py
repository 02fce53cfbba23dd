"""DeepLIFT's per-operation rules: rescale multipliers, the max-pooling rule, and refusals.

DeepLIFT (Shrikumar, Greenside & Kundaje, ICML 2017; see :mod:`.deeplift`) backpropagates
*multipliers* ``m = dy / dz`` of differences from a reference instead of gradients. Linear
operations keep their gradient (it already is the ratio of differences). The operations
here are the ones that need a rule of their own, and the ones refused:

* **Elementwise nonlinearity** ``y = f(z)`` (any activation, found by behaviour, as a
  module or a call): the rescale rule ``m = (f(z) - f(z0)) / (z - z0)``, falling back to
  ``f'(z)`` where ``|z - z0| < 1e-10``, Captum's threshold (``DeepLift(eps=1e-10)``).
* **Max pooling** (module or ``F.max_pool*d`` / ``F.adaptive_max_pool*d`` call): each
  window's change ``y - y0`` goes to one input: to the position of the input's maximum
  where ``y >= y0``, else to the position of the reference's maximum; the multiplier of
  a position is the change it received over its own ``z - z0`` (its gradient where
  ``|z - z0| < 1e-10``). This is Captum's rule, except that the changes of overlapping
  windows that pick the same position are *added*; Captum scatters them with
  ``max_unpool``, which keeps one of them, so on overlapping pooling (ResNet's 3x3 stride-2
  stem) its contributions no longer add up to ``f(x) - f(x0)``.
* **Refused**, with the function, the module that called it and the reason: a product or
  a quotient of two input-dependent tensors (squeeze-excitation gates ``x * sigmoid(.)``,
  attention ``q @ k``, cosine similarity), normalisations over units (LayerNorm, GroupNorm,
  InstanceNorm, ``F.normalize``), couplings (softmax, attention), batch norm with batch
  statistics, and nonlinear tensor maths outside activations (``exp``, ``pow``, ``abs``,
  ``clamp``, max over positions, ...). The rescale rule is defined for one-input
  elementwise maps only; the gradient of these operations is no multiplier of differences.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..core.activations import local_slope as _slope
from ..core.errors import MethodError

EPS = 1e-10  # Captum's DeepLift(eps=1e-10): |z - z0| below it takes the gradient
ALTERNATIVES = (
    "Use 'integrated_gradients', 'gradient_shap', 'input_x_gradient', 'occlusion' or 'rise', "
    "which need no rule per operation"
)
NORM_WHY = (
    "it normalises each unit by statistics of other units, which no multiplier of one "
    "unit's difference describes"
)
COUPLING_WHY = (
    "it couples its inputs (softmax or attention weights depend on other units), so it "
    "is no elementwise map"
)
PRODUCT_WHY = (
    "it multiplies two input-dependent tensors (a gate such as squeeze-excitation's "
    "x * sigmoid(.), or attention); DeepLIFT's rescale rule is defined for one-input "
    "elementwise maps and linear layers only"
)
DIVIDE_WHY = (
    "it divides by an input-dependent tensor, a nonlinearity of two inputs with no rescale rule"
)
MATH_WHY = (
    "it is nonlinear tensor maths outside an activation (a module or an F.* activation "
    "call), which DeepLIFT has no rule for"
)
BATCH_WHY = "batch norm with batch statistics couples the images of a batch (run it in eval mode)"

_PRODUCTS = ("mul", "multiply", "matmul", "mm", "bmm", "einsum", "addcmul", "baddbmm",
             "addbmm", "addmm", "outer", "inner", "dot", "kron", "tensordot", "bilinear",
             "cosine_similarity", "pairwise_distance", "cdist", "__mul__", "__rmul__",
             "__imul__", "__matmul__", "__rmatmul__")  # fmt: skip
_DIVIDES = ("div", "divide", "true_divide", "floor_divide", "remainder", "fmod", "addcdiv",
            "__truediv__", "__itruediv__", "__floordiv__")  # fmt: skip
_RDIVIDES = ("__rdiv__", "__rtruediv__", "__rfloordiv__", "__rpow__")
_MATH = ("exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sqrt", "rsqrt", "pow",
         "square", "reciprocal", "abs", "sign", "sgn", "sin", "cos", "erf", "erfc", "amax",
         "amin", "max", "min", "maximum", "minimum", "fmax", "fmin", "clamp", "clamp_min",
         "clamp_max", "clip", "norm", "normalize", "std", "var", "sort", "topk",
         "logsumexp", "cumprod", "prod", "round", "floor", "ceil", "trunc", "where",
         "__pow__", "__ipow__", "__abs__", "lp_pool1d", "lp_pool2d", "lp_pool3d")  # fmt: skip
_LINEAR_WEIGHT = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
                  "conv_transpose2d", "conv_transpose3d")  # fmt: skip
_POOLS = {
    F.max_pool1d: F.max_pool1d_with_indices,
    F.max_pool2d: F.max_pool2d_with_indices,
    F.max_pool3d: F.max_pool3d_with_indices,
    F.adaptive_max_pool1d: F.adaptive_max_pool1d_with_indices,
    F.adaptive_max_pool2d: F.adaptive_max_pool2d_with_indices,
    F.adaptive_max_pool3d: F.adaptive_max_pool3d_with_indices,
}
_POOLS.update({v: v for v in list(_POOLS.values())})
_TABLE: dict = {}


def _table() -> dict:
    """``function object -> (qualified name, kind)`` of every call :class:`Watch` checks."""
    if not _TABLE:
        owners = ((torch, "torch"), (torch.Tensor, "Tensor"), (F, "F"))
        kinds = (("product", _PRODUCTS), ("divide", _DIVIDES), ("rdivide", _RDIVIDES),
                 ("math", _MATH), ("weight", _LINEAR_WEIGHT))  # fmt: skip
        for kind, names in kinds:
            for name in names:
                for owner, prefix in owners:
                    for variant in (name, name + "_"):
                        fn = getattr(owner, variant, None)
                        if callable(fn) and fn not in _TABLE:
                            _TABLE[fn] = (f"{prefix}.{variant}", kind)
        _TABLE[F.batch_norm] = ("F.batch_norm", "batchnorm")
    return _TABLE


def refusal(where: str, why: str) -> MethodError:
    """The one-line error for an operation DeepLIFT has no rule for."""
    return MethodError(f"DeepLIFT has no rule at {where}: {why}. {ALTERNATIVES}.")


def _grad(t) -> bool:
    return isinstance(t, torch.Tensor) and t.requires_grad


def why_refused(kind: str, func, args: tuple, kwargs: dict) -> str | None:
    """Why a checked call (:func:`_table` kind) has no DeepLIFT rule, or None when it is fine.

    Only input-dependent tensors (those that require grad in the attributed pass) count.
    """
    tensors = [*args, *kwargs.values()]
    if kind == "product":
        return PRODUCT_WHY if sum(_grad(t) for t in tensors) >= 2 else None
    if kind == "divide":
        other = args[1] if len(args) > 1 else kwargs.get("other", kwargs.get("tensor2"))
        if func in (torch.addcdiv, torch.Tensor.addcdiv):
            other = args[2] if len(args) > 2 else kwargs.get("tensor2")
        return DIVIDE_WHY if _grad(other) else None
    if kind == "rdivide":
        return DIVIDE_WHY if _grad(args[0]) else None
    if kind == "math":
        return MATH_WHY if any(_grad(t) for t in tensors) else None
    if kind == "weight":
        weight = args[1] if len(args) > 1 else kwargs.get("weight")
        return PRODUCT_WHY if _grad(weight) and any(_grad(t) for t in args[:1]) else None
    if kind == "batchnorm":
        training = args[5] if len(args) > 5 else kwargs.get("training", False)
        return BATCH_WHY if training and _grad(args[0]) else None
    return None


class Slot:
    """One nonlinearity of the attributed pass, filled by the reference pass.

    ``z``, ``y`` (and ``idx`` for max pooling) come from the input rows; ``z0``, ``y0``
    (``idx0``) from the reference rows, which :attr:`inv` maps to input rows.
    """

    def __init__(self, z: torch.Tensor, y: torch.Tensor, fn=None, behaviour=None, idx=None):
        self.z, self.y, self.fn, self.behaviour, self.idx = z, y, fn, behaviour, idx
        self.version = z._version
        self.z0 = self.y0 = self.idx0 = self.inv = self.m = None

    def fill(self, z0: torch.Tensor, y0: torch.Tensor, inv: torch.Tensor | None, idx0=None) -> None:
        if z0.shape[1:] != self.z.shape[1:] or y0.shape[1:] != self.y.shape[1:]:
            raise MethodError(
                "DeepLIFT's reference pass met a nonlinearity of another shape than the input's "
                f"pass ({tuple(z0.shape[1:])} vs {tuple(self.z.shape[1:])}): the model's "
                f"control flow depends on the input values. {ALTERNATIVES}."
            )
        self.z0, self.y0, self.idx0, self.inv = z0.detach(), y0.detach(), idx0, inv

    def deltas(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``z - z0`` and ``y - y0`` per input row."""
        if self.z0 is None:
            raise MethodError("DeepLIFT's reference pass did not reach every nonlinearity")
        if self.z._version != self.version:
            raise MethodError(
                "an activation's input was modified in place after the activation ran, so "
                f"DeepLIFT cannot read z - z0 there. {ALTERNATIVES}."
            )
        return self.z - self.reference(self.z0), self.y - self.reference(self.y0)

    def reference(self, t: torch.Tensor) -> torch.Tensor:
        """Reference rows ``t`` lined up with the input rows (``inv`` None: they already are)."""
        return t if self.inv is None else t[self.inv]

    def settle(self) -> None:
        """Once both passes ran: the rescale multiplier ``m`` of an activation, computed
        once for every target (max pooling keeps its tensors: its rule needs the gradient)."""
        if self.idx is not None:
            return
        dz, dy = self.deltas()
        m = dy.div_(dz)  # inf or nan where dz is 0: replaced below
        near = dz.abs_() < EPS
        if bool(near.any()):
            slope = _slope(self.fn, self.z, self.behaviour)
            m = torch.where(near, slope.to(m.dtype), m)
        self.m, self.z0, self.y0, self.y = m, None, None, None


class _Ruled(torch.autograd.Function):
    """Identity on ``y``; the subclass's backward sends its rule's gradient to ``z``."""

    @staticmethod
    def forward(ctx, z, y, slot: Slot):
        ctx.slot = slot
        return y.clone()


class Rescale(_Ruled):
    """``y = f(z)``; backward multiplies by ``(f(z) - f(z0)) / (z - z0)``."""

    @staticmethod
    def backward(ctx, grad):
        m = ctx.slot.m
        if m is None:
            raise MethodError("DeepLIFT's reference pass did not reach every nonlinearity")
        return grad * m, None, None


class MaxPool(_Ruled):
    """A max pooling output; backward is the max-pooling rule (module docstring)."""

    @staticmethod
    def backward(ctx, grad):
        s = ctx.slot
        dz, _ = s.deltas()
        y0, idx0 = s.reference(s.y0), s.reference(s.idx0)
        top = torch.maximum(s.y, y0)
        flat = dz.flatten(2)
        moved = torch.zeros_like(flat)
        moved.scatter_add_(2, s.idx.flatten(2), (grad * (top - y0)).flatten(2))
        moved.scatter_add_(2, idx0.flatten(2), (grad * (s.y - top)).flatten(2))
        plain = torch.zeros_like(flat).scatter_add_(2, s.idx.flatten(2), grad.flatten(2))
        near = flat.abs() < EPS
        m = torch.where(near, plain, moved / torch.where(near, torch.ones_like(flat), flat))
        return m.view_as(dz), None, None


def _pool_call(func, args: tuple, kwargs: dict):
    """``(z, run)``: the pooled tensor and ``run(t) -> (y, indices)`` for the same pooling."""
    full = _POOLS[func]
    try:
        bound = inspect.signature(full).bind(*args, **kwargs)
    except TypeError:
        return None, None
    params = dict(bound.arguments)
    z = params.pop("input")
    params.pop("return_indices", None)
    return z, lambda t: full(t, **params, return_indices=True)


class Watch(TorchFunctionMode):
    """Sees every torch call of the attributed forward pass: refuses what has no rule,
    and gives max pooling calls the pooling rule (through ``tape``, see :mod:`.deeplift`)."""

    def __init__(self, tape):
        super().__init__()
        self.tape = tape

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tape = self.tape
        if tape.phase == "off" or tape.depth or not args:
            return func(*args, **kwargs)
        try:
            pooled = func in _POOLS
            entry = None if pooled else _table().get(func)
        except TypeError:  # an unhashable callable
            pooled, entry = False, None
        if pooled:
            return self._pool(func, args, kwargs)
        if entry is not None and tape.phase == "x":
            why = why_refused(entry[1], func, args, kwargs)
            if why:
                raise refusal(tape.where(entry[0]), why)
        return func(*args, **kwargs)

    def _pool(self, func, args, kwargs):
        z, run = _pool_call(func, args, kwargs)
        if z is None or not isinstance(z, torch.Tensor) or z.dim() < 3:
            return func(*args, **kwargs)
        k = self.tape.tick()
        want = func in _POOLS.values() or bool(kwargs.get("return_indices", False))
        if self.tape.phase == "x":
            if not z.requires_grad:
                return func(*args, **kwargs)
            with torch.no_grad():
                y, idx = run(z)
            slot = self.tape.keep(k, Slot(z.detach(), y, idx=idx))
            out = MaxPool.apply(z, y, slot)
            return (out, idx) if want else out
        y0, idx0 = run(z)
        self.tape.fill(k, z, y0, idx0)
        return (y0, idx0) if want else y0


__all__ = [
    "ALTERNATIVES",
    "COUPLING_WHY",
    "EPS",
    "NORM_WHY",
    "MaxPool",
    "Rescale",
    "Slot",
    "Watch",
    "refusal",
    "why_refused",
]
