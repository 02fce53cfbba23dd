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

The three parts live in their own modules and are re-exported here:
:mod:`.attack` (the adversarial images, :func:`ifgsm`), :mod:`.detector` (the
classifiers and their cross-validation, :func:`detection_accuracy`) and
:mod:`.recovery` (:func:`label_recovery`).
"""

from __future__ import annotations

from .attack import default_steps, ifgsm, to_pixels
from .detector import CLASSIFIERS, Detection, detection_accuracy, map_features, pair_folds
from .recovery import LabelRecovery, label_recovery

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
