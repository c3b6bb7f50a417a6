"""Clinician review through the Flask test client with real services and the shipped models."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path
from typing import Any

import pydicom
import pytest

from appliance.capture import Incoming
from appliance.config import Destination, Settings
from appliance.domain import Source
from tests.conftest import free_port, jpeg_bytes, require_tool, wait_for
from tests.web_helpers import PASSWORD, csrf, logged_in

MODELS = Path(__file__).resolve().parents[2] / "models"
OUTCOME_CODES = {
    "refer": "RS011",
    "rescreen": "RS012",
    "retake": "RS013",
    "glaucoma_refer": "RS014",
}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shipped models, and one archive (nobody listens: jobs stay queued)."""
    archive = Destination(name="pacs", host="127.0.0.1", port=free_port(), ae_title="PACS")
    return settings.replace(models_dir=str(MODELS), destinations=(archive,))


def _photo(eye: str, seed: int = 6160) -> bytes:
    from appliance.synth.case import render_case
    from appliance.synth.dataset import case_for

    case = next(
        c for c in (case_for(seed, i, (600, 800)) for i in range(200))
        if c.eye == eye and c.field == "macula" and c.defect is None
    )  # fmt: skip
    return jpeg_bytes(render_case(case))


def _visit(
    services: Any, eyes: tuple[str, ...] = ("L", "R"), patient: str = "REV1", seed: int = 6160
) -> str:
    """Ingest one photograph per eye; wait for the outcome (and the SR when complete)."""
    for eye in eyes:
        services.ingestor.ingest(
            Incoming(
                data=_photo(eye, seed),
                source=Source.UPLOAD,
                user_id="t",
                fields={"patient_id": patient, "patient_name": "Roe^Ann", "laterality": eye},
            )
        )
    wait_for(lambda: services.pipeline.pending() == 0, timeout=60)
    row = wait_for(
        lambda: services.store.one(
            "SELECT vo.visit_key, vo.payload FROM visit_outcomes vo "
            "JOIN patients p ON p.id = vo.patient_pk WHERE p.patient_id = ? "
            "ORDER BY vo.id DESC LIMIT 1",
            (patient,),
        )
    )
    key = str(row["visit_key"])
    if json.loads(row["payload"])["complete"]:
        wait_for(lambda: _srs(services, key), timeout=60)
    return key


def _srs(services: Any, key: str) -> list[dict[str, Any]]:
    return services.store.query(
        "SELECT * FROM derived_objects WHERE visit_key = ? AND kind = 'sr' ORDER BY id", (key,)
    )


def _form(client: Any, key: str, **fields: str) -> dict[str, str]:
    html = client.get(f"/review/{key}").get_data(as_text=True)
    outcome_id = html.split('name="outcome_id" value="')[1].split('"')[0]
    token = csrf(client, f"/review/{key}")
    return {"csrf_token": token, "outcome_id": outcome_id, "password": PASSWORD, **fields}


def _read(services: Any, uid: str) -> pydicom.Dataset:
    row = services.store.one(
        "SELECT file_path FROM derived_objects WHERE sop_instance_uid = ?", (uid,)
    )
    return pydicom.dcmread(io.BytesIO(services.blobs.read(row["file_path"])))


def _predecessors(ds: pydicom.Dataset) -> set[str]:
    return {
        ref.ReferencedSOPInstanceUID
        for study in ds.get("PredecessorDocumentsSequence", [])
        for series in study.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    }


def _evaluations(ds: pydicom.Dataset) -> dict[str, Any]:
    container = next(
        i for i in ds.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "C0034375"
    )
    out: dict[str, Any] = {}
    for item in container.ContentSequence:
        name = item.ConceptNameCodeSequence[0].CodeMeaning
        out[name] = (
            item.ConceptCodeSequence[0].CodeValue if item.ValueType == "CODE" else item.TextValue
        )
    return out


def _grades(ds: pydicom.Dataset) -> dict[str, tuple[str, bool]]:
    """Eye → (DR severity answer code, group has an Algorithm Identification)."""
    groups = next(
        i for i in ds.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "126010"
    ).ContentSequence
    out = {}
    for group in groups:
        by_name = {i.ConceptNameCodeSequence[0].CodeValue: i for i in group.ContentSequence}
        eye = "R" if "71491-5" in by_name else "L"
        severity = by_name["71491-5" if eye == "R" else "71490-7"]
        out[eye] = (severity.ConceptCodeSequence[0].CodeValue, "111001" in by_name)
    return out


def _dciodvfy_errors(ds: pydicom.Dataset, tmp_path: Path) -> list[str]:
    from appliance.dicom.op import to_bytes

    path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
    path.write_bytes(to_bytes(ds))
    run = subprocess.run([require_tool("dciodvfy"), str(path)], capture_output=True, text=True)
    output = run.stdout + run.stderr
    assert "Comprehensive3DSR" in output
    dump = subprocess.run([require_tool("dsrdump"), str(path)], capture_output=True, text=True)
    assert dump.returncode == 0 and "VERIFIED" in dump.stdout, dump.stderr
    return [line for line in output.splitlines() if line.startswith("Error")]


def test_list_view_photo_heatmap_and_the_view_is_audited(app: Any, services: Any) -> None:
    key = _visit(services)
    client = logged_in(app, services, "clinician")

    listing = client.get("/review")
    html = listing.get_data(as_text=True)
    assert listing.status_code == 200 and 'id="visits"' in html
    assert f'href="/review/{key}"' in html and "Roe, Ann" in html and "REV1" in html
    assert "Waiting" in html and "<script>" not in html and "style=" not in html

    page = client.get(f"/review/{key}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "Right eye" in html and "Left eye" in html
    assert "retina-dr-demo 0.1.0" in html and "Cup-to-disc ratio" in html
    assert html.count("data-toggle-overlay=") == 2 and html.count("data-zoom=") == 2
    assert 'id="decision"' in html and 'name="decision" value="accept"' in html
    assert 'name="outcome_code"' in html and 'name="reason"' in html and ">Sign</button>" in html
    assert 'name="csrf_token"' in html and "style=" not in html and "<script>" not in html
    assert "review.css" in html and "review.js" in html

    captures = [r["id"] for r in services.store.query("SELECT id FROM captures ORDER BY id")]
    photo = client.get(f"/review/{key}/photo/{captures[0]}")
    assert photo.status_code == 200 and photo.mimetype == "image/jpeg"
    assert photo.data[:3] == b"\xff\xd8\xff"
    heat = client.get(f"/review/{key}/heatmap/{captures[0]}")
    assert heat.status_code == 200 and heat.data[:8] == b"\x89PNG\r\n\x1a\n"
    assert client.get(f"/review/{key}/photo/999").status_code == 404
    assert client.get("/review/patient:999:2020-01-01").status_code == 404
    assert client.get("/review/nonsense").status_code == 404

    ops = {
        r["sop_instance_uid"]
        for r in services.store.query(
            "SELECT sop_instance_uid FROM derived_objects WHERE kind = 'op'"
        )
    }
    event = services.store.one(
        "SELECT * FROM audit_events WHERE event_id = '110103' AND user_id = 'clinician1' "
        "AND detail LIKE '%review visit%' ORDER BY seq DESC LIMIT 1"
    )
    assert event is not None and event["patient_id"] == "REV1" and event["action"] == "R"
    assert set(json.loads(event["sop_instance_uids"])) == ops
    study = services.store.scalar("SELECT study_instance_uid FROM derived_objects LIMIT 1")
    assert event["study_instance_uid"] == study
    assert logged_in(app, services, "operator").get(f"/review/{key}").status_code == 403


def test_a_photograph_without_a_heatmap_is_shown_whole(app: Any, services: Any) -> None:
    import numpy as np
    from PIL import Image

    grey = np.full((300, 400, 3), 90, np.uint8)  # not a fundus photograph: no model result
    capture = services.ingestor.ingest(
        Incoming(
            data=jpeg_bytes(grey),
            source=Source.UPLOAD,
            user_id="t",
            fields={"patient_id": "REV9", "laterality": "R"},
        )
    )
    wait_for(lambda: services.pipeline.pending() == 0, timeout=60)
    key = wait_for(lambda: services.store.scalar("SELECT visit_key FROM visit_outcomes"))
    client = logged_in(app, services, "clinician")
    html = client.get(f"/review/{key}").get_data(as_text=True)
    assert "No heatmap" in html and "data-toggle-overlay" not in html and "Ungradable" in html
    photo = client.get(f"/review/{key}/photo/{capture.id}")
    assert photo.status_code == 200 and Image.open(io.BytesIO(photo.data)).size == (400, 300)
    assert client.get(f"/review/{key}/heatmap/{capture.id}").status_code == 404


def test_accept_issues_a_verified_sr_that_replaces_the_preliminary(
    app: Any, services: Any, tmp_path: Path
) -> None:
    key = _visit(services)
    preliminary = _srs(services, key)[-1]
    client = logged_in(app, services, "clinician")
    response = client.post(f"/review/{key}/sign", data=_form(client, key, decision="accept"))
    assert response.status_code == 303, response.get_data(as_text=True)

    review = services.store.one("SELECT * FROM reviews")
    assert review["decision"] == "accept" and review["visit_key"] == key
    model = services.store.one(
        "SELECT code FROM visit_outcomes WHERE visit_key = ? ORDER BY id DESC LIMIT 1", (key,)
    )
    assert review["outcome_code"] == model["code"]
    ds = _read(services, review["sr_sop_instance_uid"])
    assert ds.VerificationFlag == "VERIFIED" and ds.PreliminaryFlag == "FINAL"
    observer = ds.VerifyingObserverSequence[0]
    name = observer.VerifyingObserverName  # the full name as a PN
    assert (name.family_name, name.given_name, name.name_prefix) == ("Grader", "A.", "Dr")
    assert observer.VerifyingOrganization == "Retinal screening, station STATION1"
    assert observer.VerificationDateTime.endswith("+0000")
    assert _predecessors(ds) == {preliminary["sop_instance_uid"]}
    old = _read(services, preliminary["sop_instance_uid"])
    assert ds.StudyInstanceUID == old.StudyInstanceUID and ds.PatientID == "REV1"
    assert ds.SeriesInstanceUID == old.SeriesInstanceUID and ds.InstanceNumber == 2
    assert _evaluations(ds)["Clinician review"] == "RS016"  # accepted
    outcome = OUTCOME_CODES[model["code"]]
    assert (
        _evaluations(old)["Screening outcome"] == outcome == _evaluations(ds)["Screening outcome"]
    )
    assert {eye: algo for eye, (_, algo) in _grades(ds).items()} == {"R": True, "L": True}
    assert _dciodvfy_errors(ds, tmp_path) == []

    jobs = services.store.query(
        "SELECT * FROM outbox_jobs WHERE sop_instance_uid = ?", (ds.SOPInstanceUID,)
    )
    assert [(j["kind"], j["destination"]) for j in jobs] == [("sr", "pacs")]
    pdf = _read(services, review["pdf_sop_instance_uid"])
    assert pdf.VerificationFlag == "VERIFIED"
    first_pdf = services.store.one(
        "SELECT sop_instance_uid FROM derived_objects WHERE visit_key = ? AND kind = 'pdf' "
        "ORDER BY id LIMIT 1",
        (key,),
    )["sop_instance_uid"]
    assert _predecessors(pdf) == {first_pdf}
    pdf_jobs = services.store.query(
        "SELECT kind, destination FROM outbox_jobs WHERE sop_instance_uid = ?",
        (pdf.SOPInstanceUID,),
    )
    assert [(j["kind"], j["destination"]) for j in pdf_jobs] == [("pdf", "pacs")]
    event = services.store.one(
        "SELECT * FROM audit_events WHERE action = 'C' AND user_id = 'clinician1'"
    )
    detail = json.loads(event["detail"])
    assert detail["decision"] == "accept" and detail["meaning"] == "reviewed and approved"
    assert detail["signer_name"] == "Dr A. Grader" and detail["signer_credentials"] == "MD"
    assert detail["signed_pdf"] == pdf.SOPInstanceUID
    assert ds.SOPInstanceUID in json.loads(event["sop_instance_uids"])

    page = client.get("/review").get_data(as_text=True)
    assert "accepted" in page and "Dr A. Grader, MD" in page
    assert services.audit.verify().ok


def test_override_needs_a_reason_then_carries_the_clinicians_values(
    app: Any, services: Any, tmp_path: Path
) -> None:
    key = _visit(services)
    preliminary = _srs(services, key)[-1]["sop_instance_uid"]
    client = logged_in(app, services, "clinician")

    missing = client.post(
        f"/review/{key}/sign",
        data=_form(client, key, decision="override", outcome_code="refer", grade_R="3"),
    )
    assert missing.status_code == 422
    assert "A reason is required to override" in missing.get_data(as_text=True)
    contradiction = client.post(
        f"/review/{key}/sign",
        data=_form(client, key, decision="override", outcome_code="rescreen", grade_L="2",
                   reason="x"),
    )  # fmt: skip
    assert contradiction.status_code == 422
    assert "Rescreen contradicts" in contradiction.get_data(as_text=True)
    half = client.post(
        f"/review/{key}/sign", data=_form(client, key, decision="accept", grade_R="3")
    )
    assert half.status_code == 422 and "choose Override" in half.get_data(as_text=True)
    bad = client.post(f"/review/{key}/sign", data=_form(client, key, decision="override",
                      outcome_code="refer", grade_R="7", reason="x"))  # fmt: skip
    assert bad.status_code == 422 and "0 (none) to 4" in bad.get_data(as_text=True)
    assert services.store.scalar("SELECT count(*) FROM reviews") == 0
    assert client.post(f"/review/{key}/sign", data={"decision": "accept"}).status_code == 400

    reason = "Severe NPDR: 4-quadrant haemorrhages missed by the model"
    done = client.post(
        f"/review/{key}/sign",
        data=_form(client, key, decision="override", outcome_code="refer", grade_R="3",
                   reason=reason),
    )  # fmt: skip
    assert done.status_code == 303
    review = services.store.one("SELECT * FROM reviews")
    assert (review["decision"], review["outcome_code"], review["reason"]) == (
        "override",
        "refer",
        reason,
    )
    ds = _read(services, review["sr_sop_instance_uid"])
    assert ds.VerificationFlag == "VERIFIED" and _predecessors(ds) == {preliminary}
    grades = _grades(ds)
    assert grades["R"] == ("LA18646-2", False)  # severe NPDR, set by the clinician
    assert grades["L"][1] is True  # the model's grade, still attributed to the algorithm
    evaluations = _evaluations(ds)
    assert evaluations["Screening outcome"] == "RS011"  # refer
    assert evaluations["Clinician review"] == "RS017" and evaluations["Comment"] == reason
    assert _dciodvfy_errors(ds, tmp_path) == []
    assert (
        services.store.scalar(
            "SELECT count(*) FROM outbox_jobs WHERE sop_instance_uid = ?", (ds.SOPInstanceUID,)
        )
        == 1
    )
    event = services.store.one(
        "SELECT * FROM audit_events WHERE action = 'C' AND user_id = 'clinician1'"
    )
    detail = json.loads(event["detail"])
    assert (detail["decision"], detail["reason"], detail["grades"]) == (
        "override",
        reason,
        {"R": 3},
    )
    assert event["user_id"] == "clinician1" and event["patient_id"] == "REV1"

    # an amendment references the earlier sign-off as well as the preliminary report
    again = client.post(
        f"/review/{key}/sign", data=_form(client, key, decision="accept", reason="agreed")
    )
    assert again.status_code == 303
    second = services.store.one("SELECT * FROM reviews ORDER BY id DESC LIMIT 1")
    amended = _read(services, second["sr_sop_instance_uid"])
    assert _predecessors(amended) == {preliminary, ds.SOPInstanceUID}
    assert amended.InstanceNumber == ds.InstanceNumber + 1


def test_an_incomplete_visit_is_signed_by_override_without_a_predecessor(
    app: Any, services: Any, tmp_path: Path
) -> None:
    key = _visit(services, eyes=("R",), patient="REV2")
    assert _srs(services, key) == []
    client = logged_in(app, services, "clinician")
    html = client.get(f"/review/{key}").get_data(as_text=True)
    assert 'id="no-preliminary"' in html and "protocol is not complete" in html

    refused = client.post(f"/review/{key}/sign", data=_form(client, key, decision="accept"))
    assert refused.status_code == 422
    assert "no complete automated result to accept" in refused.get_data(as_text=True)
    no_outcome = client.post(
        f"/review/{key}/sign", data=_form(client, key, decision="override", reason="x")
    )
    assert no_outcome.status_code == 422 and "Choose the outcome" in no_outcome.get_data(
        as_text=True
    )
    done = client.post(
        f"/review/{key}/sign",
        data=_form(client, key, decision="override", outcome_code="retake",
                   reason="Left eye not photographed; patient to return"),
    )  # fmt: skip
    assert done.status_code == 303
    review = services.store.one("SELECT * FROM reviews")
    ds = _read(services, review["sr_sop_instance_uid"])
    assert ds.VerificationFlag == "VERIFIED" and "PredecessorDocumentsSequence" not in ds
    assert _evaluations(ds)["Screening outcome"] == "RS013"  # retake
    assert _dciodvfy_errors(ds, tmp_path) == []


def test_a_page_opened_before_new_photographs_cannot_be_signed(app: Any, services: Any) -> None:
    key = _visit(services, eyes=("R",), patient="REV3")
    client = logged_in(app, services, "clinician")
    stale = _form(client, key, decision="override", outcome_code="retake", reason="x")
    _visit(services, eyes=("L",), patient="REV3")  # the left eye arrives meanwhile
    response = client.post(f"/review/{key}/sign", data=stale)
    assert response.status_code == 409
    assert "New photographs changed this visit" in response.get_data(as_text=True)
    assert services.store.scalar("SELECT count(*) FROM reviews") == 0


def test_the_list_puts_waiting_referrals_first(app: Any, services: Any) -> None:
    from appliance.store import utcnow

    with services.store.write() as tx:
        for n, code in enumerate(("rescreen", "refer", "retake", "human_grading", "refer")):
            payload = {"code": code, "text": f"{code} words", "urgency": "routine", "eyes": []}
            tx.insert(
                "visit_outcomes",
                {
                    "visit_key": f"capture:{n + 1}",
                    "code": code,
                    "rule_set": "test@1",
                    "payload": json.dumps(payload),
                    "created_at": utcnow(),
                },
            )
    codes = [v.code for v in services.review.visits()]
    assert codes == ["refer", "refer", "human_grading", "retake", "rescreen"]
    client = logged_in(app, services, "clinician")
    html = client.get("/review").get_data(as_text=True)
    assert html.count('<span class="badge bad"><span aria-hidden="true">⚠</span> Refer</span>') == 2
    assert '<span aria-hidden="true">⚠</span> Human grading</span>' in html
    event = services.store.one(
        "SELECT detail FROM audit_events WHERE event_id = '110103' ORDER BY seq DESC LIMIT 1"
    )
    assert json.loads(event["detail"])["visits"] == 5


def _far_from_the_models(eye: str) -> bytes:
    """A generated photograph pushed where real cameras go (red strong enough to clip): still
    gradable for the gate, but out of the models' domain."""
    import numpy as np

    from appliance.capture.decode import Limits, decode_rgb

    rgb = decode_rgb(_photo(eye), Limits()).astype(np.float32)
    rgb[..., 0] *= 1.8
    return jpeg_bytes(np.clip(rgb, 0, 255).astype(np.uint8))


def test_photographs_the_models_cannot_assess_go_to_human_grading(app: Any, services: Any) -> None:
    for eye in ("L", "R"):
        services.ingestor.ingest(
            Incoming(
                data=_far_from_the_models(eye),
                source=Source.UPLOAD,
                user_id="t",
                fields={"patient_id": "HG1", "patient_name": "Poe^Al", "laterality": eye},
            )
        )
    wait_for(lambda: services.pipeline.pending() == 0, timeout=60)
    (visit,) = services.review.visits()
    assert visit.code == "human_grading"
    results = [
        json.loads(r["payload"])
        for r in services.store.query("SELECT payload FROM results WHERE kind = 'screening'")
    ]
    assert all(r["gradable"] and r["screening"]["status"] == "human_grading" for r in results)
    assert all("out_of_domain" in r["human_grading"] and r["dr"] is None for r in results)
    audited = services.store.query(
        'SELECT detail FROM audit_events WHERE detail LIKE \'%"stage": "analysis"%\''
    )
    assert [json.loads(a["detail"])["screening"] for a in audited] == ["human_grading"] * 2

    page = logged_in(app, services, "clinician").get(f"/review/{visit.visit_key}")
    html = page.get_data(as_text=True)
    assert html.count("Human grading needed</span>") == 2
    assert "Distance from the models' validation data" in html
    assert "Probability of referable DR" not in html  # nothing withheld is shown as a result


@pytest.mark.tool("Orthanc")
def test_the_signed_report_reaches_the_archive(settings: Settings, tmp_path: Path) -> None:
    """Sign → outbox → a real archive (Orthanc over C-STORE), next to the preliminary one."""
    from appliance.runtime.services import Services
    from tests.orthanc_server import Orthanc
    from web import create_app

    with Orthanc(tmp_path / "orthanc") as orthanc:
        archive = Destination(
            name="pacs", host="127.0.0.1", port=orthanc.dicom_port, ae_title="ORTHANC"
        )
        configured = settings.replace(destinations=(archive,))
        services = Services(configured)
        services.start(dicom=False, hotfolder=False)
        try:
            key = _visit(services)
            preliminary = _srs(services, key)[-1]["sop_instance_uid"]
            client = logged_in(create_app(configured, services), services, "clinician")
            signed = client.post(f"/review/{key}/sign", data=_form(client, key, decision="accept"))
            assert signed.status_code == 303
            uid = services.store.scalar("SELECT sr_sop_instance_uid FROM reviews")
            wait_for(lambda: {uid, preliminary} <= orthanc.sop_uids(), timeout=60)
            ds = pydicom.dcmread(io.BytesIO(orthanc.file(uid)))
            assert ds.VerificationFlag == "VERIFIED" and _predecessors(ds) == {preliminary}
            state = "SELECT state FROM outbox_jobs WHERE sop_instance_uid = ?"
            wait_for(lambda: services.store.scalar(state, (uid,)) == "delivered", timeout=30)
        finally:
            services.stop()


def test_each_photograph_and_heatmap_served_is_audited_and_scoped_to_its_visit(
    app: Any, services: Any
) -> None:
    key = _visit(services, eyes=("R",), patient="REV3")
    other = _visit(services, eyes=("L",), patient="REV4", seed=6161)
    client = logged_in(app, services, "clinician")
    mine = int(services.store.scalar(
        "SELECT c.id FROM captures c JOIN patients p ON p.id = c.patient_pk "
        "WHERE p.patient_id = 'REV3'"
    ))  # fmt: skip
    theirs = int(services.store.scalar(
        "SELECT c.id FROM captures c JOIN patients p ON p.id = c.patient_pk "
        "WHERE p.patient_id = 'REV4'"
    ))  # fmt: skip
    assert client.get(f"/review/{key}/photo/{mine}").status_code == 200
    assert client.get(f"/review/{key}/heatmap/{mine}").status_code == 200
    # another visit's photograph through this visit's address: not found, nothing audited
    assert client.get(f"/review/{key}/photo/{theirs}").status_code == 404
    assert client.get(f"/review/{key}/heatmap/{theirs}").status_code == 404
    assert client.get(f"/review/{other}/photo/{theirs}").status_code == 200

    events = [
        {**r, "detail": json.loads(r["detail"])}
        for r in services.store.query(
            "SELECT * FROM audit_events WHERE event_id = '110103' AND user_id = 'clinician1' "
            "ORDER BY seq"
        )
    ]
    images = ("review photo", "review heatmap")
    served = [
        (e["detail"]["view"], e["patient_id"], e["detail"]["capture"])
        for e in events
        if e["detail"]["view"] in images
    ]
    assert served == [
        ("review photo", "REV3", mine),
        ("review heatmap", "REV3", mine),
        ("review photo", "REV4", theirs),
    ]
    op = services.store.scalar(
        "SELECT sop_instance_uid FROM derived_objects WHERE kind = 'op' AND capture_pk = ?",
        (mine,),
    )
    first = next(e for e in events if e["detail"]["view"] == "review photo")
    assert json.loads(first["sop_instance_uids"]) == [op] and first["study_instance_uid"]

    # the list names the patients it showed
    client.get("/review")
    listed = services.store.one(
        "SELECT detail FROM audit_events WHERE event_id = '110103' "
        "AND detail LIKE '%review list%' ORDER BY seq DESC LIMIT 1"
    )
    assert listed is not None and json.loads(listed["detail"])["patients"] == ["REV3", "REV4"]
