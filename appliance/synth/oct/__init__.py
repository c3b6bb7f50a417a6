"""Synthetic macular OCT volumes with ground truth (docs/synth/oct.md).

:class:`OctCase` / :func:`draw_oct_case` / :func:`render_oct` draw labelled volumes (layers,
foveal pit, speckle, vessel shadows, cysts, subretinal fluid, drusen, acquisition defects);
:func:`write_oct_dataset` writes them out as a dataset.
"""

from appliance.synth.oct.case import (
    CI_DME_CST_UM,
    GEOMETRIES,
    OCT_DEFECT_LEVELS,
    OCT_DEFECTS,
    OCT_PREVALENCE,
    OctCase,
    OctGeometry,
    anatomy_of,
    draw_oct_case,
    healthy_case,
    oct_quality_of,
)
from appliance.synth.oct.render import OctRendering, render_oct, render_oct_volume

__all__ = [
    "CI_DME_CST_UM",
    "GEOMETRIES",
    "OCT_DEFECTS",
    "OCT_DEFECT_LEVELS",
    "OCT_PREVALENCE",
    "OctCase",
    "OctGeometry",
    "OctRendering",
    "anatomy_of",
    "draw_oct_case",
    "healthy_case",
    "oct_quality_of",
    "render_oct",
    "render_oct_volume",
]
