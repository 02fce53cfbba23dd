"""SIAM on the synthetic scenicness scenes, end to end (the acceptance run).

:func:`fit_scenic` draws the scenes (:mod:`cnnlens.datasets.scenic`), computes the
frozen trunk features once, trains the head on attribute presence and the score
together (Marcos, Lobry & Tuia 2019, arXiv 1909.08442), and grades it on the test
split with :func:`~cnnlens.siam.evaluate.evaluate_scenic`: R^2, presence AUC, the
attribute pointing game and the recovery of the true coefficients.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..datasets.scenic import ATTRIBUTES, ScenicSpec, scenic
from .data import scenes_to_data
from .evaluate import SiamScores, evaluate_scenic
from .model import SiamConfig, SiamModel
from .train import SiamData, TrainSettings, extract_features, train


@dataclass
class ScenicRun:
    """A trained model, its test scores, its history and where the time went."""

    model: SiamModel
    scores: SiamScores
    history: list[dict[str, float]]
    seconds: dict[str, float] = field(default_factory=dict)


def cached(model: SiamModel, data: SiamData) -> SiamData:
    """The same samples with images replaced by frozen trunk features."""
    if not data.are_images:
        return data
    return SiamData(extract_features(model, data.inputs), data.attributes, data.target)


def fit_scenic(
    n_train: int = 1500,
    n_test: int = 500,
    *,
    spec: ScenicSpec | None = None,
    config: SiamConfig | None = None,
    settings: TrainSettings | None = None,
    checkpoint=None,
    resume: bool = False,
    callback=None,
) -> ScenicRun:
    """Train a SIAM model on synthetic scenes and grade it on the test split.

    Args:
        n_train, n_test: scenes in the train and test splits.
        spec: scene generator parameters (its ``size`` must match the config's).
        config: model configuration (default: all attributes, bundled backbone).
        settings: training settings (default frozen backbone, cached features).
        checkpoint, resume, callback: passed to :func:`~cnnlens.siam.train.train`.
    """
    config = config or SiamConfig(attributes=list(ATTRIBUTES))
    spec = spec or ScenicSpec(size=config.size)
    if spec.size != config.size:
        raise ValueError(f"scenes of {spec.size} px for a model of {config.size} px")
    settings = settings or TrainSettings()
    seconds = {}
    t = time.perf_counter()
    train_scenes, test_scenes = scenic(n_train, "train", spec), scenic(n_test, "test", spec)
    seconds["data"] = time.perf_counter() - t
    model = SiamModel(config)
    t = time.perf_counter()
    train_data, test_data = scenes_to_data(train_scenes), scenes_to_data(test_scenes)
    if settings.freeze:
        train_data, test_data = cached(model, train_data), cached(model, test_data)
    seconds["features"] = time.perf_counter() - t
    t = time.perf_counter()
    history = train(
        model, train_data, settings, checkpoint=checkpoint, resume=resume, callback=callback
    )
    seconds["train"] = time.perf_counter() - t
    t = time.perf_counter()
    scores = evaluate_scenic(model, test_data, test_scenes, spec.noise)
    seconds["evaluate"] = time.perf_counter() - t
    return ScenicRun(model, scores, history, seconds)
