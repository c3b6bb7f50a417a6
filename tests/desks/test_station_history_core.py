"""The station desk without the web: the birth date typed YYYY-MM-DD, superseded photographs,
a patient's earlier visits and today's finished ones, patient search, an earlier visit reopened
read-only with its newest report.

The worker does not run by itself here: each test processes what it ingested with
``pipeline.drain()`` and builds the documents owed with ``issue_due()``, so every state is made,
never waited for.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest

from appliance.config import Settings
from appliance.desks.station_history import SEARCH_LIMIT
from appliance.desks.station_view import NotFound
from appliance.errors import RejectedInput
from appliance.runtime.services import Services
from appliance.synth.degrade import defocus
from tests.conftest import fundus, jpeg_bytes

SMALL = (384, 512)
WALK_IN = {"patient_id": "H1", "family_name": "Lovelace", "given_name": "Ada",
           "birth_date": "1950-12-10", "sex": "F"}  # fmt: skip


@pytest.fixture
def quiet(settings: Settings) -> Iterator[Services]:
    """Services whose worker, SCP and hot folder do not run: the test drives the pipeline."""
    svc = Services(settings)
    svc.start(dicom=False, hotfolder=False, worker=False)
    try:
        yield svc
    finally:
        svc.stop()


def _upload(services: Services, fields: dict[str, str], data: bytes, eye: str) -> int:
    capture = services.ingest_upload(data, {**fields, "laterality": eye}, user_id="t", address="")
    return int(capture.id)


def _process(services: Services) -> None:
    while services.pipeline.drain():
        pass
    services.pipeline.issue_due()


def _queries(services: Services) -> list[dict[str, Any]]:
    rows = [r for r in services.audit.rows() if r["event_id"] == "110112"]
    return [{**r, "detail": json.loads(r["detail"])} for r in rows]


# -- the birth date ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("10/12/1950", "Enter the birth date as YYYY-MM-DD"),  # a US locale's picker
        ("10.12.1950", "Enter the birth date as YYYY-MM-DD"),  # a German one
        ("19501210", "Enter the birth date as YYYY-MM-DD"),
        ("1950-1-2", "Enter the birth date as YYYY-MM-DD"),
        ("1950-02-30", "The birth date is not a real date"),
        ("1850-01-01", "is before 1900: check the year"),
        (f"{date.today().year + 1}-01-01", "The birth date is in the future"),
    ],
)
def test_the_birth_date_is_taken_only_as_yyyy_mm_dd(
    quiet: Services, typed: str, message: str
) -> None:
    station = quiet.station
    with pytest.raises(RejectedInput) as refused:
        station.walk_in({**WALK_IN, "birth_date": typed}, user="t", user_pk=None)
    assert message in refused.value.message and refused.value.http_status == 422
    assert typed not in refused.value.message  # what was typed is not repeated (PHI)
    assert station.current() is None
    chosen = station.walk_in(WALK_IN, user="t", user_pk=None)  # still answers
    assert chosen.birth_date == "19501210"  # stored as DICOM DA


# -- superseded photographs ----------------------------------------------------------------------
def test_a_not_gradable_photo_is_superseded_once_a_later_one_of_its_eye_counts(
    quiet: Services,
) -> None:
    station = quiet.station
    selection = station.walk_in(WALK_IN, user="t", user_pk=None)
    fields = selection.fields()
    blurred = jpeg_bytes(defocus(fundus(seed=8, size=SMALL), 0.9))
    first = _upload(quiet, fields, blurred, "R")
    _process(quiet)
    visit = station.visit(selection)
    [only] = visit.captures
    assert only.id == first and only.gradable is False and not only.superseded
    assert {c.eye: c.status for c in visit.eyes}["R"] == "ungradable"

    second = _upload(quiet, fields, jpeg_bytes(fundus(seed=9, size=SMALL)), "R")
    _process(quiet)
    visit = station.visit(selection)
    old, new = visit.captures
    assert (old.id, new.id) == (first, second) and new.gradable is True
    assert old.superseded and not new.superseded
    assert {c.eye: c.status for c in visit.eyes} == {"R": "graded", "L": "missing"}
    prompts = " ".join((visit.outcome or {}).get("prompts", []))
    assert "Right eye" not in prompts and "Left eye: no photograph yet" in prompts

    # a later not-gradable photo of the other eye supersedes nothing
    _upload(quiet, fields, jpeg_bytes(defocus(fundus(seed=10, size=SMALL, eye="L"), 0.9)), "L")
    _process(quiet)
    third = station.visit(selection).captures[2]
    assert third.gradable is False and not third.superseded


def test_an_earlier_photo_is_not_superseded_by_a_gradable_one_taken_before_it(
    quiet: Services,
) -> None:
    station = quiet.station
    fields = station.walk_in(WALK_IN, user="t", user_pk=None).fields()
    _upload(quiet, fields, jpeg_bytes(fundus(seed=9, size=SMALL)), "R")
    _upload(quiet, fields, jpeg_bytes(defocus(fundus(seed=8, size=SMALL), 0.9)), "R")
    _process(quiet)
    selection = station.current()
    assert selection is not None
    good, blurred = station.visit(selection).captures
    assert good.gradable is True and blurred.gradable is False
    assert not blurred.superseded  # it still needs saying it was not gradable: taken after


# -- history, search, reopen ---------------------------------------------------------------------
def _finished_visit(services: Services, patient: dict[str, str], seed: int) -> str:
    """A walk-in, one photo, finished; returns the visit key."""
    station = services.station
    fields = station.walk_in(patient, user="t", user_pk=None).fields()
    capture = _upload(services, fields, jpeg_bytes(fundus(seed=seed, size=SMALL)), "R")
    _process(services)
    station.finish(user="t")
    row = services.store.one("SELECT study_pk FROM captures WHERE id = ?", (capture,))
    assert row is not None
    return f"study:{row['study_pk']}"


def test_earlier_visits_finished_today_and_one_reopened_read_only(quiet: Services) -> None:
    station, history = quiet.station, quiet.station.history
    first = _finished_visit(quiet, WALK_IN, 21)
    other = _finished_visit(quiet, {**WALK_IN, "patient_id": "H2", "family_name": "Moss"}, 22)
    second = _finished_visit(quiet, WALK_IN, 23)
    assert [line.visit_key for line in history.of_patient("H1", "")] == [second, first]
    assert [line.visit_key for line in history.of_patient("H1", "", leave_out=(second,))] == [first]
    finished = history.finished_today(station.station, station.today())
    assert [line.visit_key for line in finished] == [second, other, first]
    assert history.finished_today("ANOTHER-STATION", station.today()) == ()

    shown = history.visit(first)
    assert shown.line.patient_id == "H1" and shown.line.patient_name == "Lovelace^Ada"
    assert [c.gradable for c in shown.captures] == [True] and shown.line.photos == 1
    assert (shown.outcome or {}).get("code") == "no_model" and shown.report_id is None
    assert {c.eye: c.status for c in shown.eyes}["R"] == "graded"
    capture_id = shown.captures[0].id
    _, jpeg = history.thumbnail(first, capture_id)
    assert jpeg.startswith(b"\xff\xd8")
    with pytest.raises(NotFound):  # a photograph of another visit is not served by this one
        history.thumbnail(other, capture_id)
    for bad in ("study:999", "nonsense", "patient:x:2026-01-01", "study:1 OR 1=1"):
        with pytest.raises(NotFound):
            history.visit(bad)
    with pytest.raises(NotFound, match="no report"):
        history.report(first)


def test_search_by_id_or_name_any_case_words_taken_literally_and_audited(quiet: Services) -> None:
    history = quiet.station.history
    _finished_visit(quiet, WALK_IN, 31)
    _finished_visit(quiet, {**WALK_IN, "patient_id": "X-77", "family_name": "O'Brien",
                            "given_name": "Seán"}, 32)  # fmt: skip
    _finished_visit(quiet, {**WALK_IN, "patient_id": "H1%", "family_name": "Pct"}, 33)

    def ids(query: str) -> list[str]:
        return [line.patient_id for line in history.search(query, user="op").visits]

    assert ids("h1") == ["H1%", "H1"]  # the ID from its start, any case
    assert ids("H1%") == ["H1%"]  # a wildcard is taken literally
    assert (
        ids("love") == ["H1"] and ids("ADA lovelace") == ["H1"] and ids("Lovelace, Ada") == ["H1"]
    )
    assert ids("o'brien") == ["X-77"] and ids("brie") == ["X-77"]
    assert ids("SEÁN") == ["X-77"] and ids("x-7") == ["X-77"]  # any case, not ASCII only
    assert ids("' OR 1=1 --") == [] and ids("%%") == [] and ids("__") == []
    assert ids("Ada Moss") == []  # every word must match
    with pytest.raises(RejectedInput, match="at least 2 characters"):
        history.search(" x ", user="op")
    with pytest.raises(RejectedInput, match="at most"):
        history.search("x" * 65, user="op")
    audited = _queries(quiet)
    assert audited[0]["detail"] == {"query_kind": "patient_search", "query": "h1", "matches": 2,
                                    "patients": ["H1", "H1%"]}  # fmt: skip
    assert audited[0]["user_id"] == "op" and audited[0]["outcome"] == 0
    assert len(audited) == 13  # each search that ran, none of the refused ones


def test_search_lists_at_most_the_limit_and_says_there_are_more(quiet: Services) -> None:
    station = quiet.station
    for n in range(SEARCH_LIMIT + 1):
        fields = station.walk_in({**WALK_IN, "patient_id": f"MANY-{n:03}"}, user="t",
                                 user_pk=None).fields()  # fmt: skip
        _upload(quiet, fields, jpeg_bytes(fundus(seed=100 + n, size=(96, 128))), "R")
    result = station.history.search("many", user="op")
    assert len(result.visits) == SEARCH_LIMIT and result.more
    assert not station.history.search("MANY-000", user="op").more


def test_a_returning_patient_is_chosen_again_from_an_earlier_visit(quiet: Services) -> None:
    station = quiet.station
    key = _finished_visit(quiet, WALK_IN, 41)
    busy = station.walk_in({**WALK_IN, "patient_id": "H9"}, user="t", user_pk=None)
    with pytest.raises(RejectedInput, match="Finish that visit first"):
        station.returning(key, user="t", user_pk=None)
    assert station.current() == busy  # untouched
    station.finish(user="t")
    with pytest.raises(NotFound):
        station.returning("study:99999", user="t", user_pk=None)
    again = station.returning(key, user="t", user_pk=None)
    assert (again.patient_id, again.patient_name, again.birth_date, again.sex) == (
        "H1", "Lovelace^Ada", "19501210", "F")  # fmt: skip
    assert (
        again.source == "walk-in"
        and again.study_instance_uid != station.history.visit(key).study_instance_uid
    )
    chosen = [
        r for r in quiet.audit.rows() if r["event_id"] == "110103" and r["patient_id"] == "H1"
    ]
    assert json.loads(chosen[-1]["detail"])["station_selection"] == again.id
