"""Camera station: worklist (a real MWL SCP), walk-in, upload → verdicts and outcome live,
hot-folder identity from the selection, the worklist step in the OP object, audit, report PDF."""

from __future__ import annotations

import html
import io
import json
import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom import AE, evt

from appliance.config import Settings
from appliance.dicom.worklist import MWL_FIND
from appliance.runtime.services import Services
from appliance.synth.degrade import defocus
from tests.conftest import fundus, jpeg_bytes, require_tool, wait_for
from tests.web_helpers import csrf_from, logged_in
from web import create_app

SMALL = (384, 512)
STUDY_UID = "1.2.826.0.1.3680043.8.498.77"


# -- a Modality Worklist SCP (the RIS) -------------------------------------------------------
def _step(patient_id: str, name: str, station: str, day: str, study: str = STUDY_UID) -> Dataset:
    ds = Dataset()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = (
        name,
        patient_id,
        "19520304",
        "M",
    )
    ds.IssuerOfPatientID = ""
    ds.AccessionNumber, ds.RequestedProcedureID = f"ACC-{patient_id}", "RP7"
    ds.StudyInstanceUID = study
    step = Dataset()
    step.ScheduledStationAETitle, step.ScheduledProcedureStepStartDate = station, day
    step.ScheduledProcedureStepStartTime, step.Modality = "1015", "OP"
    step.ScheduledProcedureStepID = "SPS7"
    step.ScheduledProcedureStepDescription = "Diabetic eye screening"
    ds.ScheduledProcedureStepSequence = Sequence([step])
    return ds  # no Request Attributes Sequence: the station builds it from the step


@pytest.fixture
def ris() -> Iterator[int]:
    today = date.today().strftime("%Y%m%d")
    entries = [
        _step("WL1", "Moss^Ada", "SCREENING", today),
        _step("WL2", "Other^Station", "ELSEWHERE", today, "1.2.3.4"),
        _step("WL3", "Tomorrow^Tom", "SCREENING", "20991231", "1.2.3.5"),
    ]

    def on_find(event: Any) -> Any:
        step = event.identifier.ScheduledProcedureStepSequence[0]
        for entry in entries:
            mine = entry.ScheduledProcedureStepSequence[0]
            if step.ScheduledStationAETitle not in ("", mine.ScheduledStationAETitle):
                continue
            if step.ScheduledProcedureStepStartDate not in (
                "",
                mine.ScheduledProcedureStepStartDate,
            ):
                continue
            yield 0xFF00, entry

    from tests.conftest import free_port

    ae = AE(ae_title="RIS")
    ae.add_supported_context(MWL_FIND)
    port = free_port()
    server = ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_FIND, on_find)]
    )
    assert server is not None
    yield port
    server.shutdown()


@pytest.fixture
def worklist_services(settings: Settings, ris: int) -> Iterator[Services]:
    svc = Services(settings.replace(worklist_host="127.0.0.1", worklist_port=ris,
                                    worklist_ae_title="RIS"))  # fmt: skip
    svc.start(dicom=False, hotfolder=False)
    try:
        yield svc
    finally:
        svc.stop()


# -- helpers -----------------------------------------------------------------------------------
def audit(services: Services, event_id: str) -> list[dict[str, Any]]:
    return [
        {**row, "detail": json.loads(row["detail"])}
        for row in services.audit.rows()
        if row["event_id"] == event_id
    ]


def views(services: Services, what: str) -> list[dict[str, Any]]:
    return [r for r in audit(services, "110103") if r["detail"].get("view") == what]


def upload_fields(page: str) -> dict[str, str]:
    form = re.search(r'<form id="upload".*?</form>', page, re.S)
    assert form, "no upload form on the page"
    hidden = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form.group(0))
    return {name: html.unescape(value) for name, value in hidden}


def upload(client: Any, page: str, data: bytes, eye: str) -> Any:
    body: dict[str, Any] = {**upload_fields(page), "laterality": eye}
    body["file"] = (io.BytesIO(data), "photo.jpg")
    return client.post(
        "/api/captures",
        data=body,
        headers={"X-CSRFToken": csrf_from(page), "Accept": "application/json"},
        content_type="multipart/form-data",
    )


def walk_in(client: Any, **fields: str) -> Any:
    page = client.get("/station").get_data(as_text=True)
    form = {"patient_id": "WALK-1", "family_name": "Lovelace", "given_name": "Ada",
            "birth_date": "1950-12-10", "sex": "F", **fields}  # fmt: skip
    return client.post("/station/walk-in", data={**form, "csrf_token": csrf_from(page)})


def fragment(client: Any) -> str:
    response = client.get("/station/visit")
    assert response.status_code == 200
    return str(response.get_data(as_text=True))


def assert_no_inline_code(page: str) -> None:
    assert "<script>" not in page and "style=" not in page and " on" + "click=" not in page


# -- the page ----------------------------------------------------------------------------------
def test_without_a_worklist_the_page_says_so_and_offers_walk_in(
    app: Any, services: Services
) -> None:
    client = logged_in(app, services, "operator")
    page = client.get("/station").get_data(as_text=True)
    assert "No worklist is set up on this appliance" in page
    assert 'id="walk-in"' in page and 'name="patient_id"' in page and 'type="date"' not in page
    assert 'href="/static/station.css"' in page
    assert_no_inline_code(page)
    assert audit(services, "110112") == []  # nothing was asked


def test_an_unreachable_worklist_is_said_plainly_and_audited(settings: Settings) -> None:
    from tests.conftest import free_port

    services = Services(settings.replace(worklist_host="127.0.0.1", worklist_port=free_port(),
                                         worklist_ae_title="RIS"))  # fmt: skip
    try:
        client = logged_in(create_app(settings, services), services, "operator")
        page = client.get("/station").get_data(as_text=True)
        assert "The worklist could not be reached." in page
        assert 'id="walk-in"' in page  # walk-in still offered
        [query] = audit(services, "110112")
        assert query["outcome"] == 8 and query["user_id"] == "operator1"
        assert "error" in query["detail"] and query["detail"]["station_ae"] == "SCREENING"
    finally:
        services.stop()


def test_worklist_choose_upload_and_the_op_carries_the_step(
    worklist_services: Services, settings: Settings, tmp_path: Path
) -> None:
    services = worklist_services
    client = logged_in(create_app(services.settings, services), services, "operator")
    page = client.get("/station").get_data(as_text=True)
    # today's steps for this station's AE title only
    assert "Moss, Ada" in page and "WL1" in page and "ACC-WL1" in page
    assert "WL2" not in page and "WL3" not in page
    assert page.count(">Choose</button>") == 1
    [query] = audit(services, "110112")
    assert query["outcome"] == 0 and query["detail"]["matches"] == 1
    assert query["detail"]["date"] == date.today().strftime("%Y%m%d")
    assert views(services, "station_worklist")[0]["detail"]["worklist_patients"] == ["WL1"]

    key = re.search(r'name="key" value="([^"]+)"', page)
    assert key
    chosen = client.post(
        "/station/choose", data={"key": key.group(1), "csrf_token": csrf_from(page)}
    )
    assert chosen.status_code == 302 and chosen.headers["Location"] == "/station"
    row = services.store.one("SELECT * FROM station_selections WHERE cleared_at IS NULL")
    assert row is not None and row["source"] == "worklist" and row["patient_id"] == "WL1"
    assert row["study_instance_uid"] == STUDY_UID and row["accession_number"] == "ACC-WL1"
    assert json.loads(row["request_json"]) == [
        {
            "RequestedProcedureID": "RP7",
            "ScheduledProcedureStepID": "SPS7",
            "AccessionNumber": "ACC-WL1",
            "ScheduledProcedureStepDescription": "Diabetic eye screening",
        }
    ]
    page = client.get("/station").get_data(as_text=True)
    assert 'id="visit"' in page and 'data-refresh="/station/visit"' in page
    assert upload_fields(page)["study_instance_uid"] == STUDY_UID
    assert_no_inline_code(page)

    response = upload(client, page, jpeg_bytes(fundus(seed=21, size=SMALL)), "R")
    assert response.status_code == 201, response.get_data(as_text=True)
    op = wait_for(
        lambda: services.store.one("SELECT * FROM derived_objects WHERE kind = 'op'"), timeout=30
    )
    ds = pydicom.dcmread(settings.data_path / op["file_path"])
    assert ds.PatientID == "WL1" and str(ds.PatientName) == "Moss^Ada"
    assert ds.StudyInstanceUID == STUDY_UID and ds.AccessionNumber == "ACC-WL1"
    [request] = ds.RequestAttributesSequence
    assert (request.RequestedProcedureID, request.ScheduledProcedureStepID) == ("RP7", "SPS7")
    assert request.AccessionNumber == "ACC-WL1"
    assert op["visit_key"].startswith("study:")
    path = tmp_path / "op.dcm"
    path.write_bytes((settings.data_path / op["file_path"]).read_bytes())
    run = subprocess.run([require_tool("dciodvfy"), str(path)], capture_output=True, text=True)
    output = run.stdout + run.stderr
    assert [line for line in output.splitlines() if line.startswith("Error")] == [], output


def test_walk_in_is_checked_like_a_sidecar(app: Any, services: Services) -> None:
    client = logged_in(app, services, "operator")
    refused = {
        "birth_date": ("2021-02-30", "not a real date"),
        "patient_id": ("", "Enter the patient's ID"),
        "sex": ("X", "sex must be M, F or O"),
        "family_name": ("Love^lace", "Names must not contain"),
    }
    for field, (value, message) in refused.items():
        response = walk_in(client, **{field: value})
        assert response.status_code == 422, field
        page = response.get_data(as_text=True)
        assert message in html.unescape(page), (field, page)
        assert 'value="Lovelace"' in page or field == "family_name"  # the form keeps its values
    future = walk_in(client, birth_date=f"{date.today().year + 1}-01-01")
    assert "in the future" in future.get_data(as_text=True)
    assert services.store.scalar("SELECT count(*) FROM station_selections") == 0

    assert walk_in(client).status_code == 302
    row = services.store.one("SELECT * FROM station_selections")
    assert row is not None and row["source"] == "walk-in" and row["request_json"] == "[]"
    assert row["patient_name"] == "Lovelace^Ada" and row["birth_date"] == "19501210"
    assert re.fullmatch(r"2\.25\.\d+", row["study_instance_uid"])  # a study made for the visit
    [chosen] = [r for r in audit(services, "110103") if "station_selection" in r["detail"]]
    assert chosen["patient_id"] == "WALK-1" and chosen["user_id"] == "operator1"

    # the same ID with another name is someone else: refused, not merged
    client.post("/station/finish", data={"csrf_token": csrf_from(client.get("/station").text)})
    services.ingest_upload(jpeg_bytes(fundus(seed=3, size=SMALL)),
                           {"patient_id": "KNOWN-9", "patient_name": "Known^Kim"},
                           user_id="t", address="")  # fmt: skip
    clash = walk_in(client, patient_id="KNOWN-9")
    assert clash.status_code == 422
    assert "already registered with a different name" in clash.get_data(as_text=True)


def test_upload_shows_verdicts_and_outcome_live_audited_once_per_change(
    app: Any, services: Services, settings: Settings
) -> None:
    client = logged_in(app, services, "operator")
    assert walk_in(client).status_code == 302
    page = client.get("/station").get_data(as_text=True)
    assert len(views(services, "station")) == 1
    assert "No photos yet" in fragment(client)

    response = upload(client, page, jpeg_bytes(fundus(seed=7, size=SMALL)), "R")
    assert response.status_code == 201
    done = wait_for(lambda: (lambda f: 'id="outcome"' in f and f)(fragment(client)), timeout=30)
    assert 'class="capture ok"' in done and "✓</span> Gradable" in done
    assert "Right eye" in done and ("Macula-centred" in done or "Disc-centred" in done)
    assert "No screening model installed — images were checked for quality only." in done
    assert "No report: no screening model is installed" in done
    assert "Right eye:</strong> done" in done and "Left eye:</strong> not photographed yet" in done

    # the capture belongs to the selection's study, and the visit is keyed by it
    selection = services.station.current()
    assert selection is not None
    study = services.store.one(
        "SELECT s.id, s.study_instance_uid FROM captures c JOIN studies s ON s.id = c.study_pk"
    )
    assert study is not None and study["study_instance_uid"] == selection.study_instance_uid
    keys = {r["visit_key"] for r in services.store.query("SELECT visit_key FROM visit_outcomes")}
    assert keys == {f"study:{study['id']}"}

    # polling an unchanged visit adds nothing to the audit trail ...
    seen = len(views(services, "station_visit"))
    assert seen >= 1
    for _ in range(3):
        fragment(client)
    assert len(views(services, "station_visit")) == seen
    event = views(services, "station_visit")[-1]
    assert event["patient_id"] == "WALK-1" and event["user_id"] == "operator1"
    assert event["study_instance_uid"] == selection.study_instance_uid

    # ... a new photo (here a blurred one, with its retake advice) is a new view
    blurred = jpeg_bytes(defocus(fundus(seed=8, size=SMALL, eye="L"), 0.9))  # a left eye
    assert upload(client, page, blurred, "L").status_code == 201
    later = wait_for(
        lambda: (lambda f: f.count('data-state="checked"') == 2 and f)(fragment(client)), timeout=30
    )
    assert 'class="capture bad"' in later and "✗</span> Not gradable — take it again" in later
    assert "Out of focus" in later or "out of focus" in later
    assert "Left eye:</strong> take it again" in later
    assert len(views(services, "station_visit")) > seen

    # thumbnails: small JPEGs of the stored photos, each view audited
    capture_id = int(re.findall(r'id="capture-(\d+)"', later)[0])
    thumb = client.get(f"/station/captures/{capture_id}/thumbnail.jpg")
    assert thumb.status_code == 200 and thumb.mimetype == "image/jpeg"
    with Image.open(io.BytesIO(thumb.data)) as img:
        assert max(img.size) <= 320
    [shown] = views(services, "station_thumbnail")
    assert shown["patient_id"] == "WALK-1" and shown["detail"]["capture"] == capture_id
    assert client.get("/station/captures/999/thumbnail.jpg").status_code == 404


def test_polling_the_fragment_does_not_keep_a_session_alive(app: Any, services: Services) -> None:
    client = logged_in(app, services, "operator")
    walk_in(client)
    idle = (datetime.now(UTC) - timedelta(minutes=10)).isoformat(timespec="milliseconds")
    with services.store.write() as tx:
        tx.execute("UPDATE web_sessions SET last_seen_at = ?", (idle,))
    for _ in range(3):
        assert 'id="checklist"' in fragment(client)
    assert services.store.scalar("SELECT last_seen_at FROM web_sessions") == idle
    client.get("/station")  # a real page view is activity
    assert services.store.scalar("SELECT last_seen_at FROM web_sessions") != idle


def test_hotfolder_files_without_identity_take_the_selection(
    app: Any, services: Services, settings: Settings
) -> None:
    client = logged_in(app, services, "operator")
    walk_in(client)
    selection = services.station.current()
    assert selection is not None
    (settings.inbox_path / "IMG_0001.jpg").write_bytes(jpeg_bytes(fundus(seed=31, size=SMALL)))
    row = wait_for(
        lambda: services.store.one(
            "SELECT p.patient_id, s.study_instance_uid, c.source FROM captures c "
            "JOIN patients p ON p.id = c.patient_pk JOIN studies s ON s.id = c.study_pk"
        )
    )
    assert row == {"patient_id": "WALK-1", "study_instance_uid": selection.study_instance_uid,
                   "source": "hotfolder"}  # fmt: skip
    [imported] = [r for r in audit(services, "110107") if r["detail"].get("capture_id")]
    assert imported["detail"]["identity"] == "station_selection"
    assert imported["patient_id"] == "WALK-1"
    assert "Photo 1" in wait_for(lambda: (lambda f: "Photo 1" in f and f)(fragment(client)))

    # after "next patient" a file with no identity stays anonymous
    client.post("/station/finish", data={"csrf_token": csrf_from(client.get("/station").text)})
    assert services.station.current() is None
    (settings.inbox_path / "IMG_0002.jpg").write_bytes(jpeg_bytes(fundus(seed=32, size=SMALL)))
    wait_for(lambda: services.store.scalar("SELECT count(*) FROM captures") == 2)
    assert services.store.scalar("SELECT patient_pk FROM captures ORDER BY id DESC") is None


def test_finish_clears_the_selection_and_shows_the_worklist_again(
    app: Any, services: Services
) -> None:
    client = logged_in(app, services, "clinician")
    walk_in(client)
    page = client.get("/station").get_data(as_text=True)
    assert 'id="finish"' in page and "Lovelace, Ada" in page
    response = client.post("/station/finish", data={"csrf_token": csrf_from(page)})
    assert response.status_code == 302
    row = services.store.one("SELECT cleared_at FROM station_selections")
    assert row is not None and row["cleared_at"]
    page = client.get("/station").get_data(as_text=True)
    assert 'id="walk-in"' in page and "Lovelace, Ada" not in page
    assert "No patient is chosen" in fragment(client)


def test_a_complete_visit_offers_the_report_to_print_and_download(
    settings: Settings, ris: int, tmp_path: Path
) -> None:
    """A worklist patient, both eyes, the shipped models → the report, served plain from the
    stored Encapsulated PDF, which carries the worklist step like the OPs (dciodvfy clean)."""
    from appliance.synth.case import render_case
    from appliance.synth.dataset import case_for

    models = Path(__file__).resolve().parents[2] / "models"
    services = Services(settings.replace(models_dir=str(models), worklist_host="127.0.0.1",
                                         worklist_port=ris, worklist_ae_title="RIS"))  # fmt: skip
    services.start(dicom=False, hotfolder=False)
    try:
        client = logged_in(create_app(services.settings, services), services, "operator")
        page = client.get("/station").get_data(as_text=True)
        key = re.search(r'name="key" value="([^"]+)"', page)
        assert key
        client.post("/station/choose", data={"key": key.group(1), "csrf_token": csrf_from(page)})
        page = client.get("/station").get_data(as_text=True)
        for eye in ("L", "R"):
            case = next(
                c for c in (case_for(6160, i, (600, 800)) for i in range(200))
                if c.eye == eye and c.field == "macula" and c.defect is None
            )  # fmt: skip
            assert upload(client, page, jpeg_bytes(render_case(case)), eye).status_code == 201
        done = wait_for(
            lambda: (lambda f: 'id="report-download"' in f and f)(fragment(client)), timeout=120
        )
        assert "Right eye:</strong> done" in done and "Left eye:</strong> done" in done
        outcome = re.search(r'<div id="outcome" class="outcome (\w+)"', done)
        assert outcome and outcome.group(1) not in ("no_model", "incomplete")
        assert "No screening model" not in done

        link = re.search(r'id="report-download" href="([^"]+)"', done)
        assert link
        download = client.get(link.group(1))
        assert download.status_code == 200 and download.mimetype == "application/pdf"
        assert download.headers["Content-Disposition"].startswith("attachment; filename=")
        assert download.data.startswith(b"%PDF") and download.data.rstrip().endswith(b"%%EOF")
        printed = client.get(re.search(r'id="report-print" href="([^"]+)"', done).group(1))  # type: ignore[union-attr]
        assert printed.headers["Content-Disposition"].startswith("inline;")
        assert printed.data == download.data
        assert "frame-ancestors 'none'" in printed.headers["Content-Security-Policy"]
        reports = views(services, "station_report")
        assert [r["detail"]["disposition"] for r in reports] == ["attachment", "inline"]
        assert all(r["patient_id"] == "WL1" and r["sop_instance_uids"] for r in reports)
        for kind in ("pdf", "sr"):
            row = services.store.one(
                "SELECT file_path FROM derived_objects WHERE kind = ? ORDER BY id DESC", (kind,)
            )
            assert row is not None
            path = tmp_path / f"{kind}.dcm"
            path.write_bytes((settings.data_path / row["file_path"]).read_bytes())
            ds = pydicom.dcmread(path)
            assert ds.StudyInstanceUID == STUDY_UID and ds.AccessionNumber == "ACC-WL1"
            if kind == "pdf":
                assert ds.RequestAttributesSequence[0].ScheduledProcedureStepID == "SPS7"
            run = subprocess.run([require_tool("dciodvfy"), str(path)], capture_output=True,
                                 text=True)  # fmt: skip
            errors = [x for x in (run.stdout + run.stderr).splitlines() if x.startswith("Error")]
            assert errors == [], kind
    finally:
        services.stop()
