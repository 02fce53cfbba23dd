"""Excitation backprop (EB) and contrastive EB (c-EB): top-down marginal winning probabilities.

Zhang, Bargal, Lin, Brandt, Shen & Sclaroff, "Top-down Neural Attention by Excitation
Backprop", ECCV 2016 / IJCV 2018.

**Theory.** Attention is a walk from the explained class down the network: each unit hands
its *marginal winning probability* P to the inputs that excite it, in proportion to their
excitation. For ``y = W x + b`` with ``x >= 0`` (bias ignored, ``w+ = max(w, 0)``):

    P(x_i) = sum_j  x_i w+_ij / (sum_i' x_i' w+_i'j) * P(y_j),

so a layer's P sums to the P above it. With ``P(a) = a * g(a)`` this is a modified backward
pass: every Conv2d (grouped, depthwise, timm's ``Conv2dSame``) and Linear gets
``g_x = W+^T (g_y * y / (W+ x))``, ``y`` being the output the next layer sees. The class
gets P = 1 (the paper's one-hot prior) whatever its logit: the layer outputting the logits
takes the seed (1 at the target) as the mass itself; an output no linear layer produces
(SqueezeNet: conv -> ReLU -> pooling) is seeded with ``g = 1 / s`` at a positive score ``s``,
so ``P = s g = 1`` (a score <= 0 is refused). The map is P summed over channels, at
the pixels (``layer=None``) or at ``layer`` (upsampled bilinearly). One forward pass, one
backward per target (two for c-EB); hooks and in-place flags are restored in ``finally``.

The **ordinary gradient already is the rule** for ReLU (``z g_z = y g_y``), max pooling
(winner takes all) and linear maps with non-negative weights and no bias, which keep their
backward: average pooling, resizing, residual sums (``x_i sum_j a_ij g_j = sum_j x_i a_ij /
y_j P(y_j)``), flatten, concatenation, identity, dropout.

**Choices where the paper is silent.**

* BatchNorm fed directly by a conv / linear output is folded into it (``W' = gamma / sigma
  W`` per output channel; a conv named as ``layer`` is explained at its BN's output, the
  same units). timm's ``BatchNormAct2d`` applies its ``.act`` inside: its post-activation
  output is ``y``. Any other BN is a per-channel weight ``gamma / sigma``: mass passes where
  it is positive and is lost elsewhere.
* A clipped ReLU, ``min(max(z, 0), t)`` (ReLU6; recognised by behaviour, module or
  ``F.relu6`` / ``F.hardtanh(x, 0, t)`` call) passes ``g_z = g_y y / z`` for ``z > 0``: a
  saturated unit keeps its mass ``t g_y`` (its zero derivative would drop it), and BN ->
  ReLU6 modules agree with a fused ``BatchNormAct2d``.
* Negative activations (linear bottlenecks) cannot win: rules use ``x+`` and ``y+``, the
  gradient is zero where ``x <= 0`` and ``W+ x+`` is floored at 1e-12, so all stays finite.
  An active unit with no excitatory input loses its mass (to its bias); a residual sum
  ``y = a + b`` with ``b < 0 < y`` gives ``a`` the share ``a / y > 1`` and ``b`` none, so
  mass grows (2.5 on a randomly initialised ResNet-18). On EfficientNet-Lite0 many
  depthwise kernels are all negative after folding: ``chelsea``'s pixel map sums to 0.11.
* Pixels compete by intensity above black, ``x - x_black`` with ``x_black = -mean / std``
  from the model's preprocessing (the normalisation folded into the first layer, as BN
  is): the pixel map is ``(x - x_black)+ * g``.
* Activations are recognised by behaviour (:mod:`cnnlens.core.activations`), as modules
  and as calls inside ``forward`` (``F.relu``, ``x.relu_()``, ``F.gelu``, ``torch.sigmoid``,
  reached by :func:`cnnlens.core.functional.intercepted` for the forward pass only). A ReLU
  call keeps its gradient like an ``nn.ReLU``. Signed activations (SiLU is refused rather
  than treated as ReLU: it is signed and gated by its own input; GELU, Mish, Hardswish,
  LeakyReLU, ELU), saturating ones (Sigmoid, Hardsigmoid, Tanh: squeeze-excitation gates),
  normalisations (LayerNorm, GroupNorm, InstanceNorm, ``F.layer_norm``), couplings
  (softmax, attention) and any other layer with parameters of its own raise
  ``MethodError`` when they run, naming the module (or the function and the module that
  called it), why the rule is undefined there (:mod:`.excitation_rules`), and the methods
  that do work.

**Contrastive EB.** The target's classifier row ``W_c`` gets a *dual* unit ``-W_c``; both
are propagated to ``layer`` (default: Grad-CAM's) and

    c-EB_c(u) = max(sum_k P_c(k, u) - sum_k P_dual(k, u), 0).

Channels are summed first, as the paper's MWP maps are: before global pooling each channel's
classifier weight has one sign, so per-channel differences would just return EB. The rules
are linear in the seed: subtracting at ``layer`` equals subtracting higher up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn

from ..core.errors import MethodError
from ..core.functional import Call, calling_module, intercepted
from ..core.hooks import attached, out_of_place
from ..core.layouts import Layout, layout_of
from ..core.registry import register
from ..core.targets import resolve_targets
from ..core.tensors import MethodOutput, upsample
from .cam import pick_layer
from .excitation_rules import (
    ALTERNATIVES,
    BN,
    COUPLING_WHY,
    NORM_WHY,
    activation_why,
    is_gate,
    linear_op,
    refusal,
    unsupported,
)

GUARD = 1e-12


class State:
    """What the hooks of one call share: input, black level, sites by output, dual mode."""

    def __init__(self, xg: torch.Tensor, black: torch.Tensor | None):
        self.input, self.black, self.dual, self.sites = xg, black, False, {}
        self.layer_out = self.layer_copy = None

    def shift(self, x: torch.Tensor):
        """``x_black`` shaped like ``x`` when ``x`` is the input (or a view of it), else 0."""
        inp = self.input
        if self.black is None or x.data_ptr() != inp.data_ptr() or x.numel() != inp.numel():
            return 0.0
        return self.black.expand_as(inp).reshape(x.shape)

    def emit(self, x: torch.Tensor, out: torch.Tensor, site: Site) -> torch.Tensor:
        """``out`` as seen by what follows: its backward is the MWP rule of ``site``."""
        y = _Excite.apply(x, out.detach(), site)
        self.sites[id(y)] = (y, site, x)
        return y

    def gate(self, z: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """A clipped ReLU (ReLU6): a one-input unit of weight 1, ``g_z = g_y y / z``."""
        one = torch.ones(1, dtype=out.dtype, device=out.device)
        return self.emit(z, out, Site("", scale_op, one, self.shift(z), self, False))


class Site:
    """One linear layer (with the BN folded into it, if any) as EB sees it."""

    def __init__(self, name, op, weight, shift, state: State, foldable: bool = True):
        self.name, self.op, self.weight, self.shift = name, op, weight, shift
        self.state, self.foldable, self.top = state, foldable, False


class _Excite(torch.autograd.Function):
    """Identity on the layer output ``y``; backward sends the MWP gradient to the input ``x``."""

    @staticmethod
    def forward(ctx, x, y, site):
        ctx.site = site
        ctx.save_for_backward(x, y)
        return y.clone()

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        site = ctx.site
        w = -site.weight if site.top and site.state.dual else site.weight
        xp = (x - site.shift).clamp_min(0)
        mass = g if site.top else g * y.clamp_min(0)
        with torch.enable_grad():
            xx = xp.detach().requires_grad_(True)
            d = site.op(xx, w.clamp_min(0))
            floor = max(GUARD, torch.finfo(d.dtype).tiny)
            (gx,) = torch.autograd.grad(d, xx, mass / d.clamp_min(floor))
        return torch.where(xp > 0, gx, torch.zeros_like(gx)), None, None


def excitation_hooks(
    net: nn.Module, state: State, layer: str | None
) -> Iterator[tuple[nn.Module, Callable, str]]:
    """Every EB hook of ``net`` as ``(module, hook, kind)`` triples for ``attached``.

    Args:
        net: the model.
        state: what the hooks of this call share.
        layer: dotted name whose output is recorded (``None``: the input).

    Yields:
        A forward pre-hook refusing each module EB has no rule for, a forward hook
        per linear layer, BatchNorm and ReLU6-like gate, and the recording hook.
    """

    emit, gate = state.emit, state.gate

    def refuse(name, why):
        def hook(module, args, out=None):
            who = f"module {name!r}" if name else "the model itself"
            raise refusal(f"{who} ({type(module).__name__})", why)

        return hook

    def linear_hook(name):
        def hook(module, args, out):
            site = Site(name, linear_op(module), module.weight, state.shift(args[0]), state)
            return emit(args[0], out, site)

        return hook

    def bn_hook(name):
        def hook(module, args, out):
            x = args[0]
            if module.running_var is None:
                raise MethodError(f"BatchNorm {name!r} has no running statistics to fold")
            scale = torch.rsqrt(module.running_var + module.eps)
            scale = scale * module.weight if module.weight is not None else scale
            prev = state.sites.get(id(x))
            if prev is None or prev[0] is not x or not prev[1].foldable:
                return emit(x, out, Site(name, scale_op, scale, state.shift(x), state, False))
            _, p, px = prev
            w = scale.view(-1, *[1] * (p.weight.dim() - 1)) * p.weight
            y = emit(px, out, Site(f"{p.name}+{name}", p.op, w, p.shift, state, False))
            if x is state.layer_copy:  # a conv named as layer is explained after its BN
                state.layer_out = y
            return y

        return hook

    def gate_hook(module, args, out):
        return gate(args[0], out)

    def record(module, args, out):
        if not isinstance(out, torch.Tensor):
            state.layer_out = out
            return None
        copy = out.clone()  # later in-place ops must not change the recorded output
        state.layer_out, state.layer_copy = out, copy
        entry = state.sites.get(id(out))
        if entry is not None and entry[0] is out:
            state.sites[id(copy)] = (copy, *entry[1:])
        return copy

    for name, m in net.named_modules():
        why = unsupported(m)
        if why:  # a container is refused after its children, whose reasons are sharper
            yield m, refuse(name, why), "forward" if next(m.children(), None) else "forward_pre"
        elif isinstance(m, (nn.Linear, nn.Conv2d)):
            yield m, linear_hook(name), "forward"
        elif isinstance(m, BN):
            yield m, bn_hook(name), "forward"
        elif is_gate(m):
            yield m, gate_hook, "forward"
    if layer is not None:
        yield net.get_submodule(layer), record, "forward"


def functional_rule(net: nn.Module, state: State) -> Callable[[Call], torch.Tensor | None]:
    """The handler EB gives :func:`cnnlens.core.functional.intercepted` for ``net``.

    A ReLU called as a function (``F.relu``, ``torch.relu``, ``x.relu_()``) keeps its
    gradient, which is the rule, as for an ``nn.ReLU``; a clipped one (``F.relu6``,
    ``F.hardtanh(x, 0, t)``) gets the gate rule of ``nn.ReLU6``. Any other activation,
    normalisation or coupling call raises ``MethodError`` naming the function, the
    module whose ``forward`` made it and the reason.
    """
    names = {id(m): name for name, m in net.named_modules()}

    def where(call: Call) -> str:
        owner = calling_module(names)
        inside = "the model's forward" if not owner else f"module {owner!r}"
        return f"{call.name} called in {inside}"

    def handler(call: Call):
        if call.kind != "activation":
            raise refusal(where(call), NORM_WHY if call.kind == "norm" else COUPLING_WHY)
        behaviour = call.behaviour()
        if behaviour is None or behaviour.family == "relu":
            if call.inplace:  # the tensor no longer holds a layer output to fold BN into
                state.sites.pop(id(call.z), None)
            return None
        why = activation_why(behaviour)
        if why:
            raise refusal(where(call), why)
        with torch.no_grad():
            out = call.fn(call.z)
        state.sites.pop(id(call.z), None)
        z = call.z.clone() if call.inplace else call.z  # the rule keeps z; finish overwrites it
        return call.finish(state.gate(z, out))

    return handler


def scale_op(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    return x * a.view(1, -1, *[1] * (x.dim() - 2))


def _black(model, x: torch.Tensor) -> torch.Tensor | None:
    """The normalised value of a black pixel, ``-mean / std`` per channel."""
    spec = model.preprocess_spec
    if x.shape[1] != len(spec.mean):
        return None
    mean, std = (torch.tensor(v, dtype=x.dtype, device=x.device) for v in (spec.mean, spec.std))
    return (-mean / std).view(1, -1, 1, 1)


def seeded(scores: torch.Tensor, targets: torch.Tensor, model_name: str) -> torch.Tensor:
    """Scores whose gradient seeds ``P = 1`` at an output no linear layer produced.

    ``scores / scores.detach()`` has gradient ``1 / s`` at the output, so ``P = s g = 1``
    flows down by the rule (pooling, ReLU and sums keep their gradient, which is the rule).
    A score that is not positive has no excitatory input to share.
    """
    bad = (scores.detach() <= 0).nonzero()
    if len(bad):
        n, t = (int(i) for i in bad[0])
        raise MethodError(
            f"excitation backprop puts probability 1 on the class score, but {model_name}'s "
            f"output does not come from a linear layer and the score of class "
            f"{int(targets[n, t])} (image {n}) is {float(scores[n, t]):.3g} <= 0, so nothing "
            f"excites it. {ALTERNATIVES}"
        )
    return scores / scores.detach()


def mwp_maps(model, x: torch.Tensor, target, layer, contrastive: bool) -> MethodOutput:
    """EB (or c-EB) maps ``(N, T, H, W)``; ``layer=None`` means the input (EB only)."""
    net = model.net
    name = pick_layer(model, x, layer) if layer is not None or contrastive else None
    # the layer's output read as (N, K, h, w) whatever its layout (refused if it cannot be)
    lay = Layout("nchw") if name is None else layout_of(net, name, tuple(x.shape[1:]))
    xg = x.detach().requires_grad_(True)
    state = State(xg, _black(model, x))
    with out_of_place(net.modules()), attached(excitation_hooks(net, state, name)):
        try:
            with intercepted(functional_rule(net, state)):
                logits = net(xg)
            targets = resolve_targets(target, x.shape[0], logits)
            entry = state.sites.get(id(logits))
            top = entry[1] if entry is not None and entry[0] is logits else None
            if top is None and contrastive:
                raise MethodError(
                    "contrastive excitation backprop negates the classifier row, but the output "
                    f"of {type(net).__name__} does not come straight from an nn.Linear (or conv "
                    f"/ BatchNorm) layer. {ALTERNATIVES}"
                )
            if top is not None:
                top.top = True
            wrt = state.layer_out
            if name is None:
                wrt = xg
                base = (xg - (0.0 if state.black is None else state.black)).clamp_min(0)
            elif isinstance(wrt, torch.Tensor) and wrt.requires_grad:
                base = wrt.detach().clamp_min(0)
            else:
                raise MethodError(f"layer {name!r} must output a feature map below the classifier")
            scores = logits.gather(1, targets)
            if top is None:
                scores = seeded(scores, targets, type(net).__name__)
            maps = []
            for j in range(targets.shape[1]):
                mwp = []
                for dual in (False, True) if contrastive else (False,):
                    state.dual = dual
                    last = j == targets.shape[1] - 1 and dual == contrastive
                    (g,) = torch.autograd.grad(scores[:, j].sum(), wrt, retain_graph=not last)
                    mwp.append(lay.to_spatial(base * g).sum(dim=1))
                maps.append((mwp[0] - mwp[1]).clamp_min(0) if contrastive else mwp[0])
        finally:
            state.sites.clear()  # no reference cycles through the graph
            state.layer_out = state.layer_copy = None
    out = upsample(torch.stack(maps, dim=1), tuple(x.shape[-2:])).detach()
    classifier = None if top is None else top.name
    return MethodOutput(out, targets, {"layer": name, "classifier": classifier})


# what excitation backprop explains: one raw output unit (cnnlens.targets refuses others)
_EB_TARGETS = (
    "excitation backprop starts from one output unit and shares it down through the "
    "positive weights of the layer that produced it"
)


@register(
    "excitation_backprop",
    "Top-down winning probabilities passed through excitatory connections (Zhang et al. 2016)",
    family="gradient",
    targets="output",
    targets_reason=_EB_TARGETS,
)
def excitation_backprop(model, x: torch.Tensor, target=None, *, layer=None) -> MethodOutput:
    """EB maps at the input pixels (``layer=None``) or at ``layer``, upsampled."""
    return mwp_maps(model, x, target, layer, contrastive=False)


@register(
    "contrastive_excitation_backprop",
    "Excitation backprop of the class minus that of its negated classifier row (Zhang 2016)",
    family="gradient",
    targets="output",
    targets_reason=_EB_TARGETS + ", contrasting it with its negated weights",
)
def contrastive_excitation_backprop(
    model, x: torch.Tensor, target=None, *, layer=None
) -> MethodOutput:
    """c-EB maps at ``layer`` (default: the last conv block, as Grad-CAM), upsampled."""
    return mwp_maps(model, x, target, layer, contrastive=True)


__all__ = [
    "contrastive_excitation_backprop",
    "excitation_backprop",
    "excitation_hooks",
    "mwp_maps",
    "unsupported",
]
