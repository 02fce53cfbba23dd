"""Layer-wise relevance propagation (LRP) with composites, equal to zennit 0.5.1.

Bach, Binder, Montavon, Klauschen, Müller & Samek, "On Pixel-Wise Explanations for
Non-Linear Classifier Decisions by Layer-Wise Relevance Propagation", PLOS ONE 2015;
Montavon, Binder, Lapuschkin, Samek & Müller, "Layer-Wise Relevance Propagation: An
Overview", in *Explainable AI*, Springer LNCS 11700, 2019.

**Theory.** LRP hands the target's score down the network layer by layer, so that each
layer's relevance sums (nearly) to the score: the target logit ``R = f_c(x)`` starts at the
output, and a linear layer ``z_j = sum_i x_i w_ij + b_j`` gives input ``i`` a share of each
output's relevance proportional to its contribution,

    R_i = sum_j  x_i w_ij / (z_j + eps sign(z_j)) * R_j          (the epsilon rule),

or one of the variants of :mod:`.rules` (z-plus, alpha-beta, gamma, flat, w-square, z^B).
A *composite* (:mod:`.composites`) picks a rule per layer: ``epsilon_plus`` (default)
z-plus on convolutions and epsilon on Linear layers; ``epsilon_gamma_box`` z^B on the
first convolution (bounds: the normalised pixel values 0 and 1), gamma on the others;
``epsilon_alpha2_beta1``, ``epsilon_plus_flat``, ``epsilon_alpha2_beta1_flat``.
Activations pass relevance through, batch norms are folded into the conv / Linear before
them (:mod:`.canonize`), average pooling and residual sums share relevance in proportion
to their inputs, max pooling sends it to the maximum. The map is the input relevance
summed over colour channels, signed; it sums to the score minus what biases and
stabilisers absorbed (``extras["leak"]``, per layer in ``extras["leaks"]``).

**Where this is found.** Conv / Linear layers and batch norms are module hooks; residual
sums (``x + shortcut``, ``out += identity``), pooling calls, means and products are found
in ``forward`` by a ``TorchFunctionMode`` active during the forward pass only
(:mod:`.engine`), so timm's and torchvision's residual blocks need no rewritten forward.
LayerNorm, attention, softmax, saturating activations and multiplicative gates
(squeeze-excitation) are refused with the module, the reason and the methods that work.
Nothing of the model is written: folding builds new tensors, and every hook, in-place flag
and mode is undone in ``finally``.

**Against zennit 0.5.1** (``tests/attribution/test_lrp_zennit.py``: Pearson >= 0.999 and
max difference <= 1e-4 of the map range on EfficientNet-Lite0, ResNet-18 and VGG-11): the
rules, stabilisers and composites are zennit's. Differences, each decided by a hand
computation in ``tests/attribution/test_lrp.py``: (1) we start from the logit (zennit's
attributor from the output gradient you give it; with ``logit * one_hot`` the maps are
equal); (2) zennit's batch-norm merge leaves the emptied batch norm computing
``u / sqrt(1 + eps)``, we fold exactly (a 0.05 % shrink per layer at timm's eps = 1e-3;
the cross-check gives zennit ``eps = 0`` there); (3) the first layer is the first to *run*,
zennit's the first in module order (the same in every network tested); (4) functional
activations (``F.relu``) pass relevance like modules, and a batch norm that follows no
conv is refused, where zennit passes its relevance unchanged.
"""

from __future__ import annotations

import torch

from ...core.errors import MethodError
from ...core.functional import intercepted
from ...core.hooks import attached, out_of_place
from ...core.registry import register
from ...core.targets import resolve_targets
from ...core.tensors import MethodOutput
from .composites import COMPOSITES, Assignment, box_bounds, composite_named
from .engine import Arithmetic, State, activation_handler, lrp_hooks

_TARGETS = "LRP redistributes the value of one output unit down through the layers that produced it"


@register(
    "lrp",
    "Layer-wise relevance propagation with zennit's composites (Bach et al. 2015)",
    signed=True,
    family="gradient",
    targets="output",
    targets_reason=_TARGETS,
)
def lrp(
    model,
    x: torch.Tensor,
    target=None,
    *,
    composite: str = "epsilon_plus",
    epsilon: float = 1e-6,
    gamma: float = 0.25,
) -> MethodOutput:
    """LRP maps: the input relevance of each target logit, summed over channels.

    Args:
        model: a :class:`~cnnlens.models.base.LoadedModel` (its normalisation gives z^B's
            bounds).
        x: ``(N, C, H, W)`` normalised input.
        target: class index, list per image, tensor or ``"topK"`` (see
            :func:`~cnnlens.core.targets.resolve_targets`).
        composite: one of ``epsilon_plus`` (default), ``epsilon_gamma_box``,
            ``epsilon_alpha2_beta1``, ``epsilon_plus_flat``, ``epsilon_alpha2_beta1_flat``.
        epsilon: the epsilon rule's stabiliser (Linear layers), zennit's default 1e-6.
        gamma: the gamma rule's boost of positive weights (``epsilon_gamma_box``), 0.25.

    Returns:
        :class:`MethodOutput` with signed maps ``(N, T, H, W)``, targets ``(N, T)`` and
        extras ``score``, ``relevance_sum``, ``leak`` (each ``(N, T)``: score =
        relevance_sum + leak up to rounding), ``leaks`` (layer -> ``(N, T)``), ``rules``
        (layer -> rule name), ``composite`` and ``signed``.

    Raises:
        MethodError: an unknown composite, or a layer LRP has no rule for (named, with
            the reason and the methods that work instead).
    """
    comp = composite_named(composite)
    params = {"epsilon": float(epsilon), "gamma": float(gamma)}
    if comp.first is not None and "conv" in comp.first_kinds and len(comp.first_kinds) == 1:
        spec = model.preprocess_spec
        params["low"], params["high"] = box_bounds(spec.mean, spec.std, x)
    net = model.net
    xg = x.detach().requires_grad_(True)
    state = State(net, xg, Assignment(comp, params))
    with out_of_place(net.modules()), attached(lrp_hooks(state)):
        try:
            with intercepted(activation_handler(state)), Arithmetic(state):
                logits = net(xg)
            targets = resolve_targets(target, x.shape[0], logits)
            if not state.rules or not logits.requires_grad:
                raise MethodError(
                    f"LRP found no Conv / Linear layer in {type(net).__name__}'s forward pass "
                    "to propagate relevance through. Use 'gradient' or 'occlusion'."
                )
            scores = logits.gather(1, targets)
            maps, sums, leaks = [], [], []
            for j in range(targets.shape[1]):
                state.leaks = {}
                seed = torch.zeros_like(logits).scatter(
                    1, targets[:, j : j + 1], scores[:, j : j + 1]
                )
                last = j == targets.shape[1] - 1
                (r,) = torch.autograd.grad(logits, xg, seed.detach(), retain_graph=not last)
                maps.append(r.sum(1))
                sums.append(r.flatten(1).sum(1))
                leaks.append({k: v.clone() for k, v in state.leaks.items()})
        finally:
            state.sites.clear()  # no reference cycles through the graph
            state.saved.clear()
    names = list(leaks[0]) if leaks else []
    per_layer = {k: torch.stack([lk.get(k, torch.zeros_like(sums[0])) for lk in leaks], 1)
                 for k in names}  # fmt: skip
    leak = sum(per_layer.values()) if per_layer else torch.zeros_like(scores)
    extras = {
        "signed": True,
        "composite": comp.name,
        "score": scores.detach(),
        "relevance_sum": torch.stack(sums, 1).detach(),
        "leak": leak,
        "leaks": per_layer,
        "rules": dict(state.rules),
    }
    return MethodOutput(torch.stack(maps, 1).detach(), targets, extras)


__all__ = ["COMPOSITES", "lrp"]
