"""Synthetic fundus photographs and on-purpose defects, for tests, benchmarks and training data.

Two levels: :func:`make_fundus` draws a plain healthy eye (the quality gate is calibrated on
it, with the defects in :data:`DEGRADATIONS`); :class:`Case` / :func:`draw_case` /
:func:`render_case` draw labelled screening photographs with diabetic retinopathy, macular
oedema, glaucomatous discs, camera profiles and acquisition defects, and
:func:`write_dataset` writes them out as a dataset (docs/synth/README.md).
"""

from appliance.synth.camera import CAMERAS, CameraProfile
from appliance.synth.case import PREVALENCE, Case, Rendering, draw_case, render_case, render_layers
from appliance.synth.dataset import write_dataset
from appliance.synth.degrade import (
    DEGRADATIONS,
    NOT_FUNDUS_KINDS,
    defocus,
    low_contrast,
    not_fundus,
    off_center,
    overexpose,
    underexpose,
    uneven_illumination,
)
from appliance.synth.fundus import make_fundus, render_fundus
from appliance.synth.gradability import DEFECT_LEVELS, quality_of
from appliance.synth.layout import FundusLayout, fundus_layout
from appliance.synth.lesions import LESION_KINDS

__all__ = [
    "CAMERAS",
    "DEFECT_LEVELS",
    "DEGRADATIONS",
    "LESION_KINDS",
    "NOT_FUNDUS_KINDS",
    "PREVALENCE",
    "CameraProfile",
    "Case",
    "FundusLayout",
    "Rendering",
    "defocus",
    "draw_case",
    "fundus_layout",
    "low_contrast",
    "make_fundus",
    "not_fundus",
    "off_center",
    "overexpose",
    "quality_of",
    "render_case",
    "render_fundus",
    "render_layers",
    "underexpose",
    "uneven_illumination",
    "write_dataset",
]
