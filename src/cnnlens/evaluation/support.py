"""The support matrix: does a method give a map on an architecture?

One cell runs one registered method on one model and one image, with the fast
settings of :data:`FAST`, and says what came out:

- ``"map"``: a finite, non-constant ``(1, 1, H, W)`` map on the input grid;
- ``"refused"``: a :class:`~cnnlens.core.errors.MethodError`, whose message is the
  reason (the method cannot apply here and says why);
- ``"failure"``: anything else (another exception, a NaN, a constant map, a map of
  the wrong shape). Failures are bugs: a method must either work or refuse.

``benchmarks/support_matrix.py`` runs every cell of
:data:`~cnnlens.evaluation.support_archs.ARCHS` x every method and writes
``docs/support.md`` (with :func:`markdown`) and ``docs/support.json``;
``tests/test_support_matrix.py`` runs the same cells and checks they agree.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

import torch

from ..core.errors import MethodError

#: Parameters that make each method quick at 64-128 px; methods not listed run with
#: their defaults. Fewer samples, masks, steps and iterations than the defaults
#: (which are for good maps, not for "does it run"), so these maps are rough.
FAST: dict[str, dict] = {
    "occlusion": {"window": 32, "stride": 32},
    "rise": {"masks": 16, "cells": 4, "batch_size": 16},
    "integrated_gradients": {"steps": 4},
    "smoothgrad": {"samples": 3},
    "smoothgrad_sq": {"samples": 3},
    "vargrad": {"samples": 3},
    "meaningful_perturbation": {"iterations": 3},
    "extremal": {"iterations": 3},
    "scorecam": {"batch_size": 64},
    "ablationcam": {"batch_size": 64},
    "gradient_shap": {"samples": 4},
    # ridge: on random weights the logit moves by less than the lasso's default penalty, which
    # then keeps no segment (LIME warns); the matrix asks whether LIME runs, not how sparse
    "lime": {"samples": 32, "n_segments": 16, "surrogate": "ridge"},
    "kernel_shap": {"samples": 32, "n_segments": 16},
    "shapley_sampling": {"samples": 1, "n_segments": 16},
}

#: What every cell explains: the model's top class (``None``), as users' default does. A
#: class the random model does not predict often has no positive evidence at the CAM
#: layer, and the CAM family then rightly gives an all-zero map.
TARGET = None
KINDS = ("map", "refused", "failure")


@dataclass(frozen=True)
class Cell:
    """What one method did on one architecture.

    Attributes:
        arch, method: the row and column.
        kind: ``"map"``, ``"refused"`` or ``"failure"`` (see the module docstring).
        reason: the refusal's message, or what went wrong; empty for a map.
        layer: the layer a layer-based method explained at (``Explanation.extras``).
        seconds: wall time of the call.
    """

    arch: str
    method: str
    kind: str
    reason: str = ""
    layer: str = ""
    seconds: float = 0.0

    def outcome(self) -> tuple[str, str, str]:
        """``(kind, reason, layer)``: what must not change between runs (timing may)."""
        return self.kind, self.reason, self.layer


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".strip()


def check_map(maps: torch.Tensor, x: torch.Tensor) -> str:
    """Why ``maps`` is not a usable map for the one-image, one-target ``x``; ``""`` if it is."""
    want = (x.shape[0], 1, *x.shape[-2:])
    if tuple(maps.shape) != want:
        return f"map of shape {tuple(maps.shape)}, expected {want} (the input grid)"
    finite = torch.isfinite(maps)
    if not finite.all():
        return f"{int((~finite).sum())} of {maps.numel()} map values are not finite"
    lo, hi = float(maps.min()), float(maps.max())
    if not hi - lo > 1e-6 * max(abs(lo), abs(hi)):  # equal, or apart by rounding only
        return f"constant map (every value {lo:.4g})"
    return ""


def run_cell(model, x: torch.Tensor, arch: str, method: str, target=TARGET) -> Cell:
    """Run ``method`` on ``model`` and ``x`` with :data:`FAST` settings; classify the result."""
    from ..methods import attribute  # the registry, filled

    start = time.perf_counter()
    try:
        expl = attribute(model, x, method, target=target, **FAST.get(method, {}))
    except MethodError as e:
        return Cell(arch, method, "refused", str(e), seconds=time.perf_counter() - start)
    except Exception as e:  # noqa: BLE001 (anything else is a bug to report, not to raise)
        return Cell(arch, method, "failure", _first_line(e), seconds=time.perf_counter() - start)
    seconds = time.perf_counter() - start
    problem = check_map(expl.maps.detach().float().cpu(), x)
    layer = str(expl.extras.get("layer") or "")
    return Cell(arch, method, "failure" if problem else "map", problem, layer, seconds)


# --------------------------------------------------------------------------- records


def to_json(cells: list[Cell], meta: dict) -> str:
    """The cells (in their order) and the run's facts (``meta``) as JSON text."""
    rows = [asdict(c) for c in cells]
    for r in rows:
        r["seconds"] = round(r["seconds"], 3)
    return json.dumps({"meta": meta, "cells": rows}, indent=1, ensure_ascii=False) + "\n"


def from_json(text: str) -> tuple[list[Cell], dict]:
    """Inverse of :func:`to_json`."""
    data = json.loads(text)
    return [Cell(**r) for r in data["cells"]], data.get("meta", {})


def share_of_maps(cells: list[Cell]) -> float:
    """Fraction of ``cells`` that gave a map."""
    return sum(c.kind == "map" for c in cells) / len(cells) if cells else 0.0


# --------------------------------------------------------------------------- the table

# (pattern in a refusal's message, short label); the first that matches names the cell.
# A group in the pattern fills "{}" (the module type excitation backprop stops at).
_SHORT = (
    (r"no global self-attention|cannot tell how the attention tokens", "no ViT attention"),
    (r"excitation backprop is undefined at module '[^']*' \(([^)]+)\)", "EB: {}"),
    (r"DeepLIFT has no rule at (?:F\.|Tensor\.|torch\.)?(\w+)", "DeepLIFT: {}"),
    (r"LRP has no rule for module '[^']*' \(([^)]+)\)", "LRP: {}"),
    (r"LRP has no rule for batch norm", "LRP: BN after no conv"),
    (r"CAM needs global average pooling", "head not GAP+linear"),
    (r"CAM needs a final nn\.Linear|negates the classifier row", "no linear head"),
)

#: Why each kind of refusal is a limit of the method's mathematics, not of cnnlens.
LIMITS = {
    "no ViT attention": "attention rollout and transformer relevance propagate through the "
    "attention matrices of one global sequence of special + patch tokens (ViT, DeiT); a CNN "
    "has none, and Swin's shifted windows, LeViT's attention on shrinking grids and "
    "MobileViT's separable attention do not make one token sequence",
    "EB": "excitation backprop shares a winning probability down through non-negative "
    "excitatory weights, defined for Conv2d / Linear / BatchNorm layers and ReLU-like units; "
    "a LayerNorm (each unit divided by statistics of the others), a self-gated activation "
    "(SiLU, Hardswish: negative outputs), a sigmoid gate (squeeze-excitation) or an embedding "
    "with its own parameters has no such weights",
    "DeepLIFT": "DeepLIFT's rescale rule gives one multiplier per unit for a nonlinearity of "
    "that unit alone; a LayerNorm or GroupNorm (each unit divided by statistics of the others), "
    "a product of two input-dependent tensors (squeeze-excitation gates, attention) has none",
    "LRP": "LRP redistributes relevance through linear layers (batch norm folded into the "
    "conv before it), rectifying activations, pooling and sums; a LayerNorm or GroupNorm, a "
    "sigmoid gate, attention or an embedding with parameters of its own has no rule "
    "(DenseNet's batch norms after a concatenation are a gap, below)",
    "head not GAP+linear": "CAM reads the class weights of a linear layer applied straight "
    "to the global average of the feature map; a ViT's class token, or a LayerNorm or an MLP "
    "between the pooling and the classifier (ConvNeXt, MobileNetV3), is not that, and gradcam "
    "gives the map instead",
}

#: Refusals that are not limits of the mathematics: maps cnnlens could give (to do).
GAPS = {
    ("squeezenet1_1", "cam"): "SqueezeNet classifies with a 1x1 convolution and a ReLU "
    "before global average pooling, so its class-score map before the pooling is the CAM",
    ("squeezenet1_1", "contrastive_excitation_backprop"): "the classifier row to negate is "
    "the final 1x1 convolution's filter; the ReLU and the averaging after it pass winning "
    "probability on unchanged",
    ("timm/levit_128s", "cam"): "LeViT averages two heads, each an eval-mode BatchNorm1d "
    "and a linear layer on the mean of its last-stage tokens: affine in the pooled vector, "
    "so CAM holds once the norms are folded into the weights",
    ("densenet121", "lrp"): "DenseNet's batch norms read a concatenation, not a conv, so "
    "they cannot be folded; as an affine layer of their own (an epsilon rule on the shift) "
    "they could carry relevance",
    ("hf/swin", "cam"): "the final LayerNorm acts per token and the pooler averages the "
    "tokens as in torchvision's Swin (where CAM works), but through transpose + "
    "AdaptiveAvgPool1d, which CAM's pooling follower does not follow yet",
}


def short_reason(cell: Cell) -> str:
    """A few words for the table: ``"✓"`` for a map, a label for a refusal or failure."""
    import re

    if cell.kind == "map":
        return "✓"
    if cell.kind == "failure":
        return "FAILURE"
    for pattern, label in _SHORT:
        found = re.search(pattern, cell.reason)
        if found:
            return label.format(*found.groups())
    words = cell.reason.split()
    return " ".join(words[:5]) + (" ..." if len(words) > 5 else "")


def _limit_of(label: str) -> str:
    return LIMITS.get(label) or LIMITS.get(label.split(":")[0], "")


def markdown(cells: list[Cell], meta: dict) -> str:
    """``docs/support.md``: the matrix (architecture x method), the share of maps, every
    refusal with its message, and every failure. Depends only on ``cells`` and ``meta``."""
    archs = list(dict.fromkeys(c.arch for c in cells))
    methods = sorted({c.method for c in cells})
    at = {(c.arch, c.method): c for c in cells}
    maps = sum(c.kind == "map" for c in cells)
    refused = [c for c in cells if c.kind == "refused"]
    gaps = sum((c.arch, c.method) in GAPS for c in refused)
    applicable = len(cells) - len(refused) + gaps
    out = [
        "# Support matrix",
        "",
        "Generated by `python benchmarks/support_matrix.py` (do not edit by hand; "
        "`tests/test_support_matrix.py` checks this page against `docs/support.json` and "
        "the cells against a fresh run). Every registered method on every architecture, "
        "random weights (see `cnnlens.evaluation.support_archs`), one image at the size "
        "given, the model's top class, fast settings (`cnnlens.evaluation.support.FAST`).",
        "",
        f"**{maps} of {len(cells)} cells ({_pc(maps, len(cells))}) give a map**: finite, "
        f"not constant, on the input grid. {len(refused)} are refusals (a `MethodError` "
        f"saying why): {len(refused) - gaps} where the method's mathematics does not apply "
        f"(below), {gaps} gaps cnnlens could close (†). "
        f"{sum(c.kind == 'failure' for c in cells)} failures. Of the {applicable} cells "
        f"where the method applies, **{_pc(maps, applicable)} give a map**.",
        "",
        f"Versions: {', '.join(f'{k} {v}' for k, v in meta.get('versions', {}).items())}.",
        "",
        "`px` is the input side; `CAM layer` the layer the CAM family explains at by "
        'default (`Explanation.extras["layer"]`).',
        "",
        "| architecture | px | CAM layer | " + " | ".join(methods) + " |",
        "|---|---|---|" + "---|" * len(methods),
    ]
    sizes = meta.get("sizes", {})
    for a in archs:
        row = [_mark(at[a, m]) if (a, m) in at else "" for m in methods]
        layer = at[a, "gradcam"].layer if (a, "gradcam") in at else ""
        out.append(f"| {a} | {sizes.get(a, '')} | `{layer}` | " + " | ".join(row) + " |")
    out += _legend(cells)
    return "\n".join(out) + "\n"


def _pc(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "-"


def _mark(cell: Cell) -> str:
    return short_reason(cell) + (" †" if (cell.arch, cell.method) in GAPS else "")


def _legend(cells: list[Cell]) -> list[str]:
    refused = [c for c in cells if c.kind == "refused"]
    limits = [c for c in refused if (c.arch, c.method) not in GAPS]
    out = ["", "## Refusals where the method does not apply", ""]
    groups: dict[str, list[str]] = {}  # "EB: LayerNorm" and "EB: SiLU" share "EB"
    for label in sorted({short_reason(c) for c in limits}):
        groups.setdefault(label.split(":")[0] if _limit_of(label) else label, []).append(label)
    for key, labels in groups.items():
        n = sum(short_reason(c) in labels for c in limits)
        why = _limit_of(key) or "see the messages below"
        out.append(f"- **{', '.join(labels)}** ({n} cells): {why}")
    out += ["", "## Gaps: refusals cnnlens could turn into maps", ""]
    out += [
        f"- {a} / {m}: {why}"
        for (a, m), why in GAPS.items()
        if any((c.arch, c.method) == (a, m) for c in refused)
    ]
    out += ["", "## Every refusal, as the user sees it", ""]
    out += [f"- {c.arch} / {c.method}: {c.reason}" for c in refused]
    failures = [c for c in cells if c.kind == "failure"]
    if failures:
        out += ["", "## Failures (bugs: a method must give a map or refuse)", ""]
        out += [f"- {c.arch} / {c.method}: {c.reason}" for c in failures]
    return out
