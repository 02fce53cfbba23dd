"""The LRP engine: one forward pass that wraps each layer's output, one backward per target.

Relevance flows backward as the "gradient" (as in zennit): every Conv / Linear module's
output is wrapped in :class:`_Relevance`, whose backward applies the layer's rule
(:mod:`.rules`) to the relevance arriving from above; a batch norm that reads such an
output re-wraps it as one folded layer (:mod:`.canonize`). Calls made inside ``forward``
are reached by :class:`Arithmetic`, a ``TorchFunctionMode`` active during the forward pass
only: a sum of two activations (a residual connection, ``a + b`` or ``out += identity``)
shares its relevance in proportion to the summands, average pooling, means and resizing
get the norm rule, a product of two activations is refused, and a scale by a constant
passes relevance on. Rectifying activations (modules or ``F.relu``-style calls, through
:func:`cnnlens.core.functional.intercepted`) pass relevance unchanged; any other
operation keeps its ordinary gradient (max pooling, flatten, concatenation, padding).
Each wrapped step records the relevance it lost (bias and stabiliser) per image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ...core.activations import module_behaviour
from ...core.functional import Call, calling_module
from .canonize import (
    BN,
    COUPLING_WHY,
    GATE_WHY,
    NORM_WHY,
    activation_why,
    fold,
    layer_op,
    refusal,
    unsupported,
)
from .composites import Assignment
from .rules import STABILIZER, Layer, Rule, norm_rule, stabilize

T = torch.Tensor


class Site:
    """One wrapped step: its name, rule and layer (None for parameter-free steps)."""

    def __init__(self, name: str, rule, layer: Layer | None, state: State, kind: str = ""):
        self.name, self.rule, self.layer, self.state, self.kind = name, rule, layer, state, kind


class State:
    """What the hooks and the mode of one call share."""

    def __init__(self, net: nn.Module, x: T, assignment: Assignment):
        self.net, self.input, self.assignment = net, x, assignment
        self.names = {id(m): n for n, m in net.named_modules()}
        self.sites: dict[int, tuple[T, Site, T]] = {}
        self.saved: dict[int, tuple[T, list]] = {}  # layer inputs and the steps keeping them
        self.rules: dict[str, str] = {}
        self.leaks: dict[str, T] = {}
        self.depth = 0  # > 0 inside an activation or batch norm: its own calls are left alone

    def emit(self, x: T, out: T, site: Site) -> T:
        """``out`` as seen by what follows; its backward applies ``site``'s rule."""
        y = _Relevance.apply(x, out.detach(), site)
        self.sites[id(y)] = (y, site, x)
        return y

    def keep(self, x: T, ctx) -> None:
        """Remember that step ``ctx`` keeps ``x`` for its backward."""
        self.saved.setdefault(id(x), (x, []))[1].append(ctx)

    def protect(self, t: T) -> None:
        """Before ``t`` is overwritten in place: steps keeping it get a copy, and it is no
        longer a layer output a batch norm could fold into."""
        self.sites.pop(id(t), None)
        entry = self.saved.pop(id(t), None)
        if entry is not None and entry[0] is t:
            copy = t.detach().clone()
            for ctx in entry[1]:
                ctx.kept = copy

    def account(self, name: str, r_out: T, r_in: T) -> None:
        """Add the relevance a step lost (``sum R_out - sum R_in`` per image) to its leak."""
        lost = r_out.flatten(1).sum(1) - r_in.flatten(1).sum(1)
        self.leaks[name] = self.leaks.get(name, 0) + lost.detach()

    def where(self) -> str:
        owner = calling_module(self.names)
        return "the model's forward" if not owner else f"module {owner!r}"


class _Relevance(torch.autograd.Function):
    """Identity on the layer output; backward applies the site's rule to reach ``x``."""

    @staticmethod
    def forward(ctx, x, y, site):
        ctx.site, ctx.kept = site, None
        ctx.save_for_backward(x)
        site.state.keep(x, ctx)
        return y.clone()

    @staticmethod
    def backward(ctx, r):
        # a copy taken before an in-place sum / activation overwrote x, else x itself
        x = ctx.kept if ctx.kept is not None else ctx.saved_tensors[0]
        site = ctx.site
        if site.layer is None:
            r_in = site.rule(x, r)
        else:
            r_in = site.rule(site.layer, x, r)
        site.state.account(site.name, r, r_in)
        return r_in, None, None


class _Pass(torch.autograd.Function):
    """Identity on an activation's output; relevance passes to its input unchanged."""

    @staticmethod
    def forward(ctx, z, y):
        return y.clone()

    @staticmethod
    def backward(ctx, r):
        return r, None


class _Sum(torch.autograd.Function):
    """``a + sign * b`` whose backward shares relevance in proportion to the summands
    ``a`` and ``sign * b`` (a negated summand keeps its share's sign: no gradient flip)."""

    @staticmethod
    def forward(ctx, a, b, sign, name, state):
        b = b if sign > 0 else -b
        s = a + b
        den = stabilize(s, STABILIZER)
        ctx.name, ctx.state = name, state
        ctx.save_for_backward(a / den, b / den)
        ctx.shapes = a.shape, b.shape
        return s

    @staticmethod
    def backward(ctx, r):
        fa, fb = ctx.saved_tensors
        ra = (fa * r).sum_to_size(ctx.shapes[0])
        rb = (fb * r).sum_to_size(ctx.shapes[1])
        ctx.state.account(ctx.name, r, torch.cat([ra.flatten(1), rb.flatten(1)], 1))
        return ra, rb, None, None, None


def _tensor_methods(*names: str) -> set:
    out = set()
    for n in names:
        for owner in (torch, torch.Tensor):
            for v in (n, f"__{n}__", f"__r{n}__", f"__i{n}__", f"{n}_"):
                fn = getattr(owner, v, None)
                if fn is not None:
                    out.add(fn)
    return out


ADD = _tensor_methods("add")
SUB = _tensor_methods("sub", "subtract")
PRODUCT = _tensor_methods("mul", "multiply", "div", "divide", "true_divide", "matmul")
PRODUCT |= {torch.bmm, torch.einsum, torch.Tensor.bmm, torch.baddbmm, torch.addmm}
LINEAR_MAPS = {
    F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
    F.adaptive_avg_pool3d, torch.mean, torch.Tensor.mean, torch.sum, torch.Tensor.sum,
    F.interpolate,
}  # fmt: skip
INPLACE = {torch.Tensor.add_, torch.Tensor.__iadd__, torch.Tensor.sub_, torch.Tensor.__isub__}
SCALES = _tensor_methods("mul", "multiply", "div", "divide", "true_divide")
INPLACE |= {f for f in SCALES if f.__name__.endswith("_") or f.__name__.startswith("__i")}


def _grad_tensor(t) -> bool:
    return isinstance(t, torch.Tensor) and t.requires_grad and t.is_floating_point()


class Arithmetic(TorchFunctionMode):
    """Sums, pools and products of activations in ``forward`` (module docstring)."""

    def __init__(self, state: State):
        super().__init__()
        self.state = state
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not torch.is_grad_enabled() or not args:
            return func(*args, **kwargs)
        a = args[0]
        b = args[1] if len(args) > 1 else kwargs.get("other")
        try:
            kind = (
                "add" if func in ADD else "sub" if func in SUB else "product" if func in PRODUCT
                else "map" if func in LINEAR_MAPS else None
            )  # fmt: skip
        except TypeError:  # an unhashable callable
            kind = None
        if kind is None:
            return func(*args, **kwargs)
        if kind == "map":
            if not _grad_tensor(a):
                return func(*args, **kwargs)
            out = func(*args, **kwargs)
            site = self._site(f"{getattr(func, '__name__', 'map')}", "norm")
            site.rule = _map_rule(func, args[1:], kwargs)
            return self.state.emit(a, out, site)
        if kind == "product":
            return self._product(func, args, kwargs, a, b)
        if not (_grad_tensor(a) and isinstance(b, torch.Tensor)):
            return func(*args, **kwargs)
        if not _grad_tensor(b) or kwargs.get("alpha", 1) != 1 or len(args) > 2:
            return func(*args, **kwargs)  # a constant shift: a bias, relevance passes on
        if func is torch.Tensor.__rsub__:
            a, b = b, a
        sign = -1 if kind == "sub" else 1
        out = _Sum.apply(a, b, sign, self._site("sum", "norm").name, self.state)
        if func in INPLACE:
            self.state.protect(args[0])
            args[0].copy_(out)
            return args[0]
        return out

    def _product(self, func, args, kwargs, a, b):
        """A product of two activations is refused; a scale by a constant passes relevance
        on unchanged (``R_x = x c R / (x c) = R``); anything else keeps its gradient."""
        if _grad_tensor(a) and _grad_tensor(b):
            raise refusal(f"{_name(func)} in {self.state.where()}", GATE_WHY)
        x = a if _grad_tensor(a) else b
        if func not in SCALES or not _grad_tensor(x) or (func in INPLACE and x is not a):
            return func(*args, **kwargs)
        if func in INPLACE:
            self.state.protect(a)
            a = a.clone()  # scaled out of place below, then written back
            args = (a, *args[1:])
        out = func(*args, **kwargs)
        if out.shape != x.shape:
            return out
        if func in INPLACE:
            scaled = _Pass.apply(x, out)
            x.copy_(scaled)
            return x
        return _Pass.apply(x, out)

    def _site(self, what: str, rule: str) -> Site:
        self.count += 1
        owner = calling_module(self.state.names)
        name = f"{owner or 'forward'}:{what}#{self.count}"
        self.state.rules[name] = rule
        return Site(name, None, None, self.state, rule)


def _name(func) -> str:
    return getattr(func, "__name__", str(func))


def _map_rule(func, rest: tuple, kwargs: dict) -> Callable[[T, T], T]:
    def op(t):
        return func(t, *rest, **kwargs)

    return lambda x, r: norm_rule(op, x, r)


def activation_handler(state: State) -> Callable[[Call], T | None]:
    """What :func:`cnnlens.core.functional.intercepted` does with activation, norm and
    coupling calls in ``forward``: rectifiers pass relevance on, the others are refused."""

    def handler(call: Call):
        where = f"{call.name} called in {state.where()}"
        if call.kind != "activation":
            raise refusal(where, NORM_WHY if call.kind == "norm" else COUPLING_WHY)
        if state.depth or not _grad_tensor(call.z):
            return None
        behaviour = call.behaviour()
        why = None if behaviour is None else activation_why(behaviour)
        if why:
            raise refusal(where, why)
        with torch.no_grad():
            y = call.fn(call.z)
        if call.inplace:
            state.protect(call.z)
        return call.finish(_Pass.apply(call.z, y))

    return handler


def lrp_hooks(state: State) -> Iterator[tuple[nn.Module, Callable, str]]:
    """Every LRP hook of ``state.net`` as ``(module, hook, kind)`` triples for ``attached``."""

    def refuse(name, why):
        def hook(module, args, out=None):
            who = f"module {name!r}" if name else "the model itself"
            raise refusal(f"{who} ({type(module).__name__})", why)

        return hook

    def layer_hook(name, kind):
        def hook(module, args, out):
            x = args[0]
            rule, first = state.assignment.rule_for(kind)
            if first and rule.name == "zbox" and not _is_input(x, state.input):
                raise refusal(
                    f"module {name!r}",
                    "the z^B rule bounds the first convolution's input by the pixel range, "
                    "but this layer does not read the network input",
                )
            layer = Layer(layer_op(module), module.weight.detach(), _detach(module.bias))
            state.rules[name] = rule.name
            return state.emit(x, out, Site(name, rule, layer, state, kind))

        return hook

    def bn_hook(name):
        def hook(module, args, out):
            state.depth -= 1  # the activation inside a BatchNormAct is replaced by the fold
            x = args[0]
            prev = state.sites.get(id(x))
            if prev is None or prev[0] is not x or prev[1].layer is None:
                raise refusal(
                    f"batch norm {name!r}",
                    "it does not read a Conv / Linear output directly, so it cannot be "
                    "folded into one (zennit would pass relevance through it unchanged, "
                    "ignoring its shift)",
                )
            _, p, px = prev
            try:
                with torch.no_grad():
                    layer = fold(p.layer, module)
            except ValueError as e:
                raise refusal(f"batch norm {name!r}", str(e)) from None
            state.rules[f"{p.name}+{name}"] = state.rules.pop(p.name)
            return state.emit(px, out, Site(f"{p.name}+{name}", p.rule, layer, state, p.kind))

        return hook

    def enter(module, args):
        state.depth += 1

    def pass_hook(module, args, out):
        state.depth -= 1
        if state.depth:  # inside another activation or a batch norm
            return None
        z = args[0] if args else None
        if not (_grad_tensor(z) and isinstance(out, torch.Tensor) and out.shape == z.shape):
            return None
        return _Pass.apply(z, out)

    for name, m in state.net.named_modules():
        behaviour = module_behaviour(m)  # probed once per module and call
        why = unsupported(m, behaviour)
        if why:  # a container is refused after its children, whose reasons are sharper
            yield m, refuse(name, why), "forward" if next(m.children(), None) else "forward_pre"
        elif isinstance(m, nn.Linear):
            yield m, layer_hook(name, "linear"), "forward"
        elif layer_op(m) is not None:
            yield m, layer_hook(name, "conv"), "forward"
        elif isinstance(m, BN):
            yield m, enter, "forward_pre"
            yield m, bn_hook(name), "forward"
        elif behaviour is not None and behaviour.rectifying:
            yield m, enter, "forward_pre"
            yield m, pass_hook, "forward"


def _is_input(x: T, inp: T) -> bool:
    return x.data_ptr() == inp.data_ptr() and x.shape == inp.shape


def _detach(t):
    return None if t is None else t.detach()


__all__ = ["Arithmetic", "Rule", "State", "activation_handler", "lrp_hooks"]
