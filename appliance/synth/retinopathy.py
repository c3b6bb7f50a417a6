"""Which lesions an eye of a given ICDR grade gets, and the grade that drawn lesions imply.

The International Clinical Diabetic Retinopathy (ICDR) scale, adapted to one 45-50 degree
field (the 4-2-1 rule was written for seven fields; the quadrants here are the four quarters
of the field about its centre, split by a vertical and a horizontal line):

* 0 no DR: no lesions at all.
* 1 mild NPDR: microaneurysms only.
* 2 moderate NPDR: more than microaneurysms (any dot/blot or flame haemorrhage, hard exudate,
  cotton-wool spot, or beading of one quadrant) but nothing of grades 3-4.
* 3 severe NPDR, any of the 4-2-1 rule: at least :data:`SEVERE_PER_QUADRANT` haemorrhages in
  each of the four quadrants, venous beading in two or more quadrants, or IRMA in any; and
  no sign of proliferation.
* 4 PDR: new vessels at the disc (NVD) or elsewhere (NVE), or preretinal or vitreous
  haemorrhage.

Diabetic macular oedema (DME) is flagged independently: hard exudates with their centre within
one disc diameter of the fovea. Exudates are themselves a moderate-NPDR sign, so DME needs
grade >= 2 here. Moderate eyes are planned with at most :data:`MODERATE_MAX_PER_QUADRANT`
haemorrhages per quadrant so they stay clearly below the severe count, and eyes without DME
keep every exudate at least :data:`DME_CLEAR_DD` from the fovea.

:func:`plan_findings` decides counts from the grade; :func:`icdr_grade` and :func:`has_dme`
recompute the labels from the lesions actually drawn (tests hold the two together).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from appliance.synth.layout import FundusLayout

LOGGER = logging.getLogger(__name__)

QUADRANTS = ("superotemporal", "superonasal", "inferonasal", "inferotemporal")
SEVERE_PER_QUADRANT = 8
MODERATE_MAX_PER_QUADRANT = 4
DME_RADIUS_DD = 1.0
DME_CLEAR_DD = 1.3
HAEMORRHAGE_KINDS = frozenset({"haemorrhage", "flame_haemorrhage"})
MODERATE_KINDS = HAEMORRHAGE_KINDS | {"hard_exudate", "cotton_wool_spot", "venous_beading"}
PROLIFERATIVE_KINDS = frozenset({"nvd", "nve", "preretinal_haemorrhage", "vitreous_haemorrhage"})


@dataclass(frozen=True)
class Lesion:
    """One drawn lesion (or one beaded quadrant, one IRMA tuft...), in image pixels."""

    kind: str
    x: float
    y: float
    size: float  # radius-like extent in pixels
    quadrant: str


@dataclass(frozen=True)
class Findings:
    """How many of each sign to draw; positions are chosen later."""

    microaneurysms: int = 0
    haemorrhages: tuple[int, int, int, int] = (0, 0, 0, 0)  # per quadrant, as QUADRANTS
    flame_fraction: float = 0.0
    exudate_clusters: int = 0  # away from the macula
    macular_exudates: bool = False  # DME
    cotton_wool_spots: int = 0
    beading_quadrants: int = 0
    irma_sites: int = 0
    nvd: bool = False
    nve_sites: int = 0
    preretinal: bool = False
    vitreous: bool = False


def quadrant_of(layout: FundusLayout, x: float, y: float) -> str:
    """The field quadrant of a point; nasal is towards the disc side of the field centre."""
    nasal = (x - layout.field_cx) * layout.nasal_sign > 0
    superior = y < layout.field_cy
    if superior:
        return "superonasal" if nasal else "superotemporal"
    return "inferonasal" if nasal else "inferotemporal"


def _moderate_haemorrhages(rng: np.random.Generator, at_least_one: bool) -> tuple[int, ...]:
    counts = [int(min(MODERATE_MAX_PER_QUADRANT, rng.poisson(1.0))) for _ in QUADRANTS]
    if at_least_one and sum(counts) == 0:
        counts[int(rng.integers(4))] = int(rng.integers(1, 3))
    return tuple(counts)


def _severe_features(rng: np.random.Generator, grade: int) -> tuple[bool, bool, bool]:
    """(haemorrhages in four quadrants, venous beading, IRMA); grade 3 needs one at least."""
    while True:
        if grade == 3:
            features = (rng.random() < 0.55, rng.random() < 0.45, rng.random() < 0.55)
        else:
            features = (rng.random() < 0.4, rng.random() < 0.3, rng.random() < 0.4)
        if grade == 4 or any(features):
            return features


def _proliferative(rng: np.random.Generator) -> tuple[bool, int, bool, bool]:
    """(NVD, NVE sites, preretinal haemorrhage, vitreous haemorrhage); one at least."""
    while True:
        nvd = bool(rng.random() < 0.55)
        nve = int(rng.integers(1, 3)) if rng.random() < 0.5 else 0
        preretinal = bool(rng.random() < 0.3)
        vitreous = bool(rng.random() < 0.15)
        if nvd or nve or preretinal or vitreous:
            return nvd, nve, preretinal, vitreous


def plan_findings(grade: int, dme: bool, rng: np.random.Generator) -> Findings:
    """Counts of each sign for an eye of ICDR ``grade`` with or without DME."""
    if grade not in range(5):
        raise ValueError(f"dr_grade must be 0..4, got {grade}")
    if dme and grade < 2:
        raise ValueError("DME is drawn as macular hard exudates, which need dr_grade >= 2")
    if grade == 0:
        return Findings()
    if grade == 1:
        return Findings(microaneurysms=int(1 + min(rng.poisson(3.0), 14)))
    mas = int(rng.integers(3, 12) if grade == 2 else rng.integers(6, 30))
    p_exudates, p_cws = (0.45, 0.35) if grade == 2 else (0.5, 0.5)
    exudates = int(rng.integers(1, 4)) if rng.random() < p_exudates else 0
    cws = int(rng.integers(1, 5)) if rng.random() < p_cws else 0
    flame_fraction = float(rng.uniform(0.1, 0.35))
    four_quadrants, beading, irma = (False, False, False)
    if grade >= 3:
        four_quadrants, beading, irma = _severe_features(rng, grade)
    if four_quadrants:
        top = SEVERE_PER_QUADRANT + 7
        counts = tuple(int(rng.integers(SEVERE_PER_QUADRANT, top)) for _ in QUADRANTS)
    else:
        other_sign = bool(exudates or dme or cws)
        counts = _moderate_haemorrhages(rng, grade > 2 or rng.random() < 0.8 or not other_sign)
    nvd, nve, preretinal, vitreous = _proliferative(rng) if grade == 4 else (False, 0, False, False)
    return Findings(
        microaneurysms=mas,
        haemorrhages=(counts[0], counts[1], counts[2], counts[3]),
        flame_fraction=flame_fraction,
        exudate_clusters=exudates,
        macular_exudates=dme,
        cotton_wool_spots=cws,
        beading_quadrants=int(rng.integers(2, 4)) if beading else 0,
        irma_sites=int(rng.integers(1, 4)) if irma else 0,
        nvd=nvd,
        nve_sites=nve,
        preretinal=preretinal,
        vitreous=vitreous,
    )


def icdr_grade(lesions: Iterable[Lesion]) -> int:
    """The ICDR grade (0-4) that these drawn lesions imply, by the rules in the docstring."""
    lesions = list(lesions)
    kinds = Counter(lesion.kind for lesion in lesions)
    if PROLIFERATIVE_KINDS & kinds.keys():
        return 4
    haem = Counter(lesion.quadrant for lesion in lesions if lesion.kind in HAEMORRHAGE_KINDS)
    beaded = {lesion.quadrant for lesion in lesions if lesion.kind == "venous_beading"}
    if all(haem[q] >= SEVERE_PER_QUADRANT for q in QUADRANTS) or len(beaded) >= 2 or kinds["irma"]:
        return 3
    if MODERATE_KINDS & kinds.keys():
        return 2
    return 1 if kinds["microaneurysm"] else 0


def has_dme(lesions: Iterable[Lesion], layout: FundusLayout) -> bool:
    """True when a hard exudate's centre lies within one disc diameter of the fovea."""
    limit = DME_RADIUS_DD * layout.disc_diameter
    return any(
        lesion.kind == "hard_exudate"
        and math.hypot(lesion.x - layout.fovea_cx, lesion.y - layout.fovea_cy) <= limit
        for lesion in lesions
    )
