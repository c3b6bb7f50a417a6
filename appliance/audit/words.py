"""Audit events in plain words, for the admin console's audit page.

One phrasing per kind of event, the kinds being the typed builders of
:mod:`appliance.audit.events`: :func:`kind_of` tells from a stored row (its event ID, type,
action and the ``detail`` keys the builder spells) which builder made it, and :func:`sentence`
says it as one sentence a clinic admin understands — who did what to which patient or object,
and how it ended ("dr.smith signed the report for patient 12345 (Jane Doe) — reviewed and
approved"). The time is the row's own, shown beside it. Sentences start with the user's name
as it is spelled (user names are lower case), else with a capital. A row no phrasing knows,
or one whose detail is not what its kind writes, gets a safe generic sentence: its user, event
name, action, patient and outcome. The stored event and the JSON / JSONL export
are left as they are.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from appliance.audit import events
from appliance.audit.codes import NAMES, Action, EventID, EventType, Outcome

EYES = {"R": "right eye", "L": "left eye"}
SYSTEMS = {
    events.SYSTEM: "The appliance",
    events.PIPELINE: "The appliance (analysis)",
    events.OUTBOX: "The appliance (forwarding)",
    events.RETENTION: "The appliance (retention)",
    "system:hotfolder": "The hot folder",
    "hotfolder": "The hot folder",
    "unknown": "An unknown user",
}
FAILED: dict[int, str] = {
    Outcome.MINOR_FAILURE: "minor failure",
    Outcome.SERIOUS_FAILURE: "serious failure",
    Outcome.MAJOR_FAILURE: "major failure",
}
ACTIONS = {"C": "created", "R": "read", "U": "updated", "D": "deleted", "E": "executed"}


@dataclass(frozen=True)
class Said:
    kind: str  # the builder in appliance/audit/events.py that made the event; "other" if none
    text: str


@dataclass(frozen=True)
class Row:
    """What a phrasing reads of a stored event."""

    event_id: str
    event_type: str
    action: str
    outcome: int
    user: str  # who, in words
    patient: str  # "patient 12345 (Jane Doe)", or "" when the event names none
    detail: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.outcome == Outcome.SUCCESS

    def get(self, key: str, default: str = "") -> str:
        value = self.detail.get(key, default)
        if isinstance(value, list | tuple):
            return ", ".join(str(v) for v in value)
        return str(value)

    def of_patient(self) -> str:
        return f" of {self.patient}" if self.patient else ""

    def for_patient(self) -> str:
        return f" for {self.patient}" if self.patient else ""


def who(user_id: str, ae_title: str = "") -> str:
    """A user as the sentence names them."""
    if user_id in SYSTEMS:
        return SYSTEMS[user_id]
    if user_id.startswith("ae:"):
        return f"Camera {user_id[3:]}"
    if user_id.startswith("cli:"):
        return f"{user_id[4:]} (command line)"
    if user_id.startswith("system:"):
        return f"The appliance ({user_id[7:]})"
    return user_id or (f"AE title {ae_title}" if ae_title else "Someone")


def person(name: str) -> str:
    """A DICOM person name (Family^Given^Middle) as written: "Jane Doe"."""
    parts = [p.strip() for p in (name or "").split("^")]
    family, given = (parts + ["", ""])[:2]
    return " ".join(p for p in (given, *parts[2:3], family) if p)


def patient(patient_id: str, name: str = "") -> str:
    if not patient_id:
        return ""
    return f"patient {patient_id} ({person(name)})" if person(name) else f"patient {patient_id}"


def _detail(value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    try:
        found = json.loads(value or "{}")
    except (TypeError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def read(row: Mapping[str, Any], names: Mapping[str, str] | None = None) -> Row:
    patient_id = str(row.get("patient_id") or "")
    return Row(
        event_id=str(row.get("event_id") or ""),
        event_type=str(row.get("event_type") or ""),
        action=str(row.get("action") or ""),
        outcome=_int(row.get("outcome")),
        user=who(str(row.get("user_id") or ""), str(row.get("ae_title") or "")),
        patient=patient(patient_id, (names or {}).get(patient_id, "")),
        detail=_detail(row.get("detail")),
    )


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


# -- which builder made a row ------------------------------------------------------------------
def _alert(name: str) -> Callable[[Row], bool]:
    return lambda r: r.detail.get("alert") == name


def _has(key: str) -> Callable[[Row], bool]:
    return lambda r: key in r.detail


KINDS: tuple[tuple[str, Callable[[Row], bool]], ...] = (
    (
        "application_activity",
        lambda r: (
            r.event_id == EventID.APPLICATION_ACTIVITY
            and r.event_type in (EventType.APPLICATION_START, EventType.APPLICATION_STOP)
        ),
    ),
    ("model_integrity", _alert("model_integrity")),
    ("access_denied", _alert("access_denied")),
    ("identity_conflict", _alert("identity_conflict")),
    ("duplicate_for_other_patient", _alert("duplicate_other_patient")),
    ("setting_changed", lambda r: r.detail.get("change") == "setting_changed"),
    (
        "configuration_changed",
        lambda r: r.event_type == EventType.SOFTWARE_CONFIGURATION and "change" in r.detail,
    ),
    (
        "signature_refused",
        lambda r: (
            r.event_id == EventID.USER_AUTHENTICATION and r.detail.get("purpose") == "signature"
        ),
    ),
    ("authentication", lambda r: r.event_id == EventID.USER_AUTHENTICATION),
    ("viewed", lambda r: r.action == Action.READ and "view" in r.detail),
    (
        "patient_query",
        lambda r: r.event_id == EventID.QUERY and r.detail.get("query_kind") == "patient_search",
    ),
    ("worklist_query", lambda r: r.event_id == EventID.QUERY),
    ("review_signed", lambda r: r.detail.get("stage") == "review"),
    ("eye_decision", lambda r: r.detail.get("stage") == "eye_decision"),
    ("c_echo", lambda r: r.detail.get("admin_action") == "c_echo"),
    ("dead_letters_requeued", _has("requeued_dead_letters")),
    ("documents_retried", _has("retried_dead_documents")),
    ("camera_qualification", _has("camera_qualification")),
    ("station_selection", _has("station_selection")),
    ("hotfolder_notice", _has("hotfolder")),
    ("deleted", lambda r: r.event_id == EventID.STUDY_DELETED),
    (
        "transferred",
        lambda r: r.event_id == EventID.INSTANCES_TRANSFERRED and r.action == Action.READ,
    ),
    ("pipeline_step", lambda r: r.user == SYSTEMS[events.PIPELINE] and "stage" in r.detail),
    ("received", lambda r: r.action == Action.CREATE and events.CAPTURE_ID in r.detail),
    ("refused", lambda r: r.action == Action.CREATE and "refused" in r.detail),
    ("security_alert", lambda r: r.event_id == EventID.SECURITY_ALERT),
)


def kind_of(row: Row) -> str:
    """The builder in :mod:`appliance.audit.events` that made the event, or "other"."""
    return next((kind for kind, test in KINDS if test(row)), "other")


# -- the sentences -----------------------------------------------------------------------------
def sentence(row: Mapping[str, Any], names: Mapping[str, str] | None = None) -> Said:
    """The event as one sentence; ``names``: patient ID → DICOM patient name, if known."""
    found = read(row, names)
    kind = kind_of(found)
    phrase = PHRASES.get(kind)
    try:
        text = phrase(found) if phrase else ""
    except (KeyError, TypeError, ValueError, AttributeError):
        text = ""
    if not text:
        return Said("other" if not phrase else kind, generic(found))
    return Said(kind, _end(text, found))


def _end(text: str, r: Row) -> str:
    if not r.ok and r.outcome in FAILED and "refused" not in text and "failed" not in text:
        text += f" ({FAILED[r.outcome]})"
    return text if text.endswith((".", "!", "?", "”")) else text + "."


def generic(r: Row) -> str:
    """Any event: who, what kind of event, which action, whose data, how it ended."""
    name = NAMES.get(r.event_id, f"event {r.event_id}" if r.event_id else "an event")
    kind = f" ({NAMES.get(r.event_type, r.event_type)})" if r.event_type else ""
    action = ACTIONS.get(r.action, r.action or "recorded")
    end = "succeeded" if r.ok else FAILED.get(r.outcome, f"outcome {r.outcome}")
    return f"{r.user}: {name}{kind} {action}{r.for_patient()} — {end}."


def _application(r: Row) -> str:
    did = "started" if r.event_type == EventType.APPLICATION_START else "stopped"
    return f"The appliance {did} (version {r.get('version', '?')})"


def _configuration(r: Row) -> str:
    change, user = r.get("change"), r.get("user")
    said = {
        "user_added": f"{r.user} added the user {user} with the role {r.get('role')}",
        "role_changed": f"{r.user} gave {user} the role {r.get('role')}",
        "user_enabled": f"{r.user} enabled the account of {user}",
        "user_disabled": f"{r.user} disabled the account of {user}",
        "password_set": f"{r.user} set a new password for {user}",
        "profile_set": f"{r.user} set the name and credentials {user} signs with",
        "settings_saved": f"{r.user} saved settings for the next start: {r.get('settings')}",
        "settings_removed": f"{r.user} removed the saved settings ({r.get('settings')})",
    }
    return said.get(change, f"{r.user} changed the configuration ({change.replace('_', ' ')})")


def _authentication(r: Row) -> str:
    if r.event_type == EventType.LOGOUT:
        return f"{r.user} was logged out ({r.get('reason', 'logout').replace('_', ' ')})"
    if r.ok:
        return f"{r.user} logged in as {r.get('role', 'a user')}"
    locked = f"; locked until {r.get('locked_until')[:16]}" if r.detail.get("locked_until") else ""
    cause = r.get("cause", "wrong user name or password").replace("_", " ")
    as_whom = "with an unknown user name" if r.user == SYSTEMS["unknown"] else f"as {r.user}"
    return f"A login {as_whom} was refused ({cause}{locked})"


def _signature_refused(r: Row) -> str:
    cause = r.get("cause", "refused").replace("_", " ")
    locked = "; the account is locked" if r.detail.get("locked_until") else ""
    return f"The signature of {r.user} was refused ({cause}{locked})"


def _viewed(r: Row) -> str:
    view = r.get("view").replace("_", " ")
    if r.event_id == EventID.AUDIT_LOG_USED:
        said = {"audit log": "opened the audit log", "audit verify": "checked the audit chain",
                "audit export": "exported the audit log"}  # fmt: skip
        return f"{r.user} {said.get(view, view)}"
    return f"{r.user} viewed the {view}{r.for_patient()}"


def _worklist(r: Row) -> str:
    if not r.ok:
        return f"The worklist query by {r.user} failed: {r.get('error', 'no answer')}"
    return f"{r.user} asked the worklist: {r.get('matches', '?')} patient(s) found"


def _station(r: Row) -> str:
    at = f" at station {r.get('station')}" if r.detail.get("station") else ""
    if r.detail.get("finished"):
        return f"{r.user} finished the visit{r.of_patient()}{at}"
    return f"{r.user} chose {r.patient or 'a patient'}{at}"


def _signed(r: Row) -> str:
    meaning = r.get("meaning") or r.get("decision")
    signer = r.get("signer_name")
    credentials = f", {r.get('signer_credentials')}" if r.detail.get("signer_credentials") else ""
    as_whom = f" as {signer}{credentials}" if signer else ""
    outcome = r.get("outcome").replace("_", " ")
    return (
        f"{r.user} signed the report{r.for_patient()}{as_whom} — {meaning}"
        f"{f' (outcome: {outcome})' if outcome else ''}"
    )


def _eye_decision(r: Row) -> str:
    photo = f"photograph {r.get(events.CAPTURE_ID)}{r.of_patient()}"
    by = f"{r.user} ({r.get('role')})" if r.detail.get("role") else r.user
    eye = EYES.get(r.get("eye"), "")
    reason = f": “{r.get('reason')}”" if r.detail.get("reason") else ""
    said = {
        "keep_label": f"{by} kept the eye label of {photo}: {eye}",
        "use_detected": f"{by} used the detected eye for {photo}: {eye}",
        "relabel": f"{by} relabelled {photo} as the {eye}{reason}",
        "exclude": f"{by} excluded {photo} from the screening{reason}",
    }
    return said[r.get("action")]


def _received(r: Row) -> str:
    capture = r.get(events.CAPTURE_ID)
    if r.detail.get("duplicate"):
        return f"{r.user} sent photograph {capture}{r.for_patient()} again: already received"
    source = f" by {r.get('source')}" if r.detail.get("source") else ""
    return f"{r.user} sent a photograph{r.for_patient()}{source} (photograph {capture})"


def _pipeline(r: Row) -> str:
    stage, photo = r.get("stage"), f"Photograph {r.get(events.CAPTURE_ID)}{r.of_patient()}"
    if stage == "analysis":
        gradable = r.detail.get("gradable")
        verdict = {True: "gradable", False: "not gradable", None: "not checked"}[gradable]
        why = f" ({r.get('reasons').replace('_', ' ')})" if r.detail.get("reasons") else ""
        return f"{photo} was analysed: {verdict}{why}"
    if stage == "outcome":
        return f"The visit outcome{r.for_patient()} was decided: {r.get('code').replace('_', ' ')}"
    if stage == "documents" and r.detail.get("dead_letter"):
        return (
            f"The {r.get('kind').upper()} report{r.for_patient()} could not be built "
            f"(try {r.get('attempts')}): {r.get('reason')}"
        )
    if stage == "documents":
        issued = ", ".join(k.upper() for k in r.detail.get("issued", {}))
        return f"The report{r.for_patient()} was issued ({issued or 'documents'})"
    if stage == "decode":
        return f"{photo} could not be read: {r.get('failed')}"
    return ""


def _transferred(r: Row) -> str:
    where = r.get("destination", "the archive")
    if r.detail.get("storage_commitment"):
        if r.ok:
            return f"{where} confirmed it keeps the objects{r.of_patient()} (storage commitment)"
        return f"{where} did not confirm keeping the objects{r.of_patient()}: {r.get('message')}"
    if r.ok:
        return f"An object{r.of_patient()} was delivered to {where}"
    message = f": {r.get('message')}" if r.detail.get("message") else ""
    return f"Sending an object{r.of_patient()} to {where} failed ({r.get('result')}){message}"


def _deleted(r: Row) -> str:
    if r.get("reason") == "retention":
        return (
            f"{r.user} deleted {r.get('files')} local file(s){r.of_patient()} after delivery "
            f"(kept {r.get('retention_days')} days)"
        )
    return (
        f"{r.user} deleted {r.get('files')} old file(s) from the hot folder's "
        f"{r.get('folder', 'processed')} folder"
    )


def _security(r: Row) -> str:
    if r.detail.get("refused"):
        return f"Security alert: {r.user} was refused: {r.get('message') or r.get('refused')}"
    what = r.get("alert") or r.get("message")
    return f"Security alert from {r.user}: {what.replace('_', ' ')}" if what else ""


PHRASES: dict[str, Callable[[Row], str]] = {
    "application_activity": _application,
    "model_integrity": lambda r: f"A model file was refused: {r.get('message')}",
    "access_denied": lambda r: f"{r.user} was refused the page {r.get('path')}: {r.get('why')}",
    "identity_conflict": lambda r: (
        f"Photograph {r.get(events.CAPTURE_ID)} came for {r.patient or 'a patient'} with another "
        f"{r.get('fields').replace('_', ' ')}: filed under the patient already held; check "
        "the identity"
    ),
    "duplicate_for_other_patient": lambda r: (
        f"{r.user} sent a photograph for patient {r.get('patient_id')} that is already held for "
        f"patient {r.get('held_patient_id')}: refused"
    ),
    "setting_changed": lambda r: (
        f"{r.user} changed the setting {r.get('setting')} from {r.get('old')} to "
        f"{r.get('new')} (applies at the next start)"
    ),
    "configuration_changed": _configuration,
    "authentication": _authentication,
    "signature_refused": _signature_refused,
    "viewed": _viewed,
    "patient_query": lambda r: (
        f'{r.user} searched the patients for "{r.get("query")}": '
        f"{r.get('matches', '?')} visit(s) found"
    ),
    "worklist_query": _worklist,
    "station_selection": _station,
    "review_signed": _signed,
    "eye_decision": _eye_decision,
    "c_echo": lambda r: f"{r.user} tested the connection to {r.get('node')}: {r.get('result')}",
    "dead_letters_requeued": lambda r: (
        f"{r.user} queued {r.get('requeued_dead_letters')} undelivered object(s) again "
        f"(destination: {r.get('destination', 'all')})"
    ),
    "documents_retried": lambda r: (
        f"{r.user} asked for {r.get('retried_dead_documents')} report(s) to be built again"
    ),
    "camera_qualification": lambda r: (
        f"{r.user}: the camera model {r.get('camera_model')} was {r.get('camera_qualification')}"
    ),
    "hotfolder_notice": lambda r: (
        f"The hot folder ignored a {r.get('kind')} named {r.get('name')}"
        if r.get("hotfolder") == "ignored"
        else f"Hot folder: {r.get('hotfolder').replace('_', ' ')} {r.get('name')}".strip()
    ),
    "deleted": _deleted,
    "transferred": _transferred,
    "pipeline_step": _pipeline,
    "received": _received,
    "refused": lambda r: (
        f"A photograph from {r.user}{r.for_patient()} was refused: "
        f"{r.get('message') or r.get('refused')}"
    ),
    "security_alert": _security,
}
