"""What a visit is, said once: its key, the captures it covers (as SQL), the stored record of
one analysed photograph, and the row of a DICOM object made for the visit.

A capture belongs to its study's visit; a capture without a study to its patient's visit that
UTC day; a capture with neither is a visit of its own. The key names that grouping
(``study:<pk>``, ``patient:<pk>:<YYYY-MM-DD>``, ``capture:<id>``) and ``scope`` turns a key
back into the same SQL condition on ``captures c`` the worker groups by.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from appliance.errors import ApplianceError

# The captures of a patient's visit on one UTC day (no study of their own).
PATIENT_DAY = "c.study_pk IS NULL AND c.patient_pk = ? AND substr(c.received_at, 1, 10) = ?"


class VisitNotFound(ApplianceError):
    http_status = 404
    reason = "visit_not_found"


@dataclass(frozen=True)
class Scope:
    """A visit and its captures: ``where`` is an SQL condition on ``captures c``."""

    key: str
    where: str
    params: tuple[Any, ...]


def visit_key(row: Mapping[str, Any]) -> str:
    """A capture row's visit: ``study:<pk>``, ``patient:<pk>:<UTC day>`` or ``capture:<id>``."""
    if row["study_pk"] is not None:
        return f"study:{row['study_pk']}"
    if row["patient_pk"] is not None:
        return f"patient:{row['patient_pk']}:{row['received_at'][:10]}"
    return f"capture:{row['id']}"


def scope_of(row: Mapping[str, Any]) -> Scope:
    """The visit a capture row belongs to: its study, else its patient that day, else itself."""
    key = visit_key(row)
    if row["study_pk"] is not None:
        return Scope(key, "c.study_pk = ?", (row["study_pk"],))
    if row["patient_pk"] is not None:
        return Scope(key, PATIENT_DAY, (row["patient_pk"], row["received_at"][:10]))
    return Scope(key, "c.id = ?", (row["id"],))


def scope(key: str) -> Scope:
    """The captures of the visit ``key`` names; VisitNotFound for a key that names none."""
    kind, _, rest = key.partition(":")
    try:
        if kind == "study":
            return Scope(key, "c.study_pk = ?", (int(rest),))
        if kind == "patient":
            patient, _, day = rest.partition(":")
            if len(day) == 10:
                return Scope(key, PATIENT_DAY, (int(patient), day))
        if kind == "capture":
            return Scope(key, "c.id = ?", (int(rest),))
    except ValueError:
        pass
    raise VisitNotFound("There is no such visit.")


@dataclass(frozen=True)
class ImageRecord:
    """What the worker stored for one analysed photograph (``results.payload``, kind
    ``screening``): the screening status and models, the quality verdict, the eye, the finding,
    the heatmap's blob path. ``data`` is the whole record as stored."""

    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, payload: str | None) -> ImageRecord:
        return cls(json.loads(payload) if payload else {})

    @property
    def laterality(self) -> str | None:
        return self.data.get("laterality")

    @property
    def laterality_source(self) -> str | None:
        return self.data.get("laterality_source")

    @property
    def laterality_mismatch(self) -> bool:
        return bool(self.data.get("laterality_mismatch"))

    @property
    def field(self) -> str | None:
        return self.data.get("field")

    @property
    def gradable(self) -> bool | None:
        return self.data.get("gradable")

    @property
    def heatmap(self) -> str | None:
        """The blob path of the heatmap PNG, when the DR model made one."""
        return self.data.get("heatmap") or None

    @property
    def quality(self) -> dict[str, Any]:
        return self.data.get("quality") or {}

    @property
    def finding(self) -> dict[str, Any] | None:
        return self.data.get("finding")

    @property
    def finding_laterality(self) -> str | None:
        return (self.finding or {}).get("laterality")

    @property
    def models(self) -> list[dict[str, Any]]:
        return list(self.data.get("models") or [])

    @property
    def human_grading(self) -> tuple[str, ...]:
        return tuple(self.data.get("human_grading") or ())

    @property
    def oct(self) -> OctRecord | None:
        """The OCT part of the record, for an Ophthalmic Tomography capture."""
        data = self.data.get("oct")
        return OctRecord(data) if isinstance(data, dict) else None


@dataclass(frozen=True)
class OctRecord:
    """What the worker stored for one OCT volume (``ImageRecord.oct``): the ``OctFinding`` as a
    dict (None when the volume was not analysed), the spacing, and the blob paths of the
    thickness map (``.npy``, float32 µm, frames x measured A-scans, spaced ``map_spacing_mm``)
    and the central B-scan as received (PNG, plain and with the ILM / RPE drawn), every
    B-scan's boundaries and fluid (``.npz``, newer records only). The source
    OPT object is the capture's own file."""

    data: dict[str, Any] = field(default_factory=dict)

    @property
    def finding(self) -> dict[str, Any] | None:
        return self.data.get("finding")

    @property
    def spacing_mm(self) -> tuple[float, float, float] | None:
        """(between B-scans, axial, lateral) in mm."""
        value = self.data.get("spacing_mm")
        return (float(value[0]), float(value[1]), float(value[2])) if value else None

    @property
    def shape(self) -> tuple[int, int, int] | None:
        """(frames, rows, A-scans) of the volume."""
        value = self.data.get("shape")
        return (int(value[0]), int(value[1]), int(value[2])) if value else None

    @property
    def central_frame(self) -> int | None:
        return self.data.get("central_frame")

    @property
    def map_spacing_mm(self) -> tuple[float, float] | None:
        """(between B-scans, between A-scans) of the thickness map, in mm: the volume is
        measured binned to at most 256 A-scans (inference/oct/prepare.py)."""
        value = self.data.get("map_spacing_mm")
        return (float(value[0]), float(value[1])) if value else None

    @property
    def thickness_map(self) -> str | None:
        return self.data.get("thickness_map") or None

    @property
    def bscan(self) -> str | None:
        return self.data.get("bscan") or None

    @property
    def bscan_layers(self) -> str | None:
        return self.data.get("bscan_layers") or None

    @property
    def layers(self) -> str | None:
        """Every B-scan's boundaries and fluid (``.npz``, pipeline/oct.py ``OctLayers``);
        None for records stored before they were kept."""
        return self.data.get("layers") or None


@dataclass(frozen=True)
class DerivedObject:
    """A DICOM object the appliance made (OP, SC, SR, PDF): one ``derived_objects`` row."""

    kind: str
    capture_pk: int | None
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    file_path: str
    created_at: str
    references_json: str = "[]"

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> DerivedObject:
        """From a builder's row (``visit_key`` there, if any, is ignored: the caller's counts)."""
        return cls(
            kind=row["kind"],
            capture_pk=row["capture_pk"],
            sop_class_uid=row["sop_class_uid"],
            sop_instance_uid=row["sop_instance_uid"],
            series_instance_uid=row["series_instance_uid"],
            study_instance_uid=row["study_instance_uid"],
            file_path=row["file_path"],
            created_at=row["created_at"],
            references_json=row.get("references_json") or "[]",
        )

    def row(self, visit_key: str) -> dict[str, Any]:
        return {
            "capture_pk": self.capture_pk,
            "visit_key": visit_key,
            "kind": self.kind,
            "sop_class_uid": self.sop_class_uid,
            "sop_instance_uid": self.sop_instance_uid,
            "series_instance_uid": self.series_instance_uid,
            "study_instance_uid": self.study_instance_uid,
            "file_path": self.file_path,
            "references_json": self.references_json,
            "created_at": self.created_at,
        }
