"""Adversarial defence: telling adversarial images from clean ones by their saliency maps.

Fong & Vedaldi ("Interpretable Explanations of Black Boxes by Meaningful
Perturbation", ICCV 2017, sec. 5.5 and fig. 10) observe that learned deletion
masks look different on adversarial images: the adversarial class has no
object behind it, so the smallest region whose blurring removes it is
scattered and odd-looking. They make the claim measurable in two ways, both
here.

**Detection.** Generate an adversarial twin of every image, explain the top
predicted class of the clean image and of its twin with a saliency method,
and train a classifier to tell the two kinds of map apart. Held-out accuracy
says how much a method's maps reveal that an input was attacked (0.5 is
chance). The paper trains an AlexNet on 4000 pairs and tests on 1000; its
learned masks reach 93.6 %, well above the other methods it compares.

**Label recovery.** Apply the mask learned on the adversarial image (for its
adversarial top-1 class) back to that image, i.e. blur away the region that
carries the adversarial evidence, and check whether the clean image's top-1
label returns as top-1 (40.64 % in the paper) or within the top 5 (100 %).

Attack: the basic iterative method of Kurakin, Goodfellow & Bengio
("Adversarial examples in the physical world", 2016), an iterated
fast-gradient-sign step. Work in pixel space ``p`` in [0, 1] (the image before
the model's mean/std normalisation), start at the clean pixels ``p0`` and
repeat

    p <- clip_[p0 - ε, p0 + ε] ∩ [0, 1] ( p + α sign ∇_p CE(f(p), y) )

so the loss of label ``y`` (by default the clean top-1 prediction: untargeted,
and no ground truth needed) rises by steps of ``α`` while the image stays in
the L∞ ball of radius ``ε`` and in the valid pixel range. Defaults as in that
paper: ``ε = 8/255``, ``α = 1/255`` and ``min(255 ε + 4, 1.25 · 255 ε)``
steps (10 for ε = 8/255), rounded half to even. The paper names the attack
only as Kurakin et al.'s iterative method with ε = 8; ``α`` and the step count
are that reference's. Pixels are kept as floats (not rounded to 1/255), and
the attack is deterministic: there is no random start unless asked for.

Classifier: with tens of images (not the paper's thousands) an AlexNet would
only memorise, so :func:`detection_accuracy` trains something small on maps
average-pooled to ``size x size`` (28, the paper's mask resolution) after
dividing each map by its largest absolute value (scale-free: methods differ
in units, and some in the magnitude of their maps):

* ``"cnn"``: conv(8, 3x3) - ReLU - max-pool - conv(16, 3x3) - ReLU - global
  average pool - linear, so it looks for local patterns wherever they are;
  trained with the paper's optimiser settings (SGD, learning rate 1e-2,
  momentum 0.9, weight decay 1e-4) for ``epochs`` full-batch steps, on maps
  standardised by the training fold's overall mean and deviation;
* ``"logistic"``: L2-regularised logistic regression on the pooled pixels,
  standardised with the training fold's statistics, fitted with L-BFGS.

Evaluation is k-fold cross-validation over *pairs*: a clean image and its
adversarial twin always fall in the same fold, so no test image has its twin
(a near-copy with the other label) in the training set. Reported: the mean
and standard deviation of the per-fold accuracies, and the pooled accuracy
over all held-out maps.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..core.explanation import Explanation
from ..core.hooks import preserved
from ..core.targets import resolve_targets
from ..core.tensors import check_batch_size, default_batch_size, inference_copy
from ..models.base import LoadedModel
from .operators import Perturbation, check_perturbation

CLASSIFIERS = ("cnn", "logistic")


# ----------------------------------------------------------------------------- attack


def default_steps(epsilon: float) -> int:
    """Kurakin et al.'s iteration count ``min(255 ε + 4, 1.25 · 255 ε)``, at least 1."""
    e = 255.0 * float(epsilon)
    return max(1, int(round(min(e + 4, 1.25 * e))))


def _pixel_stats(model: LoadedModel, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    spec = model.preprocess_spec
    mean = torch.tensor(spec.mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return mean, std


def to_pixels(model, x: torch.Tensor) -> torch.Tensor:
    """Normalised inputs ``(N, 3, H, W)`` to pixels in [0, 1] with the model's mean/std."""
    model = LoadedModel.wrap(model)
    mean, std = _pixel_stats(model, x)
    return (x * std + mean).clamp(0, 1)


def ifgsm(
    model,
    x: torch.Tensor,
    target=None,
    *,
    epsilon: float = 8 / 255,
    step: float = 1 / 255,
    steps: int | None = None,
    seed: int = 0,
    random_start: bool = False,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Untargeted iterative FGSM (basic iterative method); see the module docstring.

    Args:
        model: a :class:`LoadedModel` or a bare ``nn.Module`` (taken to expect
            ImageNet mean/std normalisation, as :meth:`LoadedModel.wrap` does).
        x: ``(N, 3, H, W)`` normalised images (``(3, H, W)`` is accepted).
        target: the label to move away from, one per image (an int, a list, an
            ``(N,)`` tensor; see :mod:`cnnlens.core.targets`); ``None`` = each image's
            top-1 prediction.
        epsilon: radius of the L∞ ball, in [0, 1] pixel units (8/255 default).
        step: ``α``, the size of each signed-gradient step in pixel units.
        steps: number of steps (``None``: :func:`default_steps`, 10 at 8/255).
        seed: seed of the random start (unused without it).
        random_start: start from a uniform random point of the ball (Madry et
            al.'s PGD variant) instead of the clean image.
        batch_size: images per forward/backward pass (default: memory-aware).

    Returns:
        The adversarial images, normalised like ``x`` (same shape, device and
        dtype). Their pixels lie within ``epsilon`` of the clean pixels (the
        clean image clamped to [0, 1]) and inside [0, 1]. The model is left as
        it came (mode, flags and parameters).
    """
    check_batch_size(batch_size)
    if not (isinstance(epsilon, (int, float)) and 0 <= epsilon <= 1):
        raise ValueError(f"epsilon must be a number in [0, 1] (pixel units), got {epsilon!r}")
    if not (isinstance(step, (int, float)) and step > 0):
        raise ValueError(f"step must be a positive number (pixel units), got {step!r}")
    if steps is None:
        steps = default_steps(epsilon)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0 or None, got {steps!r}")
    model = LoadedModel.wrap(model)
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise ValueError(f"x must be (N, 3, H, W), got shape {tuple(x.shape)}")
    x = x.detach()
    n = x.shape[0]
    mean, std = _pixel_stats(model, x)
    p0 = (x * std + mean).clamp(0, 1)
    lo, hi = (p0 - epsilon).clamp_min(0), (p0 + epsilon).clamp_max(1)
    p = p0.clone()
    if random_start and epsilon > 0:
        g = torch.Generator().manual_seed(int(seed))
        noise = torch.rand(p0.shape, generator=g, dtype=torch.float32) * 2 - 1
        p = torch.min(torch.max(p0 + epsilon * noise.to(p0), lo), hi)
    bs = int(batch_size or default_batch_size(x))
    with preserved(model.net):
        net = inference_copy(model.net, x) if steps > 0 else model.net
        fmt = torch.channels_last if net is not model.net else torch.contiguous_format
        with torch.no_grad():
            logits = torch.cat([net(x[i : i + bs]).float() for i in range(0, n, bs)])
        labels = resolve_targets(target, n, logits)
        if labels.shape[1] != 1:
            raise ValueError(
                f"give one label per image, got targets of shape {tuple(labels.shape)}"
            )
        labels = labels[:, 0]
        for _ in range(steps):
            for i in range(0, n, bs):
                pc = p[i : i + bs].clone().requires_grad_(True)
                inp = ((pc - mean) / std).contiguous(memory_format=fmt)
                loss = F.cross_entropy(net(inp).float(), labels[i : i + bs], reduction="sum")
                (grad,) = torch.autograd.grad(loss, pc)
                moved = pc.detach() + step * grad.sign()
                p[i : i + bs] = torch.min(torch.max(moved, lo[i : i + bs]), hi[i : i + bs])
    return ((p - mean) / std).to(x.dtype)


# ----------------------------------------------------------------------------- detection


def _as_maps(maps: torch.Tensor | Explanation, what: str) -> torch.Tensor:
    """``(N, 1, H, W)`` float maps from ``(N, H, W)``, ``(N, 1, H, W)`` or an Explanation."""
    if isinstance(maps, Explanation):
        maps = maps.maps
    if not isinstance(maps, torch.Tensor):
        raise TypeError(f"{what} must be a tensor or an Explanation, got {type(maps).__name__}")
    if maps.dim() == 3:
        maps = maps.unsqueeze(1)
    if maps.dim() != 4 or maps.shape[1] != 1:
        raise ValueError(
            f"{what} must be (N, H, W) or (N, 1, H, W) (one map per image), "
            f"got shape {tuple(maps.shape)}"
        )
    return maps.detach().float().cpu()


def map_features(maps: torch.Tensor, size: int = 28) -> torch.Tensor:
    """Maps ``(N, 1, H, W)`` to the classifier's input ``(N, 1, size, size)``.

    Each map is divided by its largest absolute value (all-zero maps stay zero;
    NaNs become 0), then average-pooled to ``size x size``.
    """
    m = torch.nan_to_num(maps.float(), nan=0.0, posinf=0.0, neginf=0.0)
    scale = m.abs().flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return F.adaptive_avg_pool2d(m / scale, size)


def pair_folds(n: int, folds: int, seed: int = 0) -> torch.Tensor:
    """Fold index ``(n,)`` of each (clean, adversarial) pair: a seeded, balanced shuffle."""
    if n < 2:
        raise ValueError(f"cross-validation needs at least 2 image pairs, got {n}")
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"folds must be an integer >= 2, got {folds!r}")
    k = min(folds, n)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    fold = torch.empty(n, dtype=torch.long)
    fold[order] = torch.arange(n) % k
    return fold


class _TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(16, 1)

    def forward(self, x):
        return self.head(self.features(x))[:, 0]


@contextmanager
def _one_thread():
    """Run tiny models on one intra-op thread (restored after).

    Their ops are far too small to split: on 2 loaded cores the CNN trained
    about 9x faster with one thread (6.5 against 59 ms per epoch, measured).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _fit_cnn(xtr, ytr, xte, *, epochs, seed):
    """Train the tiny CNN on standardised maps; logits of the test maps."""
    mu, sd = xtr.mean(), xtr.std().clamp_min(1e-6)
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    with torch.random.fork_rng(devices=[]):  # seeded initialisation, global RNG untouched
        torch.manual_seed(int(seed))
        net = _TinyCNN()
    opt = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.9, weight_decay=1e-4)
    for _ in range(epochs):
        opt.zero_grad()
        F.binary_cross_entropy_with_logits(net(xtr), ytr).backward()
        opt.step()
    with torch.no_grad():
        return net(xte)


def _fit_logistic(xtr, ytr, xte, *, l2, max_iter):
    """L2-regularised logistic regression on standardised pixels; logits of the test maps."""
    xtr, xte = xtr.flatten(1).double(), xte.flatten(1).double()
    mu, sd = xtr.mean(0), xtr.std(0).clamp_min(1e-6)
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    w = torch.zeros(xtr.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe")
    y = ytr.double()

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(xtr @ w + b, y) + 0.5 * l2 * (w @ w)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return (xte @ w + b).float()


@dataclass
class Detection:
    """Cross-validated accuracy of telling clean maps from adversarial ones.

    Attributes:
        accuracy: mean of the per-fold accuracies.
        std: their standard deviation (sample, ``n - 1`` in the denominator).
        fold_accuracies: held-out accuracy of each fold.
        pooled: correct / total over all held-out maps.
        folds: ``(N,)`` fold of each pair (clean image and twin share it).
        predictions: ``(2, N)`` held-out probability of "adversarial" for the
            clean maps (row 0) and the adversarial maps (row 1).
        classifier: ``"cnn"`` or ``"logistic"``.
        n: number of pairs.
    """

    accuracy: float
    std: float
    fold_accuracies: list[float]
    pooled: float
    folds: torch.Tensor
    predictions: torch.Tensor
    classifier: str
    n: int
    params: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "accuracy": self.accuracy,
            "std": self.std,
            "fold_accuracies": list(self.fold_accuracies),
            "pooled": self.pooled,
            "folds": self.folds.tolist(),
            "predictions": self.predictions.tolist(),
            "classifier": self.classifier,
            "n": self.n,
            "params": dict(self.params),
        }


def detection_accuracy(
    maps_clean: torch.Tensor | Explanation,
    maps_adv: torch.Tensor | Explanation,
    *,
    folds: int = 5,
    seed: int = 0,
    classifier: str = "cnn",
    size: int = 28,
    epochs: int = 300,
    l2: float = 1.0,
) -> Detection:
    """k-fold accuracy of a small classifier telling clean maps from adversarial maps.

    Args:
        maps_clean, maps_adv: ``(N, H, W)`` or ``(N, 1, H, W)`` saliency maps (or
            single-target Explanations); entry ``i`` of both belongs to image ``i``
            and its adversarial twin.
        folds: number of folds over pairs (capped at ``N``: leave one pair out).
        seed: fold assignment and classifier initialisation.
        classifier: ``"cnn"`` (default) or ``"logistic"``; see the module docstring.
        size: side of the pooled maps the classifier sees.
        epochs: full-batch SGD steps of the CNN.
        l2: L2 penalty of the logistic regression (on standardised features).

    Returns:
        A :class:`Detection`. A classifier that cannot tell the maps apart
        scores about 0.5.
    """
    if classifier not in CLASSIFIERS:
        raise ValueError(f"classifier must be one of {', '.join(CLASSIFIERS)}, got {classifier!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 4:
        raise ValueError(f"size must be an integer >= 4, got {size!r}")
    clean, adv = _as_maps(maps_clean, "maps_clean"), _as_maps(maps_adv, "maps_adv")
    if clean.shape[0] != adv.shape[0]:
        raise ValueError(
            f"need one adversarial map per clean map, got {clean.shape[0]} and {adv.shape[0]}"
        )
    n = clean.shape[0]
    fold = pair_folds(n, folds, seed)
    k = int(fold.max()) + 1
    fc, fa = map_features(clean, size), map_features(adv, size)
    prob = torch.zeros(2, n)
    accs = []
    with _one_thread():
        for j in range(k):
            test, train = fold == j, fold != j
            xtr = torch.cat([fc[train], fa[train]])
            ytr = torch.cat([torch.zeros(int(train.sum())), torch.ones(int(train.sum()))])
            xte = torch.cat([fc[test], fa[test]])
            if classifier == "cnn":
                logits = _fit_cnn(xtr, ytr, xte, epochs=epochs, seed=seed * 1000 + j)
            else:
                logits = _fit_logistic(xtr, ytr, xte, l2=l2, max_iter=200)
            p = torch.sigmoid(logits)
            m = int(test.sum())
            prob[0, test], prob[1, test] = p[:m], p[m:]
            correct = int((p[:m] < 0.5).sum()) + int((p[m:] >= 0.5).sum())
            accs.append(correct / (2 * m))
    correct = int((prob[0] < 0.5).sum()) + int((prob[1] >= 0.5).sum())
    acc_t = torch.tensor(accs, dtype=torch.float64)
    return Detection(
        accuracy=float(acc_t.mean()),
        std=float(acc_t.std()) if k > 1 else 0.0,
        fold_accuracies=accs,
        pooled=correct / (2 * n),
        folds=fold,
        predictions=prob,
        classifier=classifier,
        n=n,
        params={"folds": k, "seed": seed, "size": size, "epochs": epochs, "l2": l2},
    )


# ----------------------------------------------------------------------------- label recovery


@dataclass
class LabelRecovery:
    """Does deleting the learned region of an adversarial image bring back the clean label?

    Shapes: N images, k = ``top_k``. All label tensors hold class indices.

    Attributes:
        clean_labels: ``(N,)`` top-1 class of each clean image.
        adversarial_labels: ``(N,)`` top-1 class of each adversarial image.
        masked_topk: ``(N, k)`` top-k classes of the masked adversarial images.
        adversarial_topk: ``(N, k)`` top-k classes of the adversarial images as they are.
        perturbed_topk: ``(N, k)`` top-k classes of the adversarial images
            perturbed everywhere (blurred, by default: a control, does the
            perturbation alone undo the attack?).
        attack_success: ``(N,)`` the attack changed the top-1 class.
    """

    clean_labels: torch.Tensor
    adversarial_labels: torch.Tensor
    masked_topk: torch.Tensor
    adversarial_topk: torch.Tensor
    perturbed_topk: torch.Tensor
    attack_success: torch.Tensor

    @staticmethod
    def _hits(topk: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        top1 = topk[:, 0] == labels
        topk_hit = (topk == labels[:, None]).any(1)
        return top1, topk_hit

    def rates(self, only_successful: bool = True) -> dict:
        """Fractions of images whose clean top-1 label is top-1 / in the top k.

        ``masked``: after applying the learned mask to the adversarial image (the
        paper's "mask + adversarial"); ``adversarial``: the adversarial image
        itself; ``perturbed``: the adversarial image perturbed (blurred) everywhere. With
        ``only_successful`` (default) only images whose attack changed the
        top-1 class count, as a failed attack recovers trivially.
        ``masked_still_adversarial``: the mask left the adversarial class on top.
        """
        keep = self.attack_success if only_successful else torch.ones_like(self.attack_success)
        n = int(keep.sum())
        out: dict = {"n": n, "k": int(self.masked_topk.shape[1])}
        for name, topk in (
            ("masked", self.masked_topk),
            ("adversarial", self.adversarial_topk),
            ("perturbed", self.perturbed_topk),
        ):
            t1, tk = self._hits(topk, self.clean_labels)
            out[f"{name}_top1"] = float(t1[keep].float().mean()) if n else math.nan
            out[f"{name}_topk"] = float(tk[keep].float().mean()) if n else math.nan
        still = self.masked_topk[:, 0] == self.adversarial_labels
        out["masked_still_adversarial"] = float(still[keep].float().mean()) if n else math.nan
        return out

    def to_dict(self) -> dict:
        return {
            "clean_labels": self.clean_labels.tolist(),
            "adversarial_labels": self.adversarial_labels.tolist(),
            "masked_topk": self.masked_topk.tolist(),
            "adversarial_topk": self.adversarial_topk.tolist(),
            "perturbed_topk": self.perturbed_topk.tolist(),
            "attack_success": self.attack_success.tolist(),
            "attack_success_rate": float(self.attack_success.float().mean()),
            "rates": self.rates(),
            "rates_all_images": self.rates(only_successful=False),
        }


def label_recovery(
    model,
    x_clean: torch.Tensor,
    x_adv: torch.Tensor,
    masks: torch.Tensor | Explanation,
    *,
    perturbation: str = "blur",
    sigma: float = 10.0,
    levels: int = 2,
    top_k: int = 5,
    batch_size: int | None = None,
) -> LabelRecovery:
    """Apply learned keep-masks to adversarial images and compare labels with the clean ones.

    Args:
        model: a :class:`LoadedModel` or a bare ``nn.Module``.
        x_clean, x_adv: ``(N, 3, H, W)`` normalised clean images and their twins.
        masks: keep-masks (1 = keep) learned on ``x_adv`` for its top-1 class:
            ``(N, 1, H, W)`` / ``(N, H, W)`` in [0, 1], or the ``perturbation``
            Explanation of ``x_adv`` (its ``extras["mask"]``, first target).
        perturbation, sigma, levels: the operator ``Φ(x_adv; m)`` (default the
            paper's blur with σ0 = 10 px, blended as the method's default).
        top_k: k of the top-k comparison (5 in the paper).
        batch_size: images per forward pass (default: memory-aware).

    Returns:
        A :class:`LabelRecovery`; ``.rates()`` gives the paper's numbers.
    """
    check_batch_size(batch_size)
    check_perturbation(perturbation)
    if isinstance(masks, Explanation):
        if "mask" not in masks.extras:
            raise ValueError(
                f"the {masks.method!r} explanation carries no learned mask (extras['mask'])"
            )
        masks = masks.extras["mask"][:, :1]
    model = LoadedModel.wrap(model)
    if x_clean.shape != x_adv.shape or x_clean.dim() != 4:
        raise ValueError(
            f"x_clean and x_adv must both be (N, 3, H, W), got {tuple(x_clean.shape)} "
            f"and {tuple(x_adv.shape)}"
        )
    if masks.dim() == 3:
        masks = masks.unsqueeze(1)
    n, _, h, w = x_adv.shape
    if masks.dim() != 4 or masks.shape[0] != n or masks.shape[1] != 1:
        raise ValueError(f"masks must be (N={n}, 1, H, W), got shape {tuple(masks.shape)}")
    masks = masks.detach().to(device=x_adv.device, dtype=x_adv.dtype)
    if tuple(masks.shape[-2:]) != (h, w):
        masks = F.interpolate(masks, size=(h, w), mode="bilinear", align_corners=False)
    masks = masks.clamp(0, 1)
    bs = int(batch_size or default_batch_size(x_adv))
    with preserved(model.net), torch.no_grad():
        net = model.net

        def logits(images: torch.Tensor) -> torch.Tensor:
            return torch.cat([net(images[i : i + bs]).float() for i in range(0, n, bs)])

        op = Perturbation(x_adv.detach(), perturbation, sigma=sigma, levels=levels)
        clean = logits(x_clean.detach())
        adv = logits(x_adv.detach())
        masked = logits(op(masks))
        whole = logits(op.fully_perturbed())
    k = min(int(top_k), clean.shape[1])
    clean_labels = clean.argmax(1).cpu()
    adv_labels = adv.argmax(1).cpu()
    return LabelRecovery(
        clean_labels=clean_labels,
        adversarial_labels=adv_labels,
        masked_topk=masked.topk(k, dim=1).indices.cpu(),
        adversarial_topk=adv.topk(k, dim=1).indices.cpu(),
        perturbed_topk=whole.topk(k, dim=1).indices.cpu(),
        attack_success=adv_labels != clean_labels,
    )


__all__ = [
    "CLASSIFIERS",
    "Detection",
    "LabelRecovery",
    "default_steps",
    "detection_accuracy",
    "ifgsm",
    "label_recovery",
    "map_features",
    "pair_folds",
    "to_pixels",
]
