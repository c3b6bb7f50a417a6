"""The AI screening result as a TID 1500 Comprehensive 3D SR (IHE AI Results style).

One measurement group per eye: source images are that eye's OP instances; qualitative
evaluations carry DR severity (LOINC, answer list LL2117-1), referable DR, DME, gradability and
glaucoma suspect; the cup-to-disc ratio is a NUM with unit "no units". The visit outcome (and,
once signed, the clinician's decision and comment) sits in TID 1500's Qualitative Evaluations
container.

A clinician's sign-off is a new instance (VERIFIED, FINAL) whose Predecessor Documents Sequence
names the preliminary one: Verifying Observer = the clinician, who is also a person observer
next to the device in the observation context. An eye whose DR grade the clinician changed
carries the clinician's grade (and referable flag) and no Algorithm Identification, and its
tracking identifier says so; the model stays named in Contributing Equipment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.uid import OphthalmicTomographyImageStorage as OPT_SOP_CLASS

from appliance.dicom import codes
from appliance.dicom.op import derived_uid, new_uid
from appliance.dicom.sr_oct import OctReport, eye_of, oct_group, unanalysed_oct_group

MANUFACTURER = "Demonstration"
_EYE_NAMES = {"R": "right eye", "L": "left eye"}

# Outcome and review concepts (private scheme 99RETSCR, declared with the others).
PERSON = hd.sr.CodedConcept("121006", "DCM", "Person")
QUALITATIVE_EVALUATIONS = hd.sr.CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")
COMMENT = hd.sr.CodedConcept("121106", "DCM", "Comment")
SCREENING_OUTCOME = hd.sr.CodedConcept("RS010", codes.PRIVATE_SCHEME, "Screening outcome")
OUTCOMES = {
    "refer": hd.sr.CodedConcept("RS011", codes.PRIVATE_SCHEME, "Refer to eye care professional"),
    "rescreen": hd.sr.CodedConcept("RS012", codes.PRIVATE_SCHEME, "Rescreen at routine interval"),
    "retake": hd.sr.CodedConcept("RS013", codes.PRIVATE_SCHEME, "Retake photographs"),
    "glaucoma_refer": hd.sr.CodedConcept(
        "RS014", codes.PRIVATE_SCHEME, "Refer for glaucoma assessment"
    ),
    "human_grading": hd.sr.CodedConcept("RS018", codes.PRIVATE_SCHEME, "Human grading required"),
}
CLINICIAN_REVIEW = hd.sr.CodedConcept("RS015", codes.PRIVATE_SCHEME, "Clinician review")
DECISIONS = {
    "accept": hd.sr.CodedConcept("RS016", codes.PRIVATE_SCHEME, "Automated result accepted"),
    "override": hd.sr.CodedConcept("RS017", codes.PRIVATE_SCHEME, "Automated result overridden"),
}


def device_observer_uid(uid_root: str, device: Mapping[str, str]) -> str:
    """This appliance's Device Observer UID: derived from its identity (manufacturer, model,
    serial number) under the site's UID root, so every SR the same device makes names the
    same observer, across documents and restarts."""
    identity = (device.get("manufacturer") or MANUFACTURER, device.get("model") or "")
    return derived_uid(uid_root, "device observer", *identity, device.get("serial") or "")


def _algorithm(models: Sequence[Mapping[str, Any]]) -> hd.sr.AlgorithmIdentification | None:
    if not models:
        return None
    name = " + ".join(str(m["name"]) for m in models)
    version = " + ".join(str(m.get("version", "")) for m in models)
    return hd.sr.AlgorithmIdentification(
        name=name[:64], version=version[:64], family=codes.ARTIFICIAL_INTELLIGENCE
    )


def _eye_group(
    eye: str,
    findings: Mapping[str, Any],
    images: Sequence[Dataset],
    algorithm: hd.sr.AlgorithmIdentification | None,
    uid_root: str,
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    evaluations: list[hd.sr.QualitativeEvaluation] = []
    grade = findings.get("dr_grade")
    if grade is not None:
        if not 0 <= int(grade) < len(codes.DR_GRADES):
            raise ValueError(f"dr_grade must be 0-4, got {grade!r}")
        evaluations.append(
            hd.sr.QualitativeEvaluation(codes.DR_SEVERITY[eye], codes.DR_GRADES[int(grade)])
        )
    for key, concept in (
        ("referable", codes.REFERABLE_DR),
        ("dme", codes.DME),
        ("glaucoma_suspect", codes.GLAUCOMA_SUSPECT),
    ):
        if findings.get(key) is not None:
            evaluations.append(
                hd.sr.QualitativeEvaluation(concept, codes.yes_no(bool(findings[key])))
            )
    if findings.get("gradable") is not None:
        value = codes.GRADABLE if findings["gradable"] else codes.UNGRADABLE
        evaluations.append(hd.sr.QualitativeEvaluation(codes.GRADABILITY, value))

    measurements: list[hd.sr.Measurement] = []
    if findings.get("cdr") is not None:
        measurements.append(
            hd.sr.Measurement(
                name=codes.CUP_DISC_RATIO[eye],
                value=round(float(findings["cdr"]), 3),
                unit=codes.NO_UNITS,
            )
        )
    overridden = bool(findings.get("overridden"))
    label = f"Retinal screening, {_EYE_NAMES[eye]}"
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=new_uid(uid_root),
            identifier=f"{label}, DR grade set by clinician" if overridden else label,
        ),
        algorithm_id=None if overridden else algorithm,
        finding_sites=[hd.sr.FindingSite(codes.RETINA, laterality=codes.LATERALITY[eye])],
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(i) for i in images],
        qualitative_evaluations=evaluations or None,
        measurements=measurements or None,
    )


def _requested_procedures(image: Dataset) -> list[Dataset]:
    """Referenced Request Sequence items from the images' worklist step (Request Attributes)."""
    out = []
    for request in getattr(image, "RequestAttributesSequence", None) or []:
        item = Dataset()
        item.StudyInstanceUID = image.StudyInstanceUID
        item.ReferencedStudySequence = []  # Type 2: the study is the one this SR belongs to
        item.AccessionNumber = request.get("AccessionNumber", image.get("AccessionNumber", ""))
        item.RequestedProcedureID = request.get("RequestedProcedureID", "")
        item.RequestedProcedureDescription = request.get("RequestedProcedureDescription", "")
        item.RequestedProcedureCodeSequence = []
        item.PlacerOrderNumberImagingServiceRequest = ""
        item.FillerOrderNumberImagingServiceRequest = ""
        out.append(item)
    return out


def _contributing_equipment(
    models: Sequence[Mapping[str, Any]], device: Mapping[str, str]
) -> list[hd.ContributingEquipment]:
    equipment = []
    for model in models:
        variant = f" ({model['variant']})" if model.get("variant") else ""
        sha = f"; sha256 {model['sha256']}" if model.get("sha256") else ""
        equipment.append(
            hd.ContributingEquipment(
                manufacturer=device.get("manufacturer") or MANUFACTURER,
                purpose_of_reference=codes.PROCESSING_EQUIPMENT,
                manufacturer_model_name=str(model["name"])[:64],
                software_versions=str(model.get("version") or "unknown")[:64],
                device_serial_number=device.get("serial") or None,
                contribution_description=(
                    f"AI model {model['name']} {model.get('version', '')}{variant}{sha}"
                )[:64],
            )
        )
    return equipment


def _evaluations(
    outcome: str | None, decision: str | None, comment: str
) -> hd.sr.ContainerContentItem | None:
    """TID 1500 Qualitative Evaluations: the visit outcome, the clinician's decision, comment."""
    items: list[Any] = []
    if outcome is not None:
        items.extend(hd.sr.QualitativeEvaluation(SCREENING_OUTCOME, OUTCOMES[outcome]))
    if decision is not None:
        items.extend(hd.sr.QualitativeEvaluation(CLINICIAN_REVIEW, DECISIONS[decision]))
    if comment:
        items.append(hd.sr.TextContentItem(COMMENT, comment, relationship_type="CONTAINS"))
    if not items:
        return None
    container = hd.sr.ContainerContentItem(QUALITATIVE_EVALUATIONS, relationship_type="CONTAINS")
    container.ContentSequence = hd.sr.ContentSequence(items)
    return container


def _dicom_datetime(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%S.%f+0000")


def _images_of(eye: str, findings: Mapping[str, Any], images: Sequence[Dataset]) -> list[Dataset]:
    """The source images of one eye's group: those the outcome counted for it when named (a
    person's eye decision included), else those whose ImageLaterality says so."""
    counted = findings.get("sop_instance_uids")
    if counted is not None:
        return [ds for ds in images if str(ds.SOPInstanceUID) in set(counted)]
    return [ds for ds in images if getattr(ds, "ImageLaterality", None) == eye]


def _check_codes(
    outcome: str | None, decision: str | None, findings_by_eye: Mapping[str, Any]
) -> None:
    if outcome is not None and outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {sorted(OUTCOMES)} or None, got {outcome!r}")
    if decision is not None and decision not in DECISIONS:
        raise ValueError(f"decision must be 'accept' or 'override', got {decision!r}")
    unknown = set(findings_by_eye) - {"R", "L"}
    if unknown:
        raise ValueError(f"findings_by_eye keys must be 'R' or 'L', got {sorted(unknown)}")


def _groups(
    images: Sequence[Dataset],
    findings_by_eye: Mapping[str, Any],
    algorithm: hd.sr.AlgorithmIdentification | None,
    oct: Sequence[OctReport],
    uid_root: str,
) -> list[hd.sr.MeasurementsAndQualitativeEvaluations]:
    """Right eye, then left: the photographs' group, then each OCT volume's; last, each OCT
    volume among ``images`` that no group carries ("not analysed")."""
    groups = []
    covered: set[str] = set()
    for eye in ("R", "L"):
        if eye in findings_by_eye:
            eye_images = _images_of(eye, findings_by_eye[eye], images)
            covered.update(str(ds.SOPInstanceUID) for ds in eye_images)
            groups.append(_eye_group(eye, findings_by_eye[eye], eye_images, algorithm, uid_root))
        groups.extend(oct_group(r, new_uid(uid_root)) for r in oct if eye_of(r) == eye)
    groups.extend(
        unanalysed_oct_group(ds, new_uid(uid_root))
        for ds in images
        if str(ds.get("SOPClassUID", "")) == OPT_SOP_CLASS and str(ds.SOPInstanceUID) not in covered
    )
    return groups


def screening_sr(
    *,
    images: list[Dataset],
    findings_by_eye: dict[str, dict[str, Any]],
    models: list[dict[str, Any]],
    device: dict[str, str],
    series_instance_uid: str,
    sop_instance_uid: str,
    uid_root: str,
    outcome: str | None = None,
    verified_by: str | None = None,
    verified_at: datetime | None = None,
    decision: str | None = None,
    comment: str = "",
    predecessor: Dataset | Sequence[Dataset] | None = None,
    verifying_organization: str = "Screening service",
    instance_number: int = 1,
    oct: Sequence[OctReport] = (),
) -> Dataset:
    """Build the screening result SR for one visit (see module docstring).

    ``images`` are the OP source instances (both eyes); ``findings_by_eye`` maps "R"/"L" to
    ``dr_grade``, ``referable``, ``dme``, ``cdr``, ``gradable``, ``glaucoma_suspect`` (each may
    be None) and optionally ``overridden`` (the clinician set this eye's DR grade) and
    ``sop_instance_uids`` (the photographs counted for this eye, e.g. after a person decided a
    photograph's eye; without it, ``images`` are grouped by ImageLaterality). ``outcome``
    is the visit outcome code (refer, rescreen, retake, glaucoma_refer, human_grading) or None.

    ``verified_by`` (a DICOM person name) makes the document VERIFIED at ``verified_at`` (now
    if None); ``decision`` ("accept" / "override") and ``comment`` record the clinician's
    review; pass the earlier SR(s) it replaces as ``predecessor`` (None when there was none).

    ``oct``: one ``OctReport`` per measured OCT volume (its ``OctFinding`` and OPT header); each
    adds a measurement group after that eye's photograph group (``sr_oct``), and its OPT joins
    the evidence. Without it the SR is exactly the photographs' one. A visit with OCT only may
    pass no ``images``.
    """
    previous = [predecessor] if isinstance(predecessor, Dataset) else list(predecessor or [])
    if not images and not oct:
        raise ValueError("screening_sr needs at least one source image")
    if verified_by is None and (previous or decision is not None or comment):
        raise ValueError("a predecessor, decision or comment belongs to a verified re-issue only")
    _check_codes(outcome, decision, findings_by_eye)
    groups = _groups(images, findings_by_eye, _algorithm(models), oct, uid_root)
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(device, verified_by, verifying_organization),
        procedure_reported=codes.RETINAL_SCREENING,
        imaging_measurements=groups,
    )
    evaluations = _evaluations(outcome, decision, comment)
    if evaluations is not None:
        report[0].ContentSequence.append(evaluations)
    evidence = [*images, *(r.source for r in oct)]
    first = evidence[0]
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report[0],
        series_instance_uid=series_instance_uid,
        series_number=900,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        manufacturer=device.get("manufacturer") or MANUFACTURER,
        is_complete=True,
        is_final=verified_by is not None,
        is_verified=verified_by is not None,
        verifying_observer_name=verified_by,
        verifying_organization=verifying_organization if verified_by else None,
        previous_versions=previous or None,
        requested_procedures=_requested_procedures(first) or None,
        contributing_equipment=_contributing_equipment(models, device) or None,
    )
    if verified_by is not None:
        moment = verified_at or datetime.now(UTC)
        sr.VerifyingObserverSequence[0].VerificationDateTime = _dicom_datetime(moment)
    _describe(sr, first, models, device)
    return sr


def _observation_context(
    device: dict[str, str], verified_by: str | None, organization: str
) -> hd.sr.ObservationContext:
    """The device as observer, and the verifying clinician when there is one."""
    observer = hd.sr.ObserverContext(
        observer_type=codes.DEVICE,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device["uid"],
            name=device.get("name") or None,
            manufacturer_name=device.get("manufacturer") or None,
            model_name=device.get("model") or None,
            serial_number=device.get("serial") or None,
        ),
    )
    person = None
    if verified_by is not None:
        person = hd.sr.ObserverContext(
            observer_type=PERSON,
            observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
                name=verified_by, organization_name=organization
            ),
        )
    return hd.sr.ObservationContext(
        observer_person_context=person, observer_device_context=observer
    )


def _describe(
    sr: Dataset, first: Dataset, models: list[dict[str, Any]], device: dict[str, str]
) -> None:
    """Series description, device and software versions, coding schemes, the study's
    accession number, ID and character set (from the first source image)."""
    sr.SeriesDescription = "AI retinal screening result"
    sr.ManufacturerModelName = device.get("model") or ""
    if device.get("serial"):
        sr.DeviceSerialNumber = device["serial"]
    if models:
        versions = [str(m.get("version") or "unknown") for m in models]
        sr.add_new(0x00181020, "LO", versions)  # Software Versions
    sr.CodingSchemeIdentificationSequence = [codes.coding_scheme_item()]
    sr.AccessionNumber = getattr(first, "AccessionNumber", "")
    sr.StudyID = getattr(first, "StudyID", "")
    if "SpecificCharacterSet" in first:
        sr.SpecificCharacterSet = first.SpecificCharacterSet
