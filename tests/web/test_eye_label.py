"""The station's eye decisions over HTTP: the conflict and its choices in the live fragment,
relabel / exclude with a reason (operator or clinician; CSRF; only a photo of this station's
visit), audited; the review page files each photograph under its decided eye, with who and why."""

from __future__ import annotations

import json
import re
from typing import Any

from appliance.runtime.services import Services
from tests.conftest import jpeg_bytes, wait_for
from tests.web.test_station import fragment, upload, walk_in
from tests.web_helpers import csrf_from, logged_in


def _photo(eye: str) -> bytes:
    from appliance.synth.case import render_case
    from appliance.synth.dataset import case_for

    case = next(
        c for c in (case_for(6160, i, (600, 800)) for i in range(200))
        if c.eye == eye and c.field == "macula" and c.defect is None
    )  # fmt: skip
    return jpeg_bytes(render_case(case))


def _post(client: Any, capture: int, **form: str) -> Any:
    token = csrf_from(client.get("/station").get_data(as_text=True))
    return client.post(f"/station/captures/{capture}/eye", data={**form, "csrf_token": token})


def test_conflict_relabel_exclude_and_the_review_page(app: Any, services: Services) -> None:
    operator = logged_in(app, services, "operator")
    assert walk_in(operator).status_code == 302
    page = operator.get("/station").get_data(as_text=True)
    assert upload(operator, page, _photo("R"), "R").status_code == 201
    assert upload(operator, page, _photo("L"), "R").status_code == 201  # a left eye as right
    shown = wait_for(lambda: (f := fragment(operator)) and "eye-conflict-" in f and f, 60)
    capture = int(re.search(r'id="eye-conflict-(\d+)"', shown).group(1))  # type: ignore[union-attr]
    assert "Labelled Right eye (OD), but the photo looks like the left eye." in shown
    assert f'id="keep-label-{capture}"' in shown and f'id="use-detected-{capture}"' in shown
    assert "the photograph labelled Right (OD) looks like a left eye" in shown
    assert "Left eye:</strong> not counted" in shown

    # refused: no CSRF token, a role that is not the station's, a photo not shown here
    no_token = operator.post(f"/station/captures/{capture}/eye", data={"action": "keep_label"})
    assert no_token.status_code == 400
    admin = logged_in(app, services, "admin")
    assert _post(admin, capture, action="keep_label").status_code == 403
    assert _post(operator, 99999, action="keep_label").status_code == 404
    missing = _post(operator, capture, action="relabel", eye="L")
    assert missing.status_code == 422 and "a reason is needed" in missing.get_data(as_text=True)
    assert services.store.query("SELECT * FROM eye_decisions") == []

    # relabel by the operator: it counts for the left eye now
    moved = _post(operator, capture, action="relabel", eye="L", reason="camera set to OD")
    assert moved.status_code == 302
    shown = fragment(operator)
    assert "eye-conflict-" not in shown and "Left eye:</strong> done" in shown
    assert re.search(
        r"Eye relabelled: left eye — by operator1 \(operator\), .*camera set to OD", shown
    )
    (event,) = [
        {**r, "detail": json.loads(r["detail"])}
        for r in services.audit.rows()
        if json.loads(r["detail"]).get("stage") == "eye_decision"
    ]
    assert event["patient_id"] == "WALK-1" and event["user_id"] == "operator1"
    assert event["detail"]["capture_id"] == capture and event["detail"]["eye"] == "L"
    assert event["detail"]["role"] == "operator"

    # the review page files it under the left eye, saying who decided and why
    clinician = logged_in(app, services, "clinician")
    key = services.store.one("SELECT visit_key FROM visit_outcomes ORDER BY id DESC")["visit_key"]
    review = clinician.get(f"/review/{key}").get_data(as_text=True)
    left = review[review.index('id="eye-section-L"') :]
    left = left[: left.index("</section>")]
    assert f'id="photo-{capture}"' in left
    assert "Relabelled: left eye</strong> by operator1 (operator)" in left
    assert "camera set to OD" in left

    # a clinician excludes it: in no eye; the review page shows it apart, excluded
    gone = _post(clinician, capture, action="exclude", reason="blurred duplicate")
    assert gone.status_code == 302
    assert "Left eye:</strong> not photographed yet" in fragment(operator)
    review = clinician.get(f"/review/{key}").get_data(as_text=True)
    other = review[review.index('id="eye-other"') :]
    assert f'id="photo-{capture}"' in other and "Excluded</strong> by clinician1" in other
    rows = services.store.query("SELECT action, eye, decided_by, role FROM eye_decisions")
    assert [tuple(r.values()) for r in rows] == [
        ("relabel", "L", "operator1", "operator"),
        ("exclude", None, "clinician1", "clinician"),
    ]
    assert services.audit.verify().ok


def _review_post(client: Any, key: str, capture: int, **form: str) -> Any:
    token = csrf_from(client.get(f"/review/{key}").get_data(as_text=True))
    return client.post(f"/review/{key}/captures/{capture}/eye", data={**form, "csrf_token": token})


def test_a_clinician_decides_the_eye_on_the_review_page(app: Any, services: Services) -> None:
    operator = logged_in(app, services, "operator")
    assert walk_in(operator).status_code == 302
    page = operator.get("/station").get_data(as_text=True)
    assert upload(operator, page, _photo("R"), "R").status_code == 201
    assert upload(operator, page, _photo("L"), "R").status_code == 201  # a left eye as right
    shown = wait_for(lambda: (f := fragment(operator)) and "eye-conflict-" in f and f, 60)
    capture = int(re.search(r'id="eye-conflict-(\d+)"', shown).group(1))  # type: ignore[union-attr]
    key = services.store.one("SELECT visit_key FROM visit_outcomes ORDER BY id DESC")["visit_key"]
    outcomes_before = services.store.scalar("SELECT count(*) FROM visit_outcomes")

    clinician = logged_in(app, services, "clinician")
    review = clinician.get(f"/review/{key}").get_data(as_text=True)
    assert f'id="keep-label-{capture}"' in review and f'id="use-detected-{capture}"' in review
    assert "Use the detected eye: left eye" in review and f'id="relabel-{capture}"' in review

    # refused: no CSRF token, the operator (not a reviewer), a photo of another visit, no reason
    url = f"/review/{key}/captures/{capture}/eye"
    assert clinician.post(url, data={"action": "use_detected"}).status_code == 400
    token = csrf_from(operator.get("/station").get_data(as_text=True))
    refused = operator.post(url, data={"action": "use_detected", "csrf_token": token})
    assert refused.status_code == 403
    assert _review_post(clinician, key, 99999, action="use_detected").status_code == 404
    missing = _review_post(clinician, key, capture, action="exclude")
    assert missing.status_code == 422
    said = missing.get_data(as_text=True)
    assert "Eye not decided:</strong> say why: a reason is needed" in said
    assert services.store.query("SELECT * FROM eye_decisions") == []

    # use the detected eye: the same desk as the station; outcome and documents derived again
    done = _review_post(clinician, key, capture, action="use_detected")
    assert done.status_code == 303 and done.headers["Location"].endswith(f"#photo-{capture}")
    page = clinician.get(f"/review/{key}").get_data(as_text=True)
    assert f"Photograph {capture}: the detected eye used: left eye. The outcome was" in page
    left = page[page.index('id="eye-section-L"') :]
    left = left[: left.index("</section>")]
    assert f'id="photo-{capture}"' in left and f'id="use-detected-{capture}"' not in left
    assert "Detected eye used: left eye</strong> by clinician1 (clinician)" in left
    assert "Left eye:</strong> done" in fragment(operator)  # the station sees the same
    assert services.store.scalar("SELECT count(*) FROM visit_outcomes") > outcomes_before
    (event,) = [
        {**r, "detail": json.loads(r["detail"])}
        for r in services.audit.rows()
        if json.loads(r["detail"]).get("stage") == "eye_decision"
    ]
    assert event["user_id"] == "clinician1" and event["patient_id"] == "WALK-1"
    assert event["detail"]["action"] == "use_detected" and event["detail"]["role"] == "clinician"
    assert event["detail"]["visit"] == key
    decided = services.store.scalar("SELECT count(*) FROM visit_outcomes")

    # relabel with a reason: the outcome is derived again once more
    moved = _review_post(clinician, key, capture, action="relabel", eye="R", reason="OD after all")
    assert moved.status_code == 303
    assert services.store.scalar("SELECT count(*) FROM visit_outcomes") > decided
    assert "Right eye:</strong> done" in fragment(operator)
    rows = services.store.query("SELECT action, eye, decided_by, role FROM eye_decisions")
    assert [tuple(r.values()) for r in rows] == [
        ("use_detected", "L", "clinician1", "clinician"),
        ("relabel", "R", "clinician1", "clinician"),
    ]
    assert services.audit.verify().ok
