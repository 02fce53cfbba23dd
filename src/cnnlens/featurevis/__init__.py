"""What units learn: filters, activation maps and activation maximisation.

``cl.featurevis.render(model, ["blocks.3:7", "logits:285"], steps=512, seed=0)``
renders one image per objective, all in one batch, and returns them as
``(N, 3, H, W)`` in [0, 1]. See docs/featurevis.md.
"""

from .activations import ActivationMaps, activation_maps, overview, overview_strip
from .filters import FilterBank, conv_layers, filter_bank, first_conv
from .grid import tile
from .objectives import (
    LOGITS,
    Activations,
    Objective,
    as_objective,
    channel,
    class_logit,
    class_prob,
    deepdream,
    direction,
    diversity,
    layer_objective,
    neuron,
)
from .params import ImageParam, dense, fourier, pixel
from .presets import PRESETS, preset_layer, stages
from .regularizers import blur, l1, total_variation
from .render import Dream, channel_means, dream, evaluate, render
from .transforms import Compose, Jitter, Pad, RandomRotate, RandomScale, standard

__all__ = [
    "LOGITS",
    "ActivationMaps",
    "Activations",
    "Compose",
    "Dream",
    "FilterBank",
    "ImageParam",
    "Jitter",
    "Objective",
    "PRESETS",
    "Pad",
    "RandomRotate",
    "RandomScale",
    "activation_maps",
    "as_objective",
    "blur",
    "channel",
    "channel_means",
    "class_logit",
    "class_prob",
    "conv_layers",
    "deepdream",
    "dense",
    "direction",
    "diversity",
    "dream",
    "evaluate",
    "filter_bank",
    "first_conv",
    "fourier",
    "l1",
    "layer_objective",
    "neuron",
    "overview",
    "overview_strip",
    "pixel",
    "preset_layer",
    "render",
    "stages",
    "standard",
    "tile",
    "total_variation",
]
