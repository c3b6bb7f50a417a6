"""A photograph's eye decided from the review desk: the clinician's decision goes through the
same desk as the station's (``EyeLabels.decide``); the review desk then files the photograph
under the decided eye, shows who decided, derives the outcome again (a signed visit needs
review again) and the SR and PDF are issued again. Real services with the shipped models."""

from __future__ import annotations

import json
from typing import Any

import pytest

from appliance.desks.review import VisitNotFound
from appliance.desks.signoff import Decision
from tests.conftest import wait_for
from tests.pipeline.test_eye_decisions import (
    CONFLICT,
    SLOW,
    captures,
    decision_events,
    documents,
    outcome,
    photo_rgb,
    screening,
    send_upload,
)
from tests.web_helpers import PASSWORD, add_user

__all__ = ["screening"]  # the fixture, used by name


def test_the_review_desk_reflects_a_clinicians_eye_decision(screening: Any) -> None:
    services = screening
    send_upload(services, photo_rgb("R"), "R")
    send_upload(services, photo_rgb("L"), "R")  # a left eye, labelled right
    wait_for(
        lambda: len(r := captures(services)) == 2 and all(x["status"] == "processed" for x in r),
        SLOW,
    )
    wait_for(lambda: CONFLICT in " ".join(outcome(services)["prompts"]), SLOW)
    good, wrong = (int(r["id"]) for r in captures(services))
    key = services.store.one("SELECT visit_key FROM visit_outcomes ORDER BY id DESC")["visit_key"]
    desk = services.review

    before = desk.visit(key)
    assert {e.eye: e.status for e in before.eyes} == {"R": "graded", "L": "unresolved"}
    assert [i.capture_id for i in before.other_images] == [wrong]
    assert before.other_images[0].result["laterality_mismatch"]
    assert desk.image_owner(key, wrong)["patient_id"] == "EYE-01"
    with pytest.raises(VisitNotFound):
        desk.image_owner(key, 99999)  # the web view's check: only a photo of this visit

    # signed while the left eye is in question (override: no complete result to accept)
    dr = add_user(services, "dr1", "clinician")
    desk.sign(
        key,
        Decision("override", outcome_code="retake", reason="left eye in question",
                 outcome_id=before.summary.outcome_id),
        user_pk=dr.id, username="dr1", password=PASSWORD,
    )  # fmt: skip
    assert not desk.visit(key).summary.needs_review
    signed_pdfs = len(documents(services, "pdf"))

    decided = services.eye_labels.decide(wrong, "use_detected", user="dr1", role="clinician")
    after = desk.visit(key)
    assert {e.eye: e.status for e in after.eyes} == {"R": "graded", "L": "graded"}
    left = next(e for e in after.eyes if e.eye == "L")
    assert [i.capture_id for i in left.images] == [wrong] and after.other_images == ()
    assert left.images[0].decision is not None
    assert (left.images[0].decision.decided_by, left.images[0].decision.role) == (
        "dr1",
        "clinician",
    )
    assert after.summary.outcome_id > before.summary.outcome_id
    assert after.summary.code == decided.outcome.code
    assert after.summary.needs_review  # the outcome changed after the sign-off
    assert not any("label" in p for p in after.prompts)
    wait_for(lambda: len(documents(services, "pdf")) > signed_pdfs, SLOW)
    (event,) = decision_events(services)
    from appliance.audit import words

    said = words.sentence(event | {"detail": json.dumps(event["detail"])}, {"EYE-01": "Eye^Test"})
    assert said.text == (
        f"dr1 (clinician) used the detected eye for photograph {wrong} of patient EYE-01 "
        "(Test Eye): left eye."
    )
    assert event["user_id"] == "dr1" and event["detail"]["role"] == "clinician"
    assert event["detail"]["visit"] == key and event["detail"]["capture_id"] == wrong != good
