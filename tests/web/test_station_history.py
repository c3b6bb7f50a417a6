"""The station's pages through the Flask test client with real services: the birth date as
YYYY-MM-DD text, superseded photographs, earlier visits and today's finished ones reopened
read-only, patient search, reprint of the newest report — every view audited, roles kept.

The worker does not run by itself: each test processes what it sent with ``pipeline.drain()``
and builds the documents owed with ``issue_due()``, so no state is waited for.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from appliance.config import Settings
from appliance.runtime.services import Services
from appliance.synth.degrade import defocus
from tests.conftest import fundus, jpeg_bytes
from tests.web.test_review import MODELS, _photo
from tests.web.test_station import audit, fragment, upload, views, walk_in
from tests.web_helpers import PASSWORD, csrf, csrf_from, logged_in
from web import create_app

SMALL = (384, 512)


@pytest.fixture
def quiet(settings: Settings) -> Iterator[Services]:
    svc = Services(settings)
    svc.start(dicom=False, hotfolder=False, worker=False)
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture
def web(settings: Settings, quiet: Services) -> Any:
    return create_app(settings, quiet)


def _process(services: Services) -> None:
    while services.pipeline.drain():
        pass
    services.pipeline.issue_due()


def _capture(page: str, capture_id: int) -> str:
    found = re.search(rf'<li class="capture [^"]*" id="capture-{capture_id}".*?</li>', page, re.S)
    assert found, f"no capture {capture_id} on the page"
    return found.group(0)


def _finish(client: Any) -> None:
    client.post("/station/finish", data={"csrf_token": csrf(client, "/station")})


# -- the birth date ------------------------------------------------------------------------------
def test_the_birth_date_field_is_iso_text_whatever_the_locale(web: Any, quiet: Services) -> None:
    client = logged_in(web, quiet, "operator")
    page = client.get("/station").get_data(as_text=True)
    field = re.search(r'<input id="walk-in-birth-date"[^>]*>', page)
    assert field and 'type="text"' in field.group(0) and 'type="date"' not in page
    assert 'pattern="[0-9]{4}-[0-9]{2}-[0-9]{2}"' in field.group(0)
    assert 'placeholder="YYYY-MM-DD"' in field.group(0)
    refused = walk_in(client, birth_date="12/10/1950")  # what a US date picker would send
    assert refused.status_code == 422
    text = html.unescape(refused.get_data(as_text=True))
    assert "Enter the birth date as YYYY-MM-DD (year, month, day), e.g. 1958-04-12" in text
    assert 'value="12/10/1950"' in text  # kept, so it can be corrected
    assert quiet.station.current() is None
    assert walk_in(client, birth_date="1950-12-10").status_code == 302
    page = client.get("/station").get_data(as_text=True)
    assert "<dt>Born</dt><dd>1950-12-10</dd>" in page
    assert quiet.store.scalar("SELECT birth_date FROM station_selections") == "19501210"


# -- superseded photographs ----------------------------------------------------------------------
def test_a_superseded_photo_no_longer_says_take_it_again(web: Any, quiet: Services) -> None:
    client = logged_in(web, quiet, "operator")
    walk_in(client)
    page = client.get("/station").get_data(as_text=True)
    blurred = jpeg_bytes(defocus(fundus(seed=8, size=SMALL), 0.9))
    first = upload(client, page, blurred, "R").get_json()["id"]
    _process(quiet)
    shown = fragment(client)
    assert "Not gradable — take it again" in _capture(shown, first)
    assert "Right eye:</strong> take it again" in shown

    second = upload(client, page, jpeg_bytes(fundus(seed=9, size=SMALL)), "R").get_json()["id"]
    _process(quiet)
    shown = fragment(client)
    old = _capture(shown, first)
    assert 'class="capture superseded"' in old
    assert "Not gradable — superseded by a later photograph" in old
    assert "take it again" not in old and '<ul class="guidance">' not in old
    assert "no retake needed" in old
    assert "✓</span> Gradable" in _capture(shown, second)
    assert "Right eye:</strong> done" in shown and "Left eye:</strong> not photographed" in shown
    assert "Right eye: the photograph" not in shown  # no retake prompt for the right eye


# -- history, reopen, reprint, search ------------------------------------------------------------
def test_finished_visits_reopen_read_only_audited_and_listed_for_the_patient(
    web: Any, quiet: Services
) -> None:
    client = logged_in(web, quiet, "operator")
    walk_in(client)
    page = client.get("/station").get_data(as_text=True)
    assert 'id="earlier-none"' in page  # a first visit
    capture = upload(client, page, jpeg_bytes(fundus(seed=7, size=SMALL)), "R").get_json()["id"]
    _process(quiet)
    _finish(client)

    page = client.get("/station").get_data(as_text=True)
    finished = re.search(r'<table class="visit-lines" id="finished-visits">.*?</table>', page, re.S)
    assert finished and "Lovelace, Ada" in finished.group(0) and "WALK-1" in finished.group(0)
    [listed] = views(quiet, "station_finished_today")
    assert listed["detail"]["patients"] == ["WALK-1"]
    link = re.search(r'href="(/station/visits/[^"]+)"', finished.group(0))
    assert link
    key = html.unescape(link.group(1)).rsplit("/", 1)[1].replace("%3A", ":")

    past = client.get(link.group(1))
    assert past.status_code == 200
    text = past.get_data(as_text=True)
    assert "Read-only: this visit is finished" in text and "Lovelace, Ada" in text
    assert "✓</span> Gradable" in text and "Right eye:</strong> done" in text
    assert "/station/captures/" not in text  # no forms and no live-visit URLs
    assert "data-refresh" not in text
    forms = re.findall(r'<form [^>]*action="([^"]+)"', text.split("</header>")[1])
    assert [html.unescape(f).replace("%3A", ":") for f in forms] == [
        f"/station/visits/{key}/choose"  # the only action: a new visit for this patient
    ]
    [opened] = views(quiet, "station_past_visit")
    assert opened["patient_id"] == "WALK-1" and opened["detail"]["visit"] == key
    assert opened["detail"]["captures"] == [capture] and opened["user_id"] == "operator1"

    thumb = re.search(r'src="(/station/visits/[^"]+/thumbnail\.jpg)"', text)
    assert thumb and client.get(html.unescape(thumb.group(1))).mimetype == "image/jpeg"
    [seen] = views(quiet, "station_past_thumbnail")
    assert seen["detail"] == {"view": "station_past_thumbnail", "path": seen["detail"]["path"],
                              "visit": key, "capture": capture}  # fmt: skip
    assert client.get(f"/station/visits/{key}/captures/99999/thumbnail.jpg").status_code == 404
    assert client.get("/station/visits/study:99999").status_code == 404
    assert client.get(f"/station/visits/{key}/report.pdf").status_code == 404  # no model: none

    # the same patient again (chosen from the earlier visit): it is listed beside the new one
    token = csrf_from(text)
    assert (
        client.post(f"/station/visits/{key}/choose", data={"csrf_token": token}).status_code == 302
    )
    selection = quiet.station.current()
    assert selection is not None and selection.source == "walk-in"
    assert (selection.patient_id, selection.patient_name, selection.birth_date, selection.sex) == (
        "WALK-1", "Lovelace^Ada", "19501210", "F")  # fmt: skip
    assert selection.study_instance_uid != opened["study_instance_uid"]  # a new study
    busy = client.post(f"/station/visits/{key}/choose", data={"csrf_token": token})
    assert busy.status_code == 422 and "Finish that visit first" in busy.get_data(as_text=True)
    assert 'id="station-busy"' in client.get(f"/station/visits/{key}").get_data(as_text=True)
    page = client.get("/station").get_data(as_text=True)
    earlier = re.search(r'id="earlier-visits">.*?</table>', page, re.S)
    assert earlier and f"/station/visits/{key}" in html.unescape(earlier.group(0)).replace(
        "%3A", ":"
    )
    assert views(quiet, "station")[-1]["detail"]["earlier_visits"] == [key]


def test_search_finds_the_patient_links_the_visit_and_is_audited(web: Any, quiet: Services) -> None:
    client = logged_in(web, quiet, "clinician")
    walk_in(client)
    page = client.get("/station").get_data(as_text=True)
    upload(client, page, jpeg_bytes(fundus(seed=5, size=SMALL)), "R")
    _process(quiet)  # today's visit, not finished: found too
    form = client.get("/station/search").get_data(as_text=True)
    assert 'id="patient-search"' in form and audit(quiet, "110112") == []
    assert 'method="post"' in form and 'type="search"' in form
    token = csrf_from(form)
    ignored = client.get("/station/search", query_string={"q": "lovel"})  # never from the URL
    assert "visit-line" not in ignored.get_data(as_text=True)

    found = client.post("/station/search", data={"q": "lovel", "csrf_token": token}).get_data(
        as_text=True
    )
    rows = re.findall(r'<tr class="visit-line"[^>]*data-patient-id="([^"]+)"', found)
    assert rows == ["WALK-1"] and "/station/visits/study" in found
    none = client.post("/station/search", data={"q": "' OR '1'='1", "csrf_token": token})
    assert 'id="search-none"' in none.get_data(as_text=True)
    short = client.post("/station/search", data={"q": "a", "csrf_token": token})
    assert short.status_code == 422 and "at least 2 characters" in short.get_data(as_text=True)
    queries = audit(quiet, "110112")
    assert [q["detail"]["query"] for q in queries] == ["lovel", "' OR '1'='1"]
    assert queries[0]["detail"]["patients"] == ["WALK-1"] and queries[0]["user_id"] == "clinician1"
    assert (
        client.post("/station/search", data={"q": "lovel", "csrf_token": token}).status_code == 200
    )


def test_an_admin_may_not_search_or_reopen_visits(web: Any, quiet: Services) -> None:
    client = logged_in(web, quiet, "admin")
    token = csrf(client, "/admin")
    searched = client.post("/station/search", data={"q": "lovelace", "csrf_token": token})
    assert searched.status_code == 403
    for path in ("/station/visits/study:1", "/station/visits/study:1/report.pdf"):
        assert client.get(path).status_code == 403, path
    chose = client.post("/station/visits/study:1/choose", data={"csrf_token": token})
    assert chose.status_code == 403
    denied = [r for r in audit(quiet, "110113") if r["detail"].get("alert") == "access_denied"]
    assert len(denied) == 4 and audit(quiet, "110112") == []


@pytest.fixture
def models_settings(settings: Settings) -> Settings:
    return settings.replace(models_dir=str(MODELS))


def test_reprint_serves_the_newest_report_signed_once_signed(models_settings: Settings) -> None:
    services = Services(models_settings)
    services.start(dicom=False, hotfolder=False, worker=False)
    try:
        app = create_app(models_settings, services)
        operator = logged_in(app, services, "operator")
        walk_in(operator)
        page = operator.get("/station").get_data(as_text=True)
        for eye in ("L", "R"):
            assert upload(operator, page, _photo(eye), eye).status_code == 201
        _process(services)
        _finish(operator)
        key = services.store.scalar("SELECT visit_key FROM derived_objects WHERE kind = 'pdf'")
        first = operator.get(f"/station/visits/{key}/download")
        assert first.status_code == 200 and first.data.startswith(b"%PDF")
        assert first.headers["Content-Disposition"].startswith("attachment;")

        clinician = logged_in(app, services, "clinician")
        review = clinician.get(f"/review/{key}").get_data(as_text=True)
        outcome_id = review.split('name="outcome_id" value="')[1].split('"')[0]
        signed = clinician.post(f"/review/{key}/sign", data={
            "csrf_token": csrf_from(review), "outcome_id": outcome_id, "decision": "accept",
            "password": PASSWORD})  # fmt: skip
        assert signed.status_code == 303
        newest = services.store.one(
            "SELECT id, sop_instance_uid FROM derived_objects WHERE kind = 'pdf' ORDER BY id DESC"
        )
        assert newest is not None
        past = operator.get(f"/station/visits/{key}").get_data(as_text=True)
        assert 'id="signed-decision"' in past and "Signed by Dr A. Grader, MD" in past
        again = operator.get(f"/station/visits/{key}/report.pdf")
        assert again.headers["Content-Disposition"].startswith("inline;")
        assert again.data != first.data and again.data.startswith(b"%PDF")
        reprints = views(services, "station_reprint")
        assert [r["detail"]["disposition"] for r in reprints] == ["attachment", "inline"]
        assert reprints[-1]["detail"]["document"] == newest["id"]
        assert json.loads(reprints[-1]["sop_instance_uids"]) == [newest["sop_instance_uid"]]
        assert all(r["patient_id"] == "WALK-1" and r["user_id"] == "operator1" for r in reprints)
    finally:
        services.stop()
