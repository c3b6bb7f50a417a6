"""Typed builders for every kind of audit event the appliance writes.

One function a kind: it fixes the DICOM event ID, type and action, names the user, and spells
the ``detail`` keys, so the keys that are read back (monitoring reads ``capture_id`` of the
receive events with ``json_extract``) are names in one place. Builders only build: the caller
records the event in its own transaction (``AuditTrail.record``) or on its own (``log``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from appliance.audit.codes import Action, EventID, EventType, Outcome
from appliance.audit.trail import AuditEvent

# detail keys read back from the trail
CAPTURE_ID = "capture_id"  # receive events (action C): monitoring's sender per capture

SYSTEM = "system"
PIPELINE = "system:pipeline"
OUTBOX = "system:outbox"
RETENTION = "system:retention"


# -- the appliance itself -------------------------------------------------------------------------
def application_activity(event_type: EventType, *, ae_title: str, version: str) -> AuditEvent:
    """The application started or stopped (110100)."""
    return AuditEvent(
        event_id=EventID.APPLICATION_ACTIVITY,
        event_type=str(event_type),
        action=Action.EXECUTE,
        user_id=SYSTEM,
        ae_title=ae_title,
        detail={"version": version},
    )


def security_alert(
    detail: Mapping[str, Any],
    *,
    user_id: str = SYSTEM,
    outcome: Outcome = Outcome.SERIOUS_FAILURE,
    action: Action = Action.EXECUTE,
    ae_title: str = "",
    address: str = "",
) -> AuditEvent:
    """Something security-relevant was refused or found (110113); ``detail`` says what."""
    return AuditEvent(
        event_id=EventID.SECURITY_ALERT,
        action=action,
        user_id=user_id,
        outcome=outcome,
        ae_title=ae_title,
        source_address=address,
        detail=dict(detail),
    )


def model_integrity(message: str) -> AuditEvent:
    """A model file whose hash does not match its card was refused."""
    return security_alert({"alert": "model_integrity", "message": message})


def configuration_changed(
    actor: str, change: str, detail: Mapping[str, Any], *, address: str = ""
) -> AuditEvent:
    """Users, roles or settings changed (110113, Software Configuration)."""
    return AuditEvent(
        event_id=EventID.SECURITY_ALERT,
        event_type=str(EventType.SOFTWARE_CONFIGURATION),
        action=Action.UPDATE,
        user_id=actor,
        source_address=address,
        detail={"change": change, **detail},
    )


def authentication(
    event_type: EventType,
    user_id: str,
    *,
    address: str,
    detail: Mapping[str, Any],
    outcome: Outcome = Outcome.SUCCESS,
) -> AuditEvent:
    """A login, failed login or logout (110114)."""
    return AuditEvent(
        event_id=EventID.USER_AUTHENTICATION,
        event_type=str(event_type),
        action=Action.EXECUTE,
        outcome=outcome,
        user_id=user_id,
        source_address=address,
        detail=dict(detail),
    )


# -- people at the web console --------------------------------------------------------------------
def access_denied(user_id: str, *, address: str, path: str, why: str) -> AuditEvent:
    return security_alert(
        {"alert": "access_denied", "path": path, "why": why},
        user_id=user_id,
        outcome=Outcome.MINOR_FAILURE,
        action=Action.READ,
        address=address,
    )


def viewed(
    event_id: EventID,
    user_id: str,
    *,
    address: str,
    what: str,
    path: str,
    patient_id: str = "",
    study_instance_uid: str = "",
    sop_instance_uids: Iterable[str] = (),
    detail: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """A person was shown PHI (110103) or the audit log (110101)."""
    return AuditEvent(
        event_id=event_id,
        action=Action.READ,
        user_id=user_id,
        source_address=address,
        patient_id=patient_id,
        study_instance_uid=study_instance_uid,
        sop_instance_uids=tuple(sop_instance_uids),
        detail={"view": what, "path": path, **(detail or {})},
    )


def worklist_query(
    user_id: str, *, ae_title: str, address: str, detail: Mapping[str, Any], outcome: Outcome
) -> AuditEvent:
    """The station asked the worklist (110112)."""
    return AuditEvent(
        event_id=EventID.QUERY,
        action=Action.EXECUTE,
        user_id=user_id,
        outcome=outcome,
        ae_title=ae_title,
        source_address=address,
        detail=dict(detail),
    )


def station_selection(
    action: Action,
    user_id: str,
    *,
    address: str,
    patient_id: str,
    study_instance_uid: str,
    detail: Mapping[str, Any],
) -> AuditEvent:
    """A patient chosen (C) at the station, or their visit finished (U)."""
    return AuditEvent(
        event_id=EventID.INSTANCES_ACCESSED,
        action=action,
        user_id=user_id,
        source_address=address,
        patient_id=patient_id,
        study_instance_uid=study_instance_uid,
        detail=dict(detail),
    )


def review_signed(
    user_id: str,
    *,
    address: str,
    patient_id: str,
    study_instance_uid: str,
    sop_instance_uids: Sequence[str],
    detail: Mapping[str, Any],
) -> AuditEvent:
    """A clinician's sign-off and the VERIFIED SR it issued."""
    return AuditEvent(
        event_id=EventID.INSTANCES_ACCESSED,
        action=Action.CREATE,
        user_id=user_id,
        source_address=address,
        patient_id=patient_id,
        study_instance_uid=study_instance_uid,
        sop_instance_uids=tuple(sop_instance_uids),
        detail={"stage": "review", **detail},
    )


def c_echo(
    user_id: str, *, address: str, ae_title: str, node: str, ok: bool, words: str
) -> AuditEvent:
    """An admin's C-ECHO of a configured node."""
    return AuditEvent(
        event_id=EventID.APPLICATION_ACTIVITY,
        action=Action.EXECUTE,
        user_id=user_id,
        outcome=Outcome.SUCCESS if ok else Outcome.MINOR_FAILURE,
        source_address=address,
        ae_title=ae_title,
        detail={"admin_action": "c_echo", "node": node, "result": words},
    )


def dead_letters_requeued(
    user_id: str, *, count: int, destination: str | None, address: str = ""
) -> AuditEvent:
    """Dead-lettered outbox jobs queued again (admin console or ``outbox retry``)."""
    return AuditEvent(
        event_id=EventID.INSTANCES_TRANSFERRED,
        action=Action.UPDATE,
        user_id=user_id,
        source_address=address,
        detail={"requeued_dead_letters": count, "destination": destination or "all"},
    )


def documents_retried(
    user_id: str, *, address: str, count: int, document: int | None
) -> AuditEvent:
    """Dead-lettered result documents made due again."""
    return AuditEvent(
        event_id=EventID.INSTANCES_ACCESSED,
        action=Action.UPDATE,
        user_id=user_id,
        source_address=address,
        detail={
            "stage": "documents",
            "retried_dead_documents": count,
            "document": "all" if document is None else document,
        },
    )


def camera_qualification(by: str, detail: Mapping[str, Any], *, ok: bool = True) -> AuditEvent:
    """A camera model qualified, refused or revoked."""
    return AuditEvent(
        event_id=EventID.APPLICATION_ACTIVITY,
        action=Action.UPDATE,
        user_id=by,
        outcome=Outcome.SUCCESS if ok else Outcome.MINOR_FAILURE,
        detail=dict(detail),
    )


# -- photographs in -------------------------------------------------------------------------------
def received(
    event_id: EventID,
    user_id: str,
    *,
    capture_id: int,
    ae_title: str,
    address: str,
    patient_id: str,
    study_instance_uid: str,
    sop_instance_uids: Sequence[str],
    detail: Mapping[str, Any],
) -> AuditEvent:
    """A photograph received (or received again): action C with its ``capture_id``."""
    return AuditEvent(
        event_id=event_id,
        action=Action.CREATE,
        user_id=user_id,
        outcome=Outcome.SUCCESS,
        ae_title=ae_title,
        source_address=address,
        patient_id=patient_id,
        study_instance_uid=study_instance_uid,
        sop_instance_uids=list(sop_instance_uids),
        detail={CAPTURE_ID: capture_id, **detail},
    )


def refused(
    event_id: EventID,
    user_id: str,
    *,
    outcome: Outcome,
    ae_title: str,
    address: str,
    patient_id: str = "",
    study_instance_uid: str = "",
    sop_instance_uids: Sequence[str] = (),
    detail: Mapping[str, Any],
) -> AuditEvent:
    """A photograph refused at ingest (the refusal's reason and message in ``detail``)."""
    return AuditEvent(
        event_id=event_id,
        action=Action.CREATE,
        user_id=user_id,
        outcome=outcome,
        ae_title=ae_title,
        source_address=address,
        patient_id=patient_id,
        study_instance_uid=study_instance_uid,
        sop_instance_uids=list(sop_instance_uids),
        detail=dict(detail),
    )


def identity_conflict(
    user_id: str,
    *,
    ae_title: str,
    address: str,
    patient_id: str,
    capture_id: int,
    fields: list[str],
) -> AuditEvent:
    """A known Patient ID came with another name, birth date or sex."""
    return AuditEvent(
        event_id=EventID.SECURITY_ALERT,
        action=Action.CREATE,
        user_id=user_id,
        outcome=Outcome.MINOR_FAILURE,
        ae_title=ae_title,
        source_address=address,
        patient_id=patient_id,
        detail={
            "alert": "identity_conflict",
            CAPTURE_ID: capture_id,
            "fields": fields,
            "note": "filed under the patient already held; check the identity",
        },
    )


def hotfolder_notice(
    user_id: str, event_id: EventID, outcome: Outcome, detail: Mapping[str, Any]
) -> AuditEvent:
    """Something odd in the camera's export folder (a link, a FIFO, a file it cannot move)."""
    return AuditEvent(
        event_id=event_id,
        action=Action.EXECUTE,
        user_id=user_id,
        outcome=outcome,
        detail=dict(detail),
    )


# -- the pipeline ---------------------------------------------------------------------------------
def pipeline_step(
    row: Mapping[str, Any], outcome: Outcome, detail: Mapping[str, Any]
) -> AuditEvent:
    """A step of the worker on one capture (analysis, outcome, documents, decode failure)."""
    return AuditEvent(
        event_id=EventID.INSTANCES_ACCESSED,
        action=Action.EXECUTE,
        user_id=PIPELINE,
        outcome=outcome,
        patient_id=row["patient_identifier"] or "",
        study_instance_uid=row["study_instance_uid"] or "",
        sop_instance_uids=[row["sop_instance_uid"]] if row["sop_instance_uid"] else [],
        detail={CAPTURE_ID: row["id"], **detail},
    )


# -- objects out, and deleted ---------------------------------------------------------------------
def transferred(
    *,
    outcome: Outcome,
    ae_title: str,
    address: str,
    study_instance_uid: str,
    sop_instance_uids: Sequence[str],
    detail: Mapping[str, Any],
) -> AuditEvent:
    """An archive's answer to a send or a storage commitment request (110104)."""
    return AuditEvent(
        event_id=EventID.INSTANCES_TRANSFERRED,
        action=Action.READ,
        user_id=OUTBOX,
        outcome=outcome,
        ae_title=ae_title,
        source_address=address,
        study_instance_uid=study_instance_uid,
        sop_instance_uids=list(sop_instance_uids),
        detail=dict(detail),
    )


def deleted(
    user_id: str,
    detail: Mapping[str, Any],
    *,
    patient_id: str = "",
    study_instance_uid: str = "",
    sop_instance_uids: Sequence[str] = (),
) -> AuditEvent:
    """Stored files deleted (110105): retention, or the hot folder's old processed copies."""
    return AuditEvent(
        event_id=EventID.STUDY_DELETED,
        action=Action.DELETE,
        user_id=user_id,
        patient_id=patient_id,
        study_instance_uid=study_instance_uid,
        sop_instance_uids=list(sop_instance_uids) if sop_instance_uids else (),
        detail=dict(detail),
    )
