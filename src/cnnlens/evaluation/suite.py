"""Benchmark suites: every method x every metric on data with known evidence.

A :class:`Suite` is a model plus images whose evidence is known: per image a
target class, a pixel mask and boxes of that class's objects, a "difficult"
flag, and optionally a held-out split (to choose localisation thresholds) and a
confounded model with images carrying its spurious cue. :func:`run_benchmark`
explains the test images with each method (cached per chunk, so an interrupted
run resumes, see :mod:`.maps`) and scores the maps with every metric that the
suite's data supports:

* pointing game (mean over classes, all images and the difficult ones);
* weak localisation error with value / energy / mean thresholding, the
  threshold chosen on the validation split;
* relevance mass and relevance rank accuracy;
* deletion and insertion AUC;
* smallest deleting box (area reaching 90% suppression);
* sanity check: Spearman correlation between the absolute maps of the model
  and of the model with its top k layers randomised, averaged over the
  cascade k = 1 .. L (low: the map depends on what the model learned);
* spurious cue: share of positive saliency on the cue, confounded model vs
  clean model, on images whose cue stands for another class than their object.
  By default (``cue_target="prediction"``) each model explains its own top-1
  class, as a user explains a deployed model's decisions: a model that took the
  shortcut says the cue's class and its map shows the cue, the clean model says
  the object's class and its map shows the object. ``cue_target="cue"`` asks
  both models about the cue's class instead ("what would make you say tank?");
  the clean model has no evidence for that class, and its map then spreads over
  whatever looks most like an object, the mark included, so the ratio is smaller.

Two baselines, ``centre`` and ``random``, get the same rows. Seconds per image
count the map computation only.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core import progress
from ..core.atomic import write_text_atomic
from ..models.base import LoadedModel
from ..perturbation.boxes import deletion_boxes
from .deletion import deletion_auc
from .localisation import KINDS, choose_alpha, weak_localisation
from .maps import BASELINES, MapStore, fingerprint
from .pointing import pointing_game
from .relevance import relevance_mass, relevance_rank_accuracy
from .spurious import spurious_cue_score

Box = tuple[int, int, int, int]
CUE_TARGETS = ("prediction", "cue")
EXAMPLES = 6  # test images shown in the HTML page


@dataclass
class Split:
    """Images with the evidence for one target class each.

    Attributes:
        name: ``"test"``, ``"val"``, ...
        x: ``(N, 3, H, W)`` inputs normalised for the model.
        targets: ``(N,)`` the class whose evidence ``masks`` marks.
        masks: ``(N, H, W)`` bool evidence pixels (object masks or boxes).
        boxes: per image, the ground-truth boxes of the target class.
        difficult: ``(N,)`` bool.
        cue: ``(N, H, W)`` bool spurious-cue pixels, or None.
        cue_class: ``(N,)`` the class the cue stands for (-1: no cue), or None.
    """

    name: str
    x: torch.Tensor
    targets: torch.Tensor
    masks: torch.Tensor
    boxes: list[list[Box]]
    difficult: torch.Tensor
    cue: torch.Tensor | None = None
    cue_class: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.x.shape[0]

    def head(self, n: int) -> Split:
        """The first ``n`` images."""
        cut = [None if v is None else v[:n] for v in (self.cue, self.cue_class)]
        return Split(
            self.name,
            self.x[:n],
            self.targets[:n],
            self.masks[:n],
            self.boxes[:n],
            self.difficult[:n],
            *cut,
        )


@dataclass
class Suite:
    """A model and the data to benchmark its explanations on.

    ``spurious`` is ``(confounded_model, split)``: images whose ``cue`` is the
    spurious cue's region; ``model`` serves as the clean reference on them.
    ``settings`` records how the suite was made (it goes into the report and
    into the cache fingerprint); ``params`` are method parameters suited to the
    data (e.g. an occlusion window for small images), overridden by the caller's.
    """

    name: str
    model: LoadedModel
    test: Split
    val: Split | None = None
    spurious: tuple[LoadedModel, Split] | None = None
    settings: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)  # default method parameters for this data


@dataclass
class BenchmarkResult:
    """One row of metrics per method (baselines included), plus the run's settings."""

    suite: str
    rows: list[dict]
    settings: dict
    seconds: float
    failures: list[dict] = field(default_factory=list)
    examples: dict = field(default_factory=dict)

    def row(self, method: str) -> dict:
        for r in self.rows:
            if r["method"] == method:
                return r
        raise KeyError(method)


def score_maps(
    model, split: Split, maps: torch.Tensor, *, deletion_step=None, box_sigma=None, batch_size=None
) -> dict:
    """Every map-vs-ground-truth and map-vs-model metric of one method on one split."""
    out: dict = {}
    pg = pointing_game(maps, split.masks, classes=split.targets, difficult=split.difficult)
    out["pointing"] = pg.mean_class_accuracy
    out["pointing_difficult"] = pg.difficult.mean_class_accuracy if pg.difficult else math.nan
    out["pointing_detail"] = pg.to_dict()
    out["relevance_mass"] = relevance_mass(maps, split.masks).mean
    out["rank_accuracy"] = relevance_rank_accuracy(maps, split.masks).mean
    x, t = split.x, split.targets
    for mode in ("deletion", "insertion"):
        res = deletion_auc(
            model,
            x,
            maps,
            t,
            mode=mode,
            substrate="blur",
            step=deletion_step,
            batch_size=batch_size,
        )
        out[f"{mode}_auc"] = res.mean
    sigma = box_sigma if box_sigma is not None else 10.0 * x.shape[-1] / 224
    boxes = deletion_boxes(
        model, x, maps[:, None], t.view(-1, 1), sigma=sigma, batch_size=batch_size
    )
    level = {round(s.level, 2): s for s in boxes.summary()}[0.9]
    out["box90"], out["box90_reached"] = level.mean_area, level.reached
    return out


def localisation_errors(maps_val, val: Split, maps_test, test: Split) -> dict:
    """Weak-localisation error on ``test`` per thresholding kind, α chosen on ``val``."""
    out = {}
    for kind in KINDS:
        choice = choose_alpha(maps_val, val.boxes, kind)
        res = weak_localisation(maps_test, test.boxes, choice.alpha, kind)
        out[kind] = {"error": res.error, "alpha": choice.alpha}
    return out


def _sanity(model, split: Split, method: str, params: dict) -> float:
    """Mean absolute-map Spearman correlation over the cascading randomisation steps.

    Each step randomises one more layer from the top; the mean over the steps
    (the area under Adebayo et al.'s cascade curve) is low for a map that
    depends on the learned weights. A map that becomes constant (Spearman
    undefined) shares no ranking with the original and counts as 0.
    """
    from .sanity import sanity_check

    res = sanity_check(model, split.x, method, split.targets, mode="cascading", **params)
    rho = torch.nan_to_num(torch.as_tensor(res.spearman_abs[1:]).double(), nan=0.0)
    return float(rho.mean())


def run_benchmark(
    suite: Suite,
    methods: Sequence[str],
    out_dir: str | Path,
    *,
    params: dict | None = None,
    chunk: int = 25,
    sanity_images: int = 8,
    deletion_step: int | None = None,
    seed: int = 0,
    baselines: bool = True,
    cue_target: str = "prediction",
) -> BenchmarkResult:
    """Explain ``suite.test`` with every method and score the maps; see the module docstring.

    Args:
        suite: the model and data (e.g. :func:`cnnlens.evaluation.planted_suite`).
        methods: registered method names.
        out_dir: where cached maps go (``out_dir/maps``); a rerun resumes from them.
        params: per-method keyword arguments, ``{"rise": {"masks": 1000}}``, on top of
            the suite's own defaults.
        chunk: images per attribution call and per cached file.
        sanity_images: test images used for the randomisation check (0 skips it).
        deletion_step: pixels per deletion/insertion step (default ``H W / 56``).
        seed: seed of stochastic methods and the random baseline.
        baselines: add the ``centre`` and ``random`` rows.
        cue_target: what the spurious-cue maps explain: ``"prediction"`` (each model's
            top-1 class) or ``"cue"`` (the class the cue stands for).

    A method that fails is recorded in ``failures`` and the others still run.
    """
    if cue_target not in CUE_TARGETS:
        raise ValueError(f"cue_target must be one of {', '.join(CUE_TARGETS)}, got {cue_target!r}")
    began = time.perf_counter()
    merged = {k: dict(v) for k, v in suite.params.items()}
    for k, v in (params or {}).items():
        merged.setdefault(k, {}).update(v)
    params = merged
    root = Path(out_dir) / "maps"
    tag = f"{suite.name}:{sorted(suite.settings.items())}"
    store = MapStore(root, suite.model, chunk=chunk, params=params, seed=seed, tag=tag)
    names = list(methods) + ([b for b in BASELINES if b not in methods] if baselines else [])
    rows, failures = [], []
    k = min(len(suite.test), EXAMPLES)
    examples = {
        "images": suite.model.display_images(suite.test.x[:k]).cpu(),
        "masks": suite.test.masks[:k].cpu(),
        "maps": {},
    }
    run = _Run(store, params, sanity_images, deletion_step, seed, tag, root, cue_target)
    with progress.task("methods", len(names)) as advance:
        for method in names:
            try:
                rows.append(_cached_row(suite, method, run, examples))
            except Exception as e:  # one failing method must not lose the others
                failures.append({"method": method, "error": f"{type(e).__name__}: {e}"})
            advance(1)
    settings = dict(
        suite.settings,
        methods=names,
        params=params,
        chunk=chunk,
        sanity_images=sanity_images,
        deletion_step=deletion_step,
        seed=seed,
        cue_target=cue_target,
    )
    return BenchmarkResult(
        suite.name, rows, settings, time.perf_counter() - began, failures, examples
    )


@dataclass
class _Run:
    """What every method's row of one benchmark run shares."""

    store: MapStore
    params: dict
    sanity_images: int
    deletion_step: int | None
    seed: int
    tag: str
    root: Path
    cue_target: str


def _cached_row(suite, method, run: _Run, examples) -> dict:
    """:func:`_method_row`, read back from ``root/rows`` when this run already scored it.

    Scores (deletion curves, sanity check, cue shares) take longer than loading the
    cached maps, so a resumed run keeps them too; the file name carries a fingerprint
    of everything the row depends on.
    """
    key = {
        "method": method,
        "params": run.store.method_params(method),
        "tag": run.tag,
        "seed": run.seed,
        "n": len(suite.test),
        "val": None if suite.val is None else len(suite.val),
        "sanity_images": run.sanity_images,
        "deletion_step": run.deletion_step,
        "cue_target": run.cue_target,
        "chunk": run.store.chunk,
    }
    path = run.root / "rows" / f"{method}-{fingerprint(key)}.json"
    if path.exists():
        row = json.loads(path.read_text())
        maps, _ = run.store.maps("test", method, suite.test.x, suite.test.targets)
        examples["maps"][method] = maps[:EXAMPLES].cpu().clone()
        return row
    row = _method_row(suite, method, run, examples)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(row))  # NaN (no cue images, ...) kept as NaN
    return row


def _method_row(suite, method, run: _Run, examples) -> dict:
    store, params = run.store, run.params
    test = suite.test
    maps, secs = store.maps("test", method, test.x, test.targets)
    examples["maps"][method] = maps[:EXAMPLES].cpu().clone()
    row = {"method": method, "seconds_per_image": secs, "n": len(test)}
    row.update(score_maps(suite.model, test, maps, deletion_step=run.deletion_step))
    if suite.val is not None:
        maps_val, _ = store.maps("val", method, suite.val.x, suite.val.targets)
        loc = localisation_errors(maps_val, suite.val, maps, test)
        row["localisation"] = loc
        for kind in KINDS:
            row[f"loc_{kind}"] = loc[kind]["error"]
    if method not in BASELINES and run.sanity_images > 0:
        own = dict(params.get(method, {}))
        row["sanity_rho"] = _sanity(suite.model, test.head(run.sanity_images), method, own)
    if suite.spurious is not None:
        row.update(_spurious(suite, method, run))
    return row


def _spurious(suite, method, run: _Run) -> dict:
    """Share of each model's evidence that lies on the cue (see the module docstring).

    Only images whose cue stands for another class than their object are used.
    """
    confounded, split = suite.spurious
    keep = (split.cue_class >= 0) & (split.cue_class != split.targets)
    x, cue = split.x[keep], split.cue[keep]
    shares, follows = {}, {}
    for key, model in (("clean", suite.model), ("confounded", confounded)):
        with torch.no_grad():
            predicted = model.net(x).argmax(1)
        follows[key] = float((predicted == split.cue_class[keep]).float().mean())
        target = split.cue_class[keep] if run.cue_target == "cue" else predicted
        store = MapStore(run.root, model, params=run.params, seed=run.seed, tag=f"{run.tag}:{key}")
        maps, _ = store.maps(f"cue-{key}", method, x, target)  # the targets key the cache
        shares[key] = spurious_cue_score(maps, cue).mean
    ratio = shares["confounded"] / shares["clean"] if shares["clean"] > 0 else math.nan
    return {
        "cue_clean": shares["clean"],
        "cue_confounded": shares["confounded"],
        "cue_ratio": ratio,
        "cue_images": int(keep.sum()),
        "cue_followed_clean": follows["clean"],
        "cue_followed_confounded": follows["confounded"],
    }


__all__ = [
    "CUE_TARGETS",
    "BenchmarkResult",
    "Split",
    "Suite",
    "localisation_errors",
    "run_benchmark",
    "score_maps",
]
