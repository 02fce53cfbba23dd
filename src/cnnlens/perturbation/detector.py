"""Telling adversarial images from clean ones by their saliency maps (Fong & Vedaldi 2017, §5.5).

Generate an adversarial twin (:mod:`.attack`) of every image, explain the top
predicted class of the clean image and of its twin with a saliency method,
and train a classifier to tell the two kinds of map apart. Held-out accuracy
says how much a method's maps reveal that an input was attacked (0.5 is
chance). The paper trains an AlexNet on 4000 pairs and tests on 1000; its
learned masks reach 93.6 %, well above the other methods it compares.

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

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..core.explanation import Explanation
from ..core.maps import one_per_image

CLASSIFIERS = ("cnn", "logistic")


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
    """Run tiny models on one intra-op thread; torch's (process-wide) setting is restored after.

    Their ops are far too small to split: on 2 loaded cores the CNN trained
    about 9x faster with one thread (6.5 against 59 ms per epoch, measured).
    The setting is put back in ``finally``, also when training fails.
    """
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
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
    clean, adv = (one_per_image(m, what, finite=False).unsqueeze(1).cpu()
                  for m, what in ((maps_clean, "maps_clean"), (maps_adv, "maps_adv")))
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


__all__ = ["CLASSIFIERS", "Detection", "detection_accuracy", "map_features", "pair_folds"]
