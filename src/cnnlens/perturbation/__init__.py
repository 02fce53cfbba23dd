"""Meaningful perturbation (Fong & Vedaldi 2017) and extremal perturbations (Fong et al. 2019).

* :mod:`.operators`: the perturbations ``Φ(x0; m)`` (blur, constant, noise), mask
  upsampling and the L1 / TV regularisers;
* :mod:`.game`: the deletion and preservation games, registered as method ``perturbation``;
* :mod:`.extremal`: fixed-area extremal perturbations, registered as ``extremal``;
* the paper's analyses, re-exported here as functions: :func:`interrogate` (box
  interrogation, §5.1), :func:`deletion_boxes` / :func:`compare_deletion_boxes`
  (smallest deleting box, §5.3), :func:`representativeness` (§5.2),
  :func:`region_test` (region hypotheses, §5.4), and :func:`ifgsm`,
  :func:`detection_accuracy`, :func:`label_recovery` (adversarial detection, §5.5).
"""

from .adversarial import detection_accuracy, ifgsm, label_recovery
from .boxes import compare_deletion_boxes, deletion_boxes
from .interrogate import interrogate
from .operators import PERTURBATIONS, Perturbation, box_mask, l1, tv, upsample_mask
from .regions import region_test
from .representativeness import representativeness

__all__ = [
    "PERTURBATIONS",
    "Perturbation",
    "box_mask",
    "compare_deletion_boxes",
    "deletion_boxes",
    "detection_accuracy",
    "ifgsm",
    "interrogate",
    "l1",
    "label_recovery",
    "region_test",
    "representativeness",
    "tv",
    "upsample_mask",
]
