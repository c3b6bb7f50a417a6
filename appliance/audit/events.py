"""Typed builders for every kind of audit event the appliance writes.

One function a kind: it fixes the DICOM event ID, type and action and spells the ``detail``
keys, so the keys that are read back (monitoring reads ``capture_id`` of the receive events
with ``json_extract``) are names in one place. ``Who`` says who acted and from where, ``About``
whose data the event concerns. Builders only build: the caller records the event in its own
transaction (``AuditTrail.record``) or on its own (``AuditTrail.log``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from appliance.audit.codes import Action, EventID, EventType, Outcome
from appliance.audit.trail import AuditEvent

# detail keys read back from the trail
CAPTURE_ID = "capture_id"  # receive events (action C): monitoring's sender per capture

SYSTEM = "system"
PIPELINE = "system:pipeline"
OUTBOX = "system:outbox"
RETENTION = "system:retention"


@dataclass(frozen=True)
class Who:
    """Who acted: a user name, ``system…``, ``cli:<user>`` or ``ae:<AE title>``; from where."""

    user_id: str
    address: str = ""
    ae_title: str = ""


@dataclass(frozen=True)
class About:
    """Whose data an event concerns."""

    patient_id: str = ""
    study_instance_uid: str = ""
    sop_instance_uids: Iterable[str] = ()


NOBODY = About()


def _event(
    event_id: EventID,
    action: Action,
    who: Who,
    detail: Mapping[str, Any],
    *,
    about: About = NOBODY,
    outcome: Outcome = Outcome.SUCCESS,
    event_type: EventType | None = None,
) -> AuditEvent:
    return AuditEvent(
        event_id=event_id,
        action=action,
        user_id=who.user_id,
        outcome=outcome,
        event_type=str(event_type) if event_type is not None else "",
        ae_title=who.ae_title,
        source_address=who.address,
        patient_id=about.patient_id,
        study_instance_uid=about.study_instance_uid,
        sop_instance_uids=list(about.sop_instance_uids),
        detail=dict(detail),
    )


# -- the appliance itself -------------------------------------------------------------------------
def application_activity(event_type: EventType, *, ae_title: str, version: str) -> AuditEvent:
    """The application started or stopped (110100)."""
    who = Who(SYSTEM, ae_title=ae_title)
    detail = {"version": version}
    return _event(EventID.APPLICATION_ACTIVITY, Action.EXECUTE, who, detail, event_type=event_type)


def security_alert(
    detail: Mapping[str, Any],
    who: Who = Who(SYSTEM),
    *,
    outcome: Outcome = Outcome.SERIOUS_FAILURE,
    action: Action = Action.EXECUTE,
) -> AuditEvent:
    """Something security-relevant was refused or found (110113); ``detail`` says what."""
    return _event(EventID.SECURITY_ALERT, action, who, detail, outcome=outcome)


def model_integrity(message: str) -> AuditEvent:
    """A model file whose hash does not match its card was refused."""
    return security_alert({"alert": "model_integrity", "message": message})


def configuration_changed(who: Who, change: str, detail: Mapping[str, Any]) -> AuditEvent:
    """Users, roles or settings changed (110113, Software Configuration)."""
    return _event(
        EventID.SECURITY_ALERT,
        Action.UPDATE,
        who,
        {"change": change, **detail},
        event_type=EventType.SOFTWARE_CONFIGURATION,
    )


def setting_changed(who: Who, *, setting: str, old: str, new: str) -> AuditEvent:
    """One setting changed in the saved settings file (applies at the next start): its name and
    its old and new value as the console shows them (a secret's value masked)."""
    detail = {"setting": setting, "old": old, "new": new, "restart_required": True}
    return configuration_changed(who, "setting_changed", detail)


def authentication(
    event_type: EventType, who: Who, detail: Mapping[str, Any], outcome: Outcome = Outcome.SUCCESS
) -> AuditEvent:
    """A login, failed login or logout (110114)."""
    return _event(
        EventID.USER_AUTHENTICATION,
        Action.EXECUTE,
        who,
        detail,
        outcome=outcome,
        event_type=event_type,
    )


# -- people at the web console --------------------------------------------------------------------
def access_denied(who: Who, *, path: str, why: str) -> AuditEvent:
    """A page refused to a user whose role may not open it."""
    detail = {"alert": "access_denied", "path": path, "why": why}
    return security_alert(detail, who, outcome=Outcome.MINOR_FAILURE, action=Action.READ)


def viewed(
    event_id: EventID,
    who: Who,
    about: About,
    *,
    what: str,
    path: str,
    detail: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """A person was shown PHI (110103) or the audit log (110101)."""
    shown = {"view": what, "path": path, **(detail or {})}
    return _event(event_id, Action.READ, who, shown, about=about)


def worklist_query(who: Who, detail: Mapping[str, Any], outcome: Outcome) -> AuditEvent:
    """The station asked the worklist (110112)."""
    return _event(EventID.QUERY, Action.EXECUTE, who, detail, outcome=outcome)


def patient_query(who: Who, detail: Mapping[str, Any]) -> AuditEvent:
    """A person searched the stored patients and visits (110112): ``detail`` names the
    ``query``, the number of ``matches`` and the ``patients`` found (their IDs)."""
    return _event(EventID.QUERY, Action.EXECUTE, who, {"query_kind": "patient_search", **detail})


def station_selection(
    action: Action, who: Who, about: About, detail: Mapping[str, Any]
) -> AuditEvent:
    """A patient chosen (C) at the station, or their visit finished (U)."""
    return _event(EventID.INSTANCES_ACCESSED, action, who, detail, about=about)


def review_signed(who: Who, about: About, detail: Mapping[str, Any]) -> AuditEvent:
    """A clinician's electronic signature (password re-entered) and the VERIFIED SR and signed
    PDF it issued: ``detail`` names the meaning, the signer's printed name and credentials."""
    signed = {"stage": "review", **detail}
    return _event(EventID.INSTANCES_ACCESSED, Action.CREATE, who, signed, about=about)


def signature_refused(who: Who, detail: Mapping[str, Any]) -> AuditEvent:
    """A signature refused: the password re-entered to sign was wrong (counted toward the
    lockout), or the account was locked or disabled (110114, minor failure)."""
    refused = {"purpose": "signature", **detail}
    return authentication(EventType.LOGIN, who, refused, Outcome.MINOR_FAILURE)


def eye_decision(
    who: Who, about: About, *, capture_id: int, detail: Mapping[str, Any]
) -> AuditEvent:
    """A person decided which eye a photograph counts for, or excluded it (action U): the
    ``capture_id``, the ``action``, the ``eye`` decided, the label given and the eye detected
    before, the ``reason``, the user's ``role`` and the ``visit``."""
    decided = {"stage": "eye_decision", CAPTURE_ID: capture_id, **detail}
    return _event(EventID.INSTANCES_ACCESSED, Action.UPDATE, who, decided, about=about)


def duplicate_for_other_patient(who: Who, about: About, detail: Mapping[str, Any]) -> AuditEvent:
    """Bytes already held for one patient arrived for another: refused (a data-integrity
    alert, 110113); ``detail`` names the held ``capture_id`` and both patients' IDs."""
    alert = {"alert": "duplicate_other_patient", **detail}
    return _event(
        EventID.SECURITY_ALERT,
        Action.CREATE,
        who,
        alert,
        about=about,
        outcome=Outcome.MINOR_FAILURE,
        event_type=EventType.DATA_INTEGRITY_CHECK,
    )


def c_echo(who: Who, *, node: str, ok: bool, words: str) -> AuditEvent:
    """An admin's C-ECHO of a configured node (``who.ae_title``: the node's AE title)."""
    detail = {"admin_action": "c_echo", "node": node, "result": words}
    outcome = Outcome.SUCCESS if ok else Outcome.MINOR_FAILURE
    return _event(EventID.APPLICATION_ACTIVITY, Action.EXECUTE, who, detail, outcome=outcome)


def dead_letters_requeued(who: Who, *, count: int, destination: str | None) -> AuditEvent:
    """Dead-lettered outbox jobs queued again (admin console or ``outbox retry``)."""
    detail = {"requeued_dead_letters": count, "destination": destination or "all"}
    return _event(EventID.INSTANCES_TRANSFERRED, Action.UPDATE, who, detail)


def documents_retried(who: Who, *, count: int, document: int | None) -> AuditEvent:
    """Dead-lettered result documents made due again."""
    detail = {
        "stage": "documents",
        "retried_dead_documents": count,
        "document": "all" if document is None else document,
    }
    return _event(EventID.INSTANCES_ACCESSED, Action.UPDATE, who, detail)


def camera_qualification(by: str, detail: Mapping[str, Any], *, ok: bool = True) -> AuditEvent:
    """A camera model qualified, refused or revoked."""
    outcome = Outcome.SUCCESS if ok else Outcome.MINOR_FAILURE
    return _event(EventID.APPLICATION_ACTIVITY, Action.UPDATE, Who(by), detail, outcome=outcome)


# -- photographs in -------------------------------------------------------------------------------
def received(
    event_id: EventID, who: Who, about: About, *, capture_id: int, detail: Mapping[str, Any]
) -> AuditEvent:
    """A photograph received (or received again): action C with its ``capture_id``."""
    return _event(event_id, Action.CREATE, who, {CAPTURE_ID: capture_id, **detail}, about=about)


def refused(
    event_id: EventID, who: Who, about: About, *, outcome: Outcome, detail: Mapping[str, Any]
) -> AuditEvent:
    """A photograph refused at ingest (the refusal's reason and message in ``detail``)."""
    return _event(event_id, Action.CREATE, who, detail, about=about, outcome=outcome)


def identity_conflict(
    who: Who, patient_id: str, *, capture_id: int, fields: list[str]
) -> AuditEvent:
    """A known Patient ID came with another name, birth date or sex."""
    detail = {
        "alert": "identity_conflict",
        CAPTURE_ID: capture_id,
        "fields": fields,
        "note": "filed under the patient already held; check the identity",
    }
    return _event(
        EventID.SECURITY_ALERT,
        Action.CREATE,
        who,
        detail,
        about=About(patient_id),
        outcome=Outcome.MINOR_FAILURE,
    )


def hotfolder_notice(
    user_id: str, event_id: EventID, outcome: Outcome, detail: Mapping[str, Any]
) -> AuditEvent:
    """Something odd in the camera's export folder (a link, a FIFO, a file it cannot move)."""
    return _event(event_id, Action.EXECUTE, Who(user_id), detail, outcome=outcome)


# -- the pipeline ---------------------------------------------------------------------------------
def pipeline_step(
    row: Mapping[str, Any], outcome: Outcome, detail: Mapping[str, Any]
) -> AuditEvent:
    """A step of the worker on one capture (analysis, outcome, documents, decode failure)."""
    about = About(
        row["patient_identifier"] or "",
        row["study_instance_uid"] or "",
        [row["sop_instance_uid"]] if row["sop_instance_uid"] else [],
    )
    step = {CAPTURE_ID: row["id"], **detail}
    return _event(
        EventID.INSTANCES_ACCESSED,
        Action.EXECUTE,
        Who(PIPELINE),
        step,
        about=about,
        outcome=outcome,
    )


# -- objects out, and deleted ---------------------------------------------------------------------
def transferred(
    who: Who, about: About, *, outcome: Outcome, detail: Mapping[str, Any]
) -> AuditEvent:
    """An archive's answer to a send or a storage commitment request (110104)."""
    return _event(
        EventID.INSTANCES_TRANSFERRED, Action.READ, who, detail, about=about, outcome=outcome
    )


def deleted(user_id: str, detail: Mapping[str, Any], about: About = NOBODY) -> AuditEvent:
    """Stored files deleted (110105): retention, or the hot folder's old processed copies."""
    return _event(EventID.STUDY_DELETED, Action.DELETE, Who(user_id), detail, about=about)
