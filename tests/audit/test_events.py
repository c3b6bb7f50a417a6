"""Typed audit event builders: who and whose data land in the event's own fields, and the
detail keys other code reads back are the ones named in the module."""

from __future__ import annotations

from appliance.audit import Action, EventID, EventType, Outcome, events


def test_a_receive_event_names_its_capture_under_the_key_monitoring_reads() -> None:
    event = events.received(
        EventID.IMPORT,
        events.Who("nurse", "10.0.0.5", "CAM1"),
        events.About("P1", "1.2.3", ["1.2.3.4"]),
        capture_id=42,
        detail={"source": "upload"},
    )
    assert (event.event_id, event.action, event.outcome) == (
        EventID.IMPORT,
        Action.CREATE,
        Outcome.SUCCESS,
    )
    assert (event.user_id, event.source_address, event.ae_title) == ("nurse", "10.0.0.5", "CAM1")
    assert (event.patient_id, event.study_instance_uid) == ("P1", "1.2.3")
    assert list(event.sop_instance_uids) == ["1.2.3.4"]
    assert event.detail == {events.CAPTURE_ID: 42, "source": "upload"}
    assert events.CAPTURE_ID == "capture_id"


def test_a_configuration_change_is_a_security_alert_of_type_software_configuration() -> None:
    event = events.configuration_changed(events.Who("admin", "10.0.0.9"), "user_added", {"u": 1})
    assert event.event_id == EventID.SECURITY_ALERT
    assert event.event_type == str(EventType.SOFTWARE_CONFIGURATION)
    assert event.action == Action.UPDATE
    assert event.detail == {"change": "user_added", "u": 1}


def test_an_access_refused_is_a_minor_failure_read_by_whoever_asked() -> None:
    event = events.access_denied(events.Who("anonymous", "::1"), path="/admin", why="no role")
    assert (event.event_id, event.action, event.outcome) == (
        EventID.SECURITY_ALERT,
        Action.READ,
        Outcome.MINOR_FAILURE,
    )
    assert event.detail == {"alert": "access_denied", "path": "/admin", "why": "no role"}
    assert event.patient_id == "" and list(event.sop_instance_uids) == []


def test_a_refused_signature_is_a_failed_authentication_for_a_signature() -> None:
    detail = {"cause": "wrong_password", "signing": "study:1", "failures": 2}
    event = events.signature_refused(events.Who("grader", "10.0.0.7"), detail)
    assert (event.event_id, event.event_type, event.outcome) == (
        EventID.USER_AUTHENTICATION,
        str(EventType.LOGIN),
        Outcome.MINOR_FAILURE,
    )
    assert event.detail == {"purpose": "signature", **detail}
    assert (event.user_id, event.source_address) == ("grader", "10.0.0.7")


def test_a_signature_names_its_meaning_and_signer() -> None:
    detail = {"meaning": "amended", "signer_name": "Dr A. Grader", "signer_credentials": "MD"}
    event = events.review_signed(
        events.Who("grader"), events.About("P1", "1.2.3", ["1.2.3.9", "1.2.3.8"]), detail
    )
    assert (event.event_id, event.action) == (EventID.INSTANCES_ACCESSED, Action.CREATE)
    assert event.detail == {"stage": "review", **detail}
    assert list(event.sop_instance_uids) == ["1.2.3.9", "1.2.3.8"]


def test_a_patient_search_is_a_query_naming_what_was_asked_and_who_was_found() -> None:
    detail = {"query": "lovelace", "matches": 2, "patients": ["P1", "P2"]}
    event = events.patient_query(events.Who("olivia", "10.0.0.8", "SCREENING"), detail)
    assert (event.event_id, event.action, event.outcome) == (
        EventID.QUERY,
        Action.EXECUTE,
        Outcome.SUCCESS,
    )
    assert event.detail == {"query_kind": "patient_search", **detail}
    assert (event.user_id, event.ae_title) == ("olivia", "SCREENING")
