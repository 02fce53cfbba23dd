"""Meaningful perturbation (Fong & Vedaldi 2017) and extremal perturbations (Fong et al. 2019).

The methods, registered in :mod:`cnnlens.methods`:

* :mod:`.game`: the deletion and preservation games, method ``meaningful_perturbation``
  (alias ``perturbation``);
* :mod:`.extremal`: fixed-area extremal perturbations, method ``extremal``, with its
  smooth masks (:mod:`.smooth_mask`) and optimiser (:mod:`.extremal_optimiser`).

Both return a :class:`cnnlens.core.masks.MaskResult` (``MaskResult.of(expl)``):
keep-masks ``(N, T, A, H, W)``, edited images, scores and curves. What they share:
the operators ``Φ(x0; m)`` (blur, constant, noise), mask upsampling and the L1 / TV
regularisers (:mod:`.operators`) and the scoring of the edited images
(:mod:`.scoring`).

The paper's analyses, re-exported here as functions: :func:`interrogate` (box
interrogation, §5.1), :func:`deletion_boxes` / :func:`compare_deletion_boxes`
(smallest deleting box, §5.3: :mod:`.boxes`, engine :mod:`.box_engine`, results
:mod:`.box_results`), :func:`representativeness` (§5.2), :func:`region_test`
(region hypotheses, §5.4), and :func:`ifgsm`, :func:`detection_accuracy`,
:func:`label_recovery` (adversarial detection, §5.5: :mod:`.attack`,
:mod:`.detector`, :mod:`.recovery`). Editing with binary masks and reading the
scores, which they share, is :mod:`.editing`; box geometry is
:mod:`cnnlens.core.boxes`.
"""

from ..core.masks import MaskResult
from .adversarial import detection_accuracy, ifgsm, label_recovery
from .boxes import compare_deletion_boxes, deletion_boxes
from .interrogate import interrogate
from .operators import PERTURBATIONS, Perturbation, box_mask, l1, tv, upsample_mask
from .regions import region_test
from .representativeness import representativeness

__all__ = [
    "PERTURBATIONS",
    "MaskResult",
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
