"""DeepLIFT with the rescale rule, and DeepLIFT-SHAP: contributions of differences from a reference.

**DeepLIFT** (Shrikumar, Greenside & Kundaje, "Learning important features through
propagating activation differences", ICML 2017) explains the change of a target score
``s(x) - s(x0)`` between the input ``x`` and a reference ``x0`` by contributions

    C_k(u) = (x_k(u) - x0_k(u)) * m_k(u),

where the *multipliers* ``m = ds/dx`` are backpropagated with the chain rule except that
every elementwise nonlinearity ``y = f(z)`` uses the **rescale rule**

    m = (f(z) - f(z0)) / (z - z0)      (f'(z) where |z - z0| < 1e-10, Captum's threshold),

``z0`` being the unit's value on the reference. Linear operations (convolution, linear,
batch norm in eval mode, average pooling, sums, concatenation, padding, resizing) keep
their gradient; max pooling has its own rule (:mod:`.deeplift_rules`). Every factor is a
ratio of differences, so the contributions add up exactly (**completeness**):
``sum C = s(x) - s(x0)``. The residual ``sum C - (s(x) - s(x0))`` is returned per image
and target as ``extras["delta"]`` (float rounding only, about 1e-6 of the score change).

**DeepLIFT-SHAP** (Lundberg & Lee, "A unified approach to interpreting model
predictions", NeurIPS 2017, DeepSHAP) averages DeepLIFT over a distribution of references
``b_1 .. b_K``: ``phi = 1/K sum_j DeepLIFT(x; b_j)``; its contributions add up to
``s(x) - mean_j s(b_j)``.

**How it runs.** Each batch of (image, reference) rows costs one forward pass of the
input rows with gradients, one forward pass of the distinct references without, and one
backward pass per target: the reference pass fills in ``z0`` for every nonlinearity met in
the input pass, matched by call order (a model whose control flow depends on the values is
refused). Nonlinearities are found by behaviour (:mod:`cnnlens.core.activations`): modules
of any elementwise kind (ReLU, ReLU6, GELU, SiLU, Sigmoid, the user's own) through hooks,
and activation calls inside ``forward`` (``F.relu``, ``torch.relu``, ``x.relu_()``,
``F.hardtanh``, ...) through :func:`cnnlens.core.functional.intercepted`. Operations with
no rule (gates, attention, normalisations, other nonlinear maths) raise ``MethodError``
naming the call, the module and the reason (:mod:`.deeplift_rules`).

**Against Captum 0.9** (``captum.attr.DeepLift`` / ``DeepLiftShap``, the same rules): Captum
finds nonlinearities by module class only (ReLU, ELU, LeakyReLU, Sigmoid, Tanh, Softplus,
Softmax, MaxPool): ReLU6 (EfficientNet-Lite0, MobileNetV2), GELU, SiLU and functional
``F.relu`` silently keep their gradient, and a module used twice (torchvision ResNet's
``relu``) makes it raise. It treats softmax with a rule of its own, which is refused here.
On overlapping max pooling it drops part of the change (see :mod:`.deeplift_rules`).
Elsewhere the maps agree to float rounding.

Baselines: ``"zero"``, ``"blur"``, ``"mean"`` or a number (as integrated gradients,
:func:`.integrated.ig_baseline`), or tensors of references
(:func:`.gradient_shap.references`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch
from torch import nn

from ..core import progress
from ..core.activations import Behaviour, module_behaviour
from ..core.batching import FastNet, chunks
from ..core.errors import MethodError
from ..core.functional import Call, calling_module, intercepted
from ..core.hooks import attached, out_of_place, preserved
from ..core.registry import register
from ..core.targets import needs_logits, resolve_targets
from ..core.tensors import MethodOutput, check_batch_size
from .deeplift_rules import ALTERNATIVES, COUPLING_WHY, NORM_WHY, Rescale, Slot, Watch, refusal
from .gradient import check_reduce, reduce_per_target
from .gradient_shap import Baselines, references, rows_per_pass


class Tape:
    """The state one DeepLIFT call shares between its hooks, its modes and its passes.

    ``phase`` is ``"x"`` (input rows, with gradients: nonlinearities get a :class:`Slot`),
    ``"ref"`` (reference rows: slots are filled in call order) or ``"off"``.
    """

    def __init__(self, net: nn.Module):
        self.names = {id(m): name for name, m in net.named_modules()}
        self.phase, self.depth, self.count, self.calls = "off", 0, 0, 0
        self.slots: dict[int, Slot] = {}
        self.inv: torch.Tensor | None = None

    def begin(self, phase: str, inv: torch.Tensor | None = None) -> None:
        if phase == "x":
            self.slots.clear()
        self.phase, self.depth, self.count, self.inv = phase, 0, 0, inv

    def end_reference(self) -> None:
        """Back to ``"off"``; refuse when the two passes met different nonlinearities."""
        counts = (self.calls, self.count)
        self.phase = "off"
        if counts[0] != counts[1]:
            raise MethodError(
                f"DeepLIFT met {counts[0]} nonlinearities on the input and {counts[1]} on the "
                f"reference: the model's control flow depends on the values. {ALTERNATIVES}."
            )

    def settle(self) -> None:
        """The multipliers of this batch, once both passes ran (outside :func:`rescaling`,
        so that their arithmetic pays no dispatch through its modes)."""
        with torch.no_grad():
            for slot in self.slots.values():
                slot.settle()

    def tick(self) -> int:
        self.count += 1
        if self.phase == "x":
            self.calls = self.count
        return self.count

    def keep(self, k: int, slot: Slot) -> Slot:
        self.slots[k] = slot
        return slot

    def fill(self, k: int, z0: torch.Tensor, y0: torch.Tensor, idx0=None) -> None:
        slot = self.slots.get(k)
        if slot is not None:
            slot.fill(z0, y0, self.inv, idx0)

    def where(self, name: str) -> str:
        owner = calling_module(self.names)
        return f"{name} called in " + (f"module {owner!r}" if owner else "the model's forward")

    def activation(self, z: torch.Tensor, y: torch.Tensor, fn, behaviour: Behaviour):
        """``y = f(z)`` as the rest of the pass sees it (None: unchanged)."""
        k = self.tick()
        if self.phase == "x":
            if not z.requires_grad or not z.is_floating_point():
                return None
            slot = self.keep(k, Slot(z.detach(), y.detach(), fn, behaviour))
            return Rescale.apply(z, y.detach(), slot)
        self.fill(k, z, y)
        return None


_BEHAVIOURS: dict = {}
_PLAIN = (bool, int, float, str, type(None))


def behaviour_of(module: nn.Module) -> Behaviour | None:
    """:func:`~cnnlens.core.activations.module_behaviour`, remembered per module class and
    plain attribute values (``ReLU6``, ``Identity``, ``Hardtanh(0, 6)``): probing every
    module costs about a pass of a small CNN, and the same kinds recur in every call."""
    state = vars(module)
    if any(not isinstance(v, _PLAIN) for k, v in state.items() if not k.startswith("_")):
        return module_behaviour(module)  # tensors or objects among its attributes: probe
    if module._parameters or module._buffers or module._modules:
        return module_behaviour(module)
    key = (type(module), tuple(sorted((k, v) for k, v in state.items() if not k.startswith("_"))))
    if key not in _BEHAVIOURS:
        _BEHAVIOURS[key] = module_behaviour(module)
    return _BEHAVIOURS[key]


@contextmanager
def rescaling(net: nn.Module, tape: Tape) -> Iterator[Tape]:
    """Within the block, forward passes of ``net`` follow ``tape.phase`` (see :class:`Tape`).

    Activation modules (found by behaviour) get hooks and run out of place; activation,
    norm and coupling calls go through :func:`~cnnlens.core.functional.intercepted`; every
    other torch call through :class:`~.deeplift_rules.Watch`. All undone on exit.
    """
    acts = [(m, b) for m in net.modules() if (b := behaviour_of(m)) is not None]

    def enter(module, args):
        tape.depth += 1

    def make_hook(behaviour: Behaviour):
        def hook(module, args, out):
            tape.depth -= 1
            z = args[0] if args else None
            if tape.phase == "off" or tape.depth or not isinstance(z, torch.Tensor):
                return None
            if not isinstance(out, torch.Tensor) or out.shape != z.shape:
                return None
            return tape.activation(z, out, module.forward, behaviour)

        return hook

    def on_call(call: Call):
        if tape.phase == "off" or tape.depth:
            return None
        z, x_pass = call.z, tape.phase == "x"
        if call.kind != "activation":
            if x_pass and z.requires_grad:
                why = NORM_WHY if call.kind == "norm" else COUPLING_WHY
                raise refusal(tape.where(call.name), why)
            return None
        wanted = (
            z.requires_grad and z.is_floating_point() if x_pass else tape.count + 1 in tape.slots
        )
        if not wanted:
            tape.tick()
            return None
        behaviour = call.behaviour() if x_pass else None
        if x_pass and behaviour is None:
            raise refusal(
                tape.where(call.name), "its curve could not be probed as an elementwise map"
            )
        with torch.no_grad():
            y = call.fn(z)
        k = tape.tick()
        if not x_pass:
            tape.fill(k, z, y)
            return call.finish(y)
        kept = z.detach().clone() if call.inplace else z.detach()
        slot = tape.keep(k, Slot(kept, y, call.fn, behaviour))
        return call.finish(Rescale.apply(z, y, slot))

    def hooks():
        for m, b in acts:
            yield m, enter, "forward_pre"
            yield m, make_hook(b), "forward"

    try:
        with ExitStack() as stack:
            stack.enter_context(out_of_place(m for m, _ in acts))
            stack.enter_context(attached(hooks()))
            stack.enter_context(intercepted(on_call))
            stack.enter_context(Watch(tape))
            yield tape
    finally:
        tape.phase = "off"


def deeplift_per_channel(
    model, x: torch.Tensor, target, refs: torch.Tensor, index: torch.Tensor,
    batch_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """DeepLIFT contributions averaged over each image's references, kept per channel.

    Args:
        model: a LoadedModel.
        x: ``(N, C, H, W)`` images.
        target: target specification (logits are explained).
        refs, index: references ``(R, C, H, W)`` and each image's ``(N, K)`` (:func:`references`).
        batch_size: (image, reference) rows per pass (default: memory-aware).

    Returns:
        ``contributions (N, T, C, H, W)``, ``targets (N, T)``, the completeness residual
        ``delta (N, T)`` (mean over references) and its largest magnitude over references
        ``(N, T)``.
    """
    check_batch_size(batch_size)
    n, k = index.shape
    # the channels-last copy pays off over many passes only (it costs about one pass)
    fast = FastNet.of(model.net, x) if n * k >= 8 else FastNet.plain(model.net)
    x = x.detach()
    targets = None
    if needs_logits(target):
        with torch.no_grad():
            targets = resolve_targets(target, n, fast(x))
    total = sums = gaps = None
    tape = Tape(fast.net)
    batches = chunks(n * k, rows_per_pass(x, batch_size))
    with (
        preserved(fast.net, eval_mode=False),
        progress.task("deeplift", len(batches)) as advance,
    ):
        for rows in batches:
            r = torch.arange(rows.start, rows.stop, device=x.device)
            i, ids = r // k, index.view(-1)[r]
            uniq, inv = torch.unique(ids, return_inverse=True)
            lined_up = len(uniq) == len(ids) and bool((uniq == ids).all())
            xr = fast.prepare(x[i]).requires_grad_(True)
            with rescaling(fast.net, tape):  # forward passes only
                tape.begin("x", None if lined_up else inv)
                logits = fast.net(xr)
                if targets is None:
                    targets = resolve_targets(target, n, logits.new_empty(n, logits.shape[1]))
                tape.begin("ref", None if lined_up else inv)
                with torch.no_grad():
                    ref_logits = fast.net(fast.prepare(refs[uniq]))
                tape.end_reference()
            tape.settle()
            if total is None:
                t = targets.shape[1]
                total = torch.zeros(n, t, *x.shape[1:], dtype=x.dtype, device=x.device)
                sums = torch.zeros(n * k, t, dtype=torch.float64, device=x.device)
                gaps = torch.zeros_like(sums)
            scores = logits.gather(1, targets[i])
            ref_scores = ref_logits[inv].gather(1, targets[i])
            diff = x[i] - refs[uniq][inv]
            for j in range(t):
                (g,) = torch.autograd.grad(scores[:, j].sum(), xr, retain_graph=j < t - 1)
                c = diff * g
                total[:, j].index_add_(0, i, c / k)
                sums[r, j] = c.flatten(1).double().sum(1)
            gaps[r] = (scores - ref_scores).detach().double()
            tape.slots.clear()
            advance(1)
    residual = (sums - gaps).view(n, k, -1)
    delta = residual.mean(1).to(x.dtype)
    return total, targets, delta, residual.abs().amax(1).to(x.dtype)


def _maps(model, x, target, baselines, single, reduce, batch_size) -> MethodOutput:
    check_reduce(reduce)
    refs, index = references(x, baselines, single=single)
    contributions, targets, delta, worst = deeplift_per_channel(
        model, x, target, refs, index, batch_size
    )
    extras = {"signed": reduce == "sum", "delta": delta, "references": index.shape[1]}
    if not single:
        extras["delta_max"] = worst
    return MethodOutput(reduce_per_target(contributions, reduce).detach(), targets, extras)


_OUTPUT = (
    "DeepLIFT's rules cover the network's own layers, and the score functions of other "
    "targets (softmax, sigmoid, cosine similarity) have none"
)


@register(
    "deeplift",
    "Differences from a reference backpropagated with the rescale rule (Shrikumar et al. 2017)",
    signed=True,
    family="gradient",
    targets="output",
    targets_reason=_OUTPUT,
)
def deeplift(
    model, x: torch.Tensor, target=None, *, baseline: Baselines = "zero",
    reduce: str = "sum", batch_size: int | None = None,
) -> MethodOutput:  # fmt: skip
    """DeepLIFT (rescale rule) maps.

    Args:
        model: a LoadedModel.
        x: ``(N, 3, H, W)`` normalised images.
        target: target specification (class logits are explained).
        baseline: ``"zero"``, ``"blur"``, ``"mean"``, a number, or a tensor ``(C, H, W)``,
            ``(1, C, H, W)`` or ``(N, C, H, W)`` (one reference per image).
        reduce: ``"sum"`` over channels (signed, keeps completeness), ``"absmax"`` or ``"l2"``.
        batch_size: images per pass (default: memory-aware).

    Returns:
        ``maps (N, T, H, W)``; ``extras["delta"] (N, T)`` = sum of contributions -
        (s(x) - s(baseline)).
    """
    return _maps(model, x, target, baseline, True, reduce, batch_size)


@register(
    "deeplift_shap",
    "DeepLIFT averaged over a distribution of references (Lundberg & Lee 2017)",
    signed=True,
    family="gradient",
    targets="output",
    targets_reason=_OUTPUT,
)
def deeplift_shap(
    model, x: torch.Tensor, target=None, *, baselines: Baselines = ("zero", "blur"),
    reduce: str = "sum", batch_size: int | None = None,
) -> MethodOutput:  # fmt: skip
    """DeepLIFT-SHAP maps: the mean of DeepLIFT over each image's references.

    Args:
        model: a LoadedModel.
        x: ``(N, 3, H, W)`` normalised images.
        target: target specification (class logits are explained).
        baselines: a tensor ``(K, C, H, W)`` of references shared by all images, names
            (``"zero"``, ``"blur"``, ``"mean"``, one reference per image each), or a list
            mixing both.
        reduce: ``"sum"`` over channels (signed), ``"absmax"`` or ``"l2"``.
        batch_size: (image, reference) pairs per pass (default: memory-aware).

    Returns:
        ``maps (N, T, H, W)``; ``extras["delta"] (N, T)`` = sum of contributions -
        (s(x) - mean of s(references)); ``extras["delta_max"]`` the largest per reference.
    """
    return _maps(model, x, target, baselines, False, reduce, batch_size)


__all__ = ["Tape", "deeplift", "deeplift_shap", "rescaling"]
