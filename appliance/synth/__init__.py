"""Synthetic fundus photographs and on-purpose defects, for tests and benchmarks."""

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
from appliance.synth.fundus import FundusLayout, fundus_layout, make_fundus, render_fundus

__all__ = [
    "DEGRADATIONS",
    "NOT_FUNDUS_KINDS",
    "FundusLayout",
    "defocus",
    "fundus_layout",
    "low_contrast",
    "make_fundus",
    "not_fundus",
    "off_center",
    "overexpose",
    "render_fundus",
    "underexpose",
    "uneven_illumination",
]
