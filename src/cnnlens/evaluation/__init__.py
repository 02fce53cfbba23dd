"""Metrics that say how far an explanation can be trusted.

Each metric is a function over one batch and an accumulator class with
``update(...)`` / ``compute()`` / ``reset()`` for streaming a dataset; the
function is the accumulator run on a single batch. Maps may come from any
registered method (an :class:`~cnnlens.Explanation` with one target per image)
or from elsewhere (an ``(N, H, W)`` tensor). Results carry their counts and
a ``to_dict()`` for reports.

* :mod:`.pointing`: the pointing game (Zhang et al. 2016);
* :mod:`.localisation`: weak localisation by thresholded boxes (Fong & Vedaldi 2017);
* :mod:`.relevance`: relevance mass and rank accuracy (Arras et al. 2022);
* :mod:`.deletion`: deletion and insertion curves (Petsiuk et al. 2018);
* :mod:`.sanity`: parameter-randomisation sanity checks (Adebayo et al. 2018);
* :mod:`.spurious`: share of saliency on a spurious cue;
* :mod:`.baselines`: centre and random maps, the rows every table needs;
* :mod:`.suite`, :mod:`.sources`, :mod:`.maps`, :mod:`.tables`: the benchmark
  runner (every method x every metric, resumable), its data (planted, VOC,
  COCO) and its Markdown / JSON / HTML output.
"""

from .baselines import centre_map, random_map
from .common import MeanScore
from .deletion import DeletionAUC, DeletionResult, deletion_auc, insertion_auc
from .localisation import (
    AlphaChoice,
    AlphaSearch,
    LocalisationResult,
    WeakLocalisation,
    choose_alpha,
    weak_localisation,
)
from .pointing import PointingGame, PointingResult, pointing_game
from .relevance import (
    RelevanceMass,
    RelevanceRankAccuracy,
    relevance_mass,
    relevance_rank_accuracy,
)
from .sanity import SanityCheck, SanityResult, sanity_check
from .similarity import spearman, ssim
from .sources import coco_suite, planted_suite, voc_suite
from .spurious import SpuriousCueScore, spurious_cue_score
from .suite import BenchmarkResult, Split, Suite, run_benchmark, score_maps
from .tables import write_outputs

__all__ = [
    "AlphaChoice",
    "BenchmarkResult",
    "Split",
    "Suite",
    "coco_suite",
    "planted_suite",
    "run_benchmark",
    "score_maps",
    "voc_suite",
    "write_outputs",
    "AlphaSearch",
    "DeletionAUC",
    "DeletionResult",
    "LocalisationResult",
    "MeanScore",
    "PointingGame",
    "PointingResult",
    "RelevanceMass",
    "RelevanceRankAccuracy",
    "SanityCheck",
    "SanityResult",
    "SpuriousCueScore",
    "WeakLocalisation",
    "centre_map",
    "choose_alpha",
    "deletion_auc",
    "insertion_auc",
    "pointing_game",
    "random_map",
    "relevance_mass",
    "relevance_rank_accuracy",
    "sanity_check",
    "spearman",
    "spurious_cue_score",
    "ssim",
    "weak_localisation",
]
