"""Modality Worklist C-FIND SCU (what a fundus camera asks the RIS) and C-ECHO checks."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom import AE

from appliance.errors import ApplianceError
from appliance.tls import TlsClient, client_context

LOGGER = logging.getLogger(__name__)
MWL_FIND = "1.2.840.10008.5.1.4.31"
VERIFICATION = "1.2.840.10008.1.1"


class NodeUnreachable(ApplianceError):
    http_status = 502
    reason = "node_unreachable"


@dataclass(frozen=True)
class Node:
    host: str
    port: int
    ae_title: str
    calling_ae: str
    timeout: float = 10.0
    tls: TlsClient | None = None  # DICOM TLS, checking the node's certificate and host name


@dataclass(frozen=True)
class WorklistItem:
    patient_id: str
    patient_name: str
    birth_date: str
    sex: str
    issuer: str
    accession_number: str
    study_instance_uid: str
    requested_procedure_id: str
    step_id: str
    station_ae: str
    start_date: str
    start_time: str
    modality: str
    description: str
    request_attributes: list[dict[str, str]] = field(default_factory=list)


def _query(station_ae: str, date: str, modality: str) -> Dataset:
    ds = Dataset()
    for keyword in (
        "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
        "AccessionNumber", "RequestedProcedureID", "StudyInstanceUID",
    ):  # fmt: skip
        setattr(ds, keyword, "")
    step = Dataset()
    step.ScheduledStationAETitle = station_ae
    step.ScheduledProcedureStepStartDate = date
    step.ScheduledProcedureStepStartTime = ""
    step.Modality = modality
    step.ScheduledProcedureStepID = ""
    step.ScheduledProcedureStepDescription = ""
    ds.ScheduledProcedureStepSequence = Sequence([step])
    ds.RequestAttributesSequence = Sequence()
    return ds


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _item(ds: Dataset) -> WorklistItem:
    steps = ds.get("ScheduledProcedureStepSequence") or [Dataset()]
    step = steps[0]
    requests = [
        {
            "RequestedProcedureID": _text(item, "RequestedProcedureID"),
            "ScheduledProcedureStepID": _text(item, "ScheduledProcedureStepID"),
            "AccessionNumber": _text(item, "AccessionNumber"),
        }
        for item in ds.get("RequestAttributesSequence") or []
    ]
    return WorklistItem(
        patient_id=_text(ds, "PatientID"),
        patient_name=_text(ds, "PatientName"),
        birth_date=_text(ds, "PatientBirthDate"),
        sex=_text(ds, "PatientSex"),
        issuer=_text(ds, "IssuerOfPatientID"),
        accession_number=_text(ds, "AccessionNumber"),
        study_instance_uid=_text(ds, "StudyInstanceUID"),
        requested_procedure_id=_text(ds, "RequestedProcedureID"),
        step_id=_text(step, "ScheduledProcedureStepID"),
        station_ae=_text(step, "ScheduledStationAETitle"),
        start_date=_text(step, "ScheduledProcedureStepStartDate"),
        start_time=_text(step, "ScheduledProcedureStepStartTime"),
        modality=_text(step, "Modality"),
        description=_text(step, "ScheduledProcedureStepDescription"),
        request_attributes=requests,
    )


def _associate(node: Node, contexts: list[str]) -> Any:
    ae = AE(ae_title=node.calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = node.timeout
    for context in contexts:
        ae.add_requested_context(context)
    try:
        tls = client_context(node.tls) if node.tls is not None else None
        assoc = ae.associate(
            node.host,
            node.port,
            ae_title=node.ae_title,
            tls_args=(tls, node.host) if tls is not None else None,
        )
    except Exception as exc:
        raise NodeUnreachable(
            f"cannot reach {node.ae_title} at {node.host}:{node.port}: {exc}"
        ) from None
    if not assoc.is_established:
        why = "rejected the association" if assoc.is_rejected else "did not answer"
        if tls is not None and tls.failure:
            why = tls.failure
        raise NodeUnreachable(f"{node.ae_title} at {node.host}:{node.port}: {why}")
    return assoc


def query_worklist(
    node: Node, *, station_ae: str, date: str, modality: str = "OP"
) -> list[WorklistItem]:
    """Today's (``date``) scheduled steps for this station; raises NodeUnreachable."""
    assoc = _associate(node, [MWL_FIND])
    items: list[WorklistItem] = []
    try:
        for status, identifier in assoc.send_c_find(_query(station_ae, date, modality), MWL_FIND):
            if status is None or not len(status):
                raise NodeUnreachable(f"{node.ae_title} stopped answering the worklist query")
            if status.Status in (0xFF00, 0xFF01) and identifier is not None:
                items.append(_item(identifier))
            elif status.Status not in (0x0000, 0xFF00, 0xFF01):
                raise NodeUnreachable(
                    f"{node.ae_title} refused the worklist query (0x{status.Status:04X})"
                )
    finally:
        if assoc.is_established:
            assoc.release()
    return items


def echo(node: Node) -> int:
    """C-ECHO; returns the status (0 is success); raises NodeUnreachable."""
    assoc = _associate(node, [VERIFICATION])
    try:
        status = assoc.send_c_echo()
    finally:
        if assoc.is_established:
            assoc.release()
    if status is None or not len(status):
        raise NodeUnreachable(f"{node.ae_title} did not answer the C-ECHO")
    return int(status.Status)
