"""Interpretable by design: SIAM models (Semantically Interpretable Activation Maps).

Marcos, Lobry & Tuia, "Semantically Interpretable Activation Maps: what-where-how
explanations within CNNs", ICCV workshops 2019, arXiv 1909.08442. A backbone feeds
``K`` non-negative attribute maps (one per predefined attribute: water, grass, ...),
each pooled and combined linearly into the output, so every prediction is exactly
``bias + sum_k contribution_k`` and each contribution comes with its map.

* :mod:`.head`: :class:`SiamConfig`, :class:`SiamHead`, :class:`SiamOutput`, the maths;
* :mod:`.model`: :class:`Trunk` and :class:`SiamModel` (trunk + head);
* :mod:`.train`: multi-task training, feature caching, checkpoints and resume;
* :mod:`.data`: image folder + CSV loader for real attribute datasets;
* :mod:`.evaluate`: R^2, presence AUC, attribute pointing game, weight recovery;
* :mod:`.explain`, :mod:`.page`: the exact decomposition and its HTML view;
* :mod:`.scenic`: the end-to-end run on synthetic scenes with ground truth.
"""

from .data import CsvData, read_csv, scenes_to_data
from .evaluate import SiamScores, attribute_pointing, evaluate_scenic, predict, r2_score
from .explain import SiamExplanation, SumCheck, explain
from .head import SiamConfig, SiamHead, SiamOutput
from .model import SiamModel, Trunk, build
from .page import curve_png, render_explanation, write_explanation
from .scenic import ScenicRun, fit_scenic
from .train import (
    SiamData,
    TrainSettings,
    extract_features,
    load_checkpoint,
    save_checkpoint,
    train,
)

__all__ = [
    "CsvData",
    "ScenicRun",
    "SiamConfig",
    "SiamData",
    "SiamExplanation",
    "SiamHead",
    "SiamModel",
    "SiamOutput",
    "SiamScores",
    "SumCheck",
    "TrainSettings",
    "Trunk",
    "attribute_pointing",
    "build",
    "curve_png",
    "evaluate_scenic",
    "explain",
    "extract_features",
    "fit_scenic",
    "load_checkpoint",
    "predict",
    "r2_score",
    "read_csv",
    "render_explanation",
    "save_checkpoint",
    "scenes_to_data",
    "train",
    "write_explanation",
]
