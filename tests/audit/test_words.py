"""The audit page's sentences: every typed builder in appliance/audit/events.py has its own
phrasing, read back from a real trail; unknown or malformed events get the generic sentence."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.audit import (
    Action,
    AuditEvent,
    AuditTrail,
    EventID,
    EventType,
    Outcome,
    events,
    words,
)
from appliance.store import Store

WHO = events.Who("dr.smith", "10.0.0.7")
JANE = events.About("12345", "1.2.3", ["1.2.3.4"])
ROW = {"id": 7, "patient_identifier": "12345", "study_instance_uid": "1.2.3",
       "sop_instance_uid": "1.2.3.4"}  # fmt: skip
NAMES = {"12345": "Doe^Jane"}

# one sample per builder, and the sentence it must read as
SAMPLES: dict[str, tuple[Callable[[], AuditEvent], str]] = {
    "review_signed": (
        lambda: events.review_signed(
            WHO,
            JANE,
            {
                "meaning": "reviewed and approved",
                "decision": "accept",
                "outcome": "rescreen",
                "signer_name": "Dr Jo Smith",
                "signer_credentials": "MD",
            },
        ),  # fmt: skip
        "dr.smith signed the report for patient 12345 (Jane Doe) as Dr Jo Smith, MD — reviewed "
        "and approved (outcome: rescreen).",
    ),
    "application_activity": (
        lambda: events.application_activity(
            EventType.APPLICATION_START, ae_title="SCREENING", version="1.4"
        ),
        "The appliance started (version 1.4).",
    ),
    "security_alert": (
        lambda: events.security_alert(
            {"refused": "too_many", "message": "too many connections from 10.0.0.9"},
            events.Who("ae:CAM1"),
        ),
        "Security alert: Camera CAM1 was refused: too many connections from 10.0.0.9.",
    ),
    "model_integrity": (
        lambda: events.model_integrity("dr.int8.onnx: hash mismatch"),
        "A model file was refused: dr.int8.onnx: hash mismatch.",
    ),
    "configuration_changed": (
        lambda: events.configuration_changed(
            events.Who("ann"), "user_added", {"user": "nina", "role": "operator"}
        ),
        "ann added the user nina with the role operator.",
    ),
    "setting_changed": (
        lambda: events.setting_changed(
            events.Who("ann"), setting="station_name", old="STATION1", new="EYE-2"
        ),
        "ann changed the setting station_name from STATION1 to EYE-2 (applies at the next start).",
    ),
    "authentication": (
        lambda: events.authentication(
            EventType.LOGIN,
            events.Who("unknown"),
            {"cause": "wrong_password"},
            Outcome.MINOR_FAILURE,
        ),  # fmt: skip
        "A login with an unknown user name was refused (wrong password).",
    ),
    "access_denied": (
        lambda: events.access_denied(WHO, path="/admin", why="role clinician"),
        "dr.smith was refused the page /admin: role clinician.",
    ),
    "viewed": (
        lambda: events.viewed(
            EventID.INSTANCES_ACCESSED, WHO, JANE, what="review visit", path="/review/x"
        ),
        "dr.smith viewed the review visit for patient 12345 (Jane Doe).",
    ),
    "patient_query": (
        lambda: events.patient_query(WHO, {"query": "doe", "matches": 2, "patients": ["12345"]}),
        'dr.smith searched the patients for "doe": 2 visit(s) found.',
    ),
    "worklist_query": (
        lambda: events.worklist_query(WHO, {"matches": 3}, Outcome.SUCCESS),
        "dr.smith asked the worklist: 3 patient(s) found.",
    ),
    "station_selection": (
        lambda: events.station_selection(
            Action.CREATE, events.Who("olivia"), JANE, {"station_selection": 4, "station": "S1"}
        ),
        "olivia chose patient 12345 (Jane Doe) at station S1.",
    ),
    "signature_refused": (
        lambda: events.signature_refused(WHO, {"cause": "wrong_password", "failures": 1}),
        "The signature of dr.smith was refused (wrong password).",
    ),
    "eye_decision": (
        lambda: events.eye_decision(
            WHO,
            JANE,
            capture_id=9,
            detail={
                "action": "relabel",
                "eye": "L",
                "reason": "camera set to OD",
                "role": "clinician",
            },
        ),  # fmt: skip
        "dr.smith (clinician) relabelled photograph 9 of patient 12345 (Jane Doe) as the left "
        "eye: “camera set to OD”",
    ),
    "duplicate_for_other_patient": (
        lambda: events.duplicate_for_other_patient(
            events.Who("olivia"), JANE, {"patient_id": "12345", "held_patient_id": "999"}
        ),
        "olivia sent a photograph for patient 12345 that is already held for patient 999: refused.",
    ),
    "c_echo": (
        lambda: events.c_echo(events.Who("ann"), node="pacs", ok=False, words="no answer"),
        "ann tested the connection to pacs: no answer (minor failure).",
    ),
    "dead_letters_requeued": (
        lambda: events.dead_letters_requeued(events.Who("ann"), count=2, destination="pacs"),
        "ann queued 2 undelivered object(s) again (destination: pacs).",
    ),
    "documents_retried": (
        lambda: events.documents_retried(events.Who("ann"), count=1, document=None),
        "ann asked for 1 report(s) to be built again.",
    ),
    "camera_qualification": (
        lambda: events.camera_qualification(
            "cli:ann", {"camera_qualification": "revoked", "camera_model": "Topcon / X"}
        ),
        "ann (command line): the camera model Topcon / X was revoked.",
    ),
    "received": (
        lambda: events.received(
            EventID.IMPORT, events.Who("ae:CAM1"), JANE, capture_id=9, detail={"source": "dicom"}
        ),
        "Camera CAM1 sent a photograph for patient 12345 (Jane Doe) by dicom (photograph 9).",
    ),
    "refused": (
        lambda: events.refused(
            EventID.IMPORT,
            events.Who("olivia"),
            JANE,
            outcome=Outcome.MINOR_FAILURE,
            detail={"refused": "not_an_image", "message": "not a photograph"},
        ),  # fmt: skip
        "A photograph from olivia for patient 12345 (Jane Doe) was refused: not a photograph.",
    ),
    "identity_conflict": (
        lambda: events.identity_conflict(
            events.Who("olivia"), "12345", capture_id=9, fields=["patient_name"]
        ),
        "Photograph 9 came for patient 12345 (Jane Doe) with another patient name: filed under "
        "the patient already held; check the identity (minor failure).",
    ),
    "hotfolder_notice": (
        lambda: events.hotfolder_notice(
            "system:hotfolder",
            EventID.IMPORT,
            Outcome.MINOR_FAILURE,
            {"hotfolder": "ignored", "kind": "symlink", "name": "x.jpg"},
        ),  # fmt: skip
        "The hot folder ignored a symlink named x.jpg (minor failure).",
    ),
    "pipeline_step": (
        lambda: events.pipeline_step(
            ROW, Outcome.SUCCESS, {"stage": "outcome", "visit": "v", "code": "glaucoma_refer"}
        ),
        "The visit outcome for patient 12345 (Jane Doe) was decided: glaucoma refer.",
    ),
    "transferred": (
        lambda: events.transferred(
            events.Who(events.OUTBOX),
            JANE,
            outcome=Outcome.SUCCESS,
            detail={"destination": "pacs", "result": "done"},
        ),  # fmt: skip
        "An object of patient 12345 (Jane Doe) was delivered to pacs.",
    ),
    "deleted": (
        lambda: events.deleted(
            events.RETENTION, {"reason": "retention", "retention_days": 30, "files": 3}, JANE
        ),
        "The appliance (retention) deleted 3 local file(s) of patient 12345 (Jane Doe) after "
        "delivery (kept 30 days).",
    ),
}


@pytest.fixture
def trail(tmp_path: Path) -> Iterator[AuditTrail]:
    store = Store(tmp_path / "appliance.db")
    yield AuditTrail(store, tmp_path / "audit.head")
    store.close()


def _stored(trail: AuditTrail, event: AuditEvent) -> dict[str, Any]:
    seq = trail.log(event)
    return next(r for r in trail.rows() if r["seq"] == seq)


def test_every_builder_has_its_own_phrasing() -> None:
    builders = {
        name
        for name, fn in inspect.getmembers(events, inspect.isfunction)
        if not name.startswith("_") and fn.__module__ == events.__name__
        and inspect.signature(fn).return_annotation in ("AuditEvent", AuditEvent)
    }  # fmt: skip
    assert builders == set(SAMPLES)  # a new builder needs a sample here and a phrasing
    assert set(words.PHRASES) == builders


@pytest.mark.parametrize("builder", sorted(SAMPLES))
def test_each_kind_reads_as_its_sentence(trail: AuditTrail, builder: str) -> None:
    make, expected = SAMPLES[builder]
    said = words.sentence(_stored(trail, make()), NAMES)
    assert said.kind == builder
    assert said.text == expected


def test_unknown_and_malformed_events_get_the_generic_sentence(trail: AuditTrail) -> None:
    odd = AuditEvent(EventID.EXPORT, Action.EXECUTE, "ann", Outcome.SERIOUS_FAILURE,
                     patient_id="12345", detail={"what": "<script>"})  # fmt: skip
    said = words.sentence(_stored(trail, odd), NAMES)
    assert said == words.Said(
        "other", "ann: Export executed for patient 12345 (Jane Doe) — serious failure."
    )
    # an eye decision whose action no phrasing knows: the generic sentence, not an error
    broken = events.eye_decision(WHO, JANE, capture_id=1, detail={"action": "rotate"})
    said = words.sentence(_stored(trail, broken))
    assert said.kind == "eye_decision"
    assert said.text == "dr.smith: DICOM Instances Accessed updated for patient 12345 — succeeded."
    row = {"event_id": "", "detail": "not json", "outcome": "x", "user_id": ""}
    assert words.sentence(row).text == "Someone: an event recorded — outcome -1."
    assert json.loads(_stored(trail, odd)["detail"]) == {"what": "<script>"}  # stored as is


def test_names_read_given_name_first() -> None:
    assert words.person("Doe^Jane^Q") == "Jane Q Doe"
    assert words.patient("12345", "Doe^Jane") == "patient 12345 (Jane Doe)"
    assert words.patient("12345") == "patient 12345" and words.patient("") == ""
