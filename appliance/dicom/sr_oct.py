"""The OCT part of the screening SR: one TID 1501 measurement group per measured macular volume.

Each group names the OPT instance it was measured on as its source image, the retina and the
eye as finding site, and holds (when measured) the ETDRS grid as NUMs with LOINC "Macular grid"
codes in micrometres (UCUM ``um``): central subfield thickness (57109-1) and the eight inner /
outer subfields (57110-9 … 57117-4); the macular volume within the 6 mm disc (57118-2, ``mm3``);
fluid as probabilities (local codes, unit "no units"), fluid volume (``mm3``) and, when the
outcome decided it, fluid in the central subfield (Yes / No); the OCT signal strength (``dB``);
and the volume's gradability (the same local concept as the photographs). What the finding
lacks (None or NaN: not measured, e.g. a volume not gradable) is left out. Measurements come
from the demonstration classical baseline, not clinically validated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import highdicom as hd
from pydicom.dataset import Dataset

from appliance.dicom import codes
from appliance.domain import ETDRS_SUBFIELDS, OctFinding

_EYE_NAMES = {"R": "right eye", "L": "left eye"}


@dataclass(frozen=True)
class OctReport:
    """One measured OCT volume for the SR: its finding, the OPT it was measured on (the header
    is enough: SOP Class / Instance, Series and Study UIDs), and, when the outcome decided it,
    whether there is fluid in the central subfield and the eye's centre-involving DME answer
    (the rules', or the signing clinician's)."""

    finding: OctFinding
    source: Dataset
    fluid_centre: bool | None = None
    ci_dme: bool | None = None
    algorithm_name: str = "oct-measure (classical baseline)"
    algorithm_version: str = ""


def eye_of(report: OctReport) -> str:
    """The report's eye: the finding's laterality, else the OPT's ImageLaterality."""
    eye = report.finding.laterality or report.source.get("ImageLaterality")
    if eye not in ("R", "L"):
        raise ValueError(f"an OCT report needs its eye (R or L), got {eye!r}")
    return str(eye)


def _num(name: hd.sr.CodedConcept, value: float, unit: hd.sr.CodedConcept) -> hd.sr.Measurement:
    return hd.sr.Measurement(name=name, value=round(float(value), 3), unit=unit)


def _known(value: float | None) -> bool:
    """Measured: not None and not NaN (a subfield outside the scan may come as NaN)."""
    return value is not None and math.isfinite(float(value))


def _measurements(finding: OctFinding) -> list[hd.sr.Measurement]:
    out: list[hd.sr.Measurement] = []
    subfields = dict(finding.subfield_um)
    if finding.cst_um is not None:
        subfields["central"] = finding.cst_um
    for name in ETDRS_SUBFIELDS:
        value = subfields.get(name)
        if value is not None and _known(value):
            out.append(_num(codes.MACULAR_THICKNESS[name], value, codes.MICROMETER))
    for concept, value, unit in (
        (codes.MACULAR_VOLUME, finding.macular_volume_mm3, codes.CUBIC_MILLIMETER),
        (codes.FLUID_CENTRE_PROBABILITY, finding.p_fluid_centre, codes.NO_UNITS),
        (codes.FLUID_ANY_PROBABILITY, finding.p_fluid_any, codes.NO_UNITS),
        (codes.FLUID_VOLUME, finding.fluid_volume_mm3, codes.CUBIC_MILLIMETER),
        (codes.OCT_SIGNAL, finding.signal_db, codes.DECIBEL),
    ):
        if value is not None and _known(value):
            out.append(_num(concept, value, unit))
    return out


def oct_group(report: OctReport, uid: str) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """The TID 1501 group of one OCT volume; ``uid``: its tracking UID."""
    eye = eye_of(report)
    finding = report.finding
    evaluations = [
        hd.sr.QualitativeEvaluation(
            codes.GRADABILITY, codes.GRADABLE if finding.gradable else codes.UNGRADABLE
        )
    ]
    if report.fluid_centre is not None:
        evaluations.append(
            hd.sr.QualitativeEvaluation(codes.FLUID_CENTRE, codes.yes_no(report.fluid_centre))
        )
    if report.ci_dme is not None:
        evaluations.append(hd.sr.QualitativeEvaluation(codes.CI_DME, codes.yes_no(report.ci_dme)))
    algorithm = hd.sr.AlgorithmIdentification(
        name=report.algorithm_name[:64],
        version=(report.algorithm_version or "unknown")[:64],
    )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=uid, identifier=f"Macular OCT, {_EYE_NAMES[eye]}"
        ),
        algorithm_id=algorithm,
        finding_sites=[hd.sr.FindingSite(codes.RETINA, laterality=codes.LATERALITY[eye])],
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(report.source)],
        qualitative_evaluations=evaluations,
        measurements=_measurements(finding) or None,
    )


def unanalysed_oct_group(source: Dataset, uid: str) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """The TID 1501 group of an OCT volume the SR carries no measurement of (it could not be
    measured, or was not counted for an eye): the OPT as source, the retina (with the eye its
    header names, if any) as finding site, and gradability "Not analysed", so the archive's
    SR names every volume of the visit, and a visit whose only image is such a volume still
    gets one."""
    eye = str(source.get("ImageLaterality") or "").strip().upper()
    site = (
        hd.sr.FindingSite(codes.RETINA, laterality=codes.LATERALITY[eye])
        if eye in codes.LATERALITY
        else hd.sr.FindingSite(codes.RETINA)
    )
    name = _EYE_NAMES.get(eye, "eye not known")
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=uid, identifier=f"Macular OCT, {name}, not analysed"
        ),
        finding_sites=[site],
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(codes.GRADABILITY, codes.NOT_ANALYSED)
        ],
    )
