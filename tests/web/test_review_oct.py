"""The review page's OCT part: numbers, thickness map with the ETDRS grid, the B-scan slider's
pictures (audited, clinician only, bounded), a record stored before the layers were kept."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import numpy as np
import pytest
from PIL import Image

from appliance.capture import Incoming
from appliance.config import Settings
from appliance.domain import Source
from appliance.synth.oct.dicom import OptHeader
from tests.conftest import require_tool, wait_for
from tests.pipeline.test_oct_pipeline import opt_bytes
from tests.web.test_review import MODELS, _photo
from tests.web.test_signoff import _form, _read
from tests.web.test_signoff_oct import _cst_in_sr
from tests.web_helpers import logged_in


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.replace(models_dir=str(MODELS))


def oct_visit(services: Any, eye: str, patient: str, thickening_um: float) -> tuple[str, int]:
    """Ingest one OPT object for ``patient``; the visit key and the capture id once measured."""
    header = OptHeader(patient_id=patient, patient_name="Roe^Ann")
    data = opt_bytes(eye, thickening_um=thickening_um, header=header)
    capture = services.ingestor.ingest(
        Incoming(data=data, source=Source.DICOM, user_id="ae:OCT", calling_ae="OCT")
    )
    row = wait_for(
        lambda: services.store.one(
            "SELECT vo.visit_key FROM visit_outcomes vo JOIN patients p ON p.id = vo.patient_pk "
            "WHERE p.patient_id = ? ORDER BY vo.id DESC LIMIT 1",
            (patient,),
        ),
        timeout=90,
    )
    return str(row["visit_key"]), int(capture.id)


def _rgb(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB")).astype(int)


def test_the_oct_numbers_map_and_b_scans(app: Any, services: Any) -> None:
    key, cid = oct_visit(services, "L", "OCTREV1", thickening_um=120.0)
    client = logged_in(app, services, "clinician")
    page = client.get(f"/review/{key}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    cst = re.search(rf'id="oct-cst-{cid}"><strong>(\d+) µm</strong>', html)
    assert cst is not None and int(cst.group(1)) > 330
    assert "threshold 300 µm for this device: <strong>" in html  # at or over
    assert 'name="grade_L"' not in html  # an OCT alone: no DR grade to set
    dme = re.search(rf'id="oct-dme-{cid}">(.*?)</dd>', html, re.S)
    assert dme is not None and "yes" in dme.group(1)
    assert re.search(rf'id="oct-volume-{cid}">\d+\.\d\d mm³</dd>', html)
    assert f'id="oct-fluid-{cid}"' in html and "Gradable" in html
    cells = re.findall(r'data-subfield="(\w+)"><span class="muted">[^<]*</span><br><strong>'
                       r"(\d+|—)</strong>", html)  # fmt: skip
    assert len(cells) == 9 and all(value.isdigit() for _, value in cells)
    assert "nasal on the left" in html  # the left eye's nasal side
    assert cells[2][0] == "outer_nasal"  # the middle row starts on the nasal side
    assert re.search(r'<input type="range"[^>]*max="24"[^>]*value="(\d+)"[^>]*hidden>', html)
    photo_cards = re.findall(r'<figure class="photo" id="photo-(\d+)"', html)
    assert str(cid) not in photo_cards  # the OPT is shown as an OCT, not as a photograph

    thickness = client.get(f"/review/{key}/oct/{cid}/thickness.png")
    assert thickness.status_code == 200 and thickness.mimetype == "image/png"
    rgb = _rgb(thickness.data)
    assert ((rgb == 255).all(axis=2)).sum() > 100  # the white ETDRS circles

    central = re.search(r'id="bscan-\d+" alt="B-scan (\d+) of 25', html)
    assert central is not None
    for frame in (0, int(central.group(1)) - 1, 24):
        shot = client.get(f"/review/{key}/oct/{cid}/bscan/{frame}.png")
        assert shot.status_code == 200 and shot.mimetype == "image/png"
        rgb = _rgb(shot.data)
        assert rgb.shape[:2] == (256, 256)  # the frame as received
        red = (rgb[:, :, 0] - rgb[:, :, 1] > 120) & (rgb[:, :, 0] - rgb[:, :, 2] > 120)
        green = (rgb[:, :, 1] - rgb[:, :, 0] > 100) & (rgb[:, :, 1] - rgb[:, :, 2] > 100)
        assert red.sum() > 200 and green.sum() > 200, frame  # ILM and RPE across the B-scan
    for bad in ("25", "999", "-1", "x"):
        assert client.get(f"/review/{key}/oct/{cid}/bscan/{bad}.png").status_code == 404
    assert client.get(f"/review/{key}").status_code == 200  # still answers

    events = [
        json.loads(r["detail"])
        for r in services.store.query(
            "SELECT detail FROM audit_events WHERE event_id = '110103' AND user_id = "
            "'clinician1' AND patient_id = 'OCTREV1' ORDER BY seq"
        )
    ]
    frames = [e["frame"] for e in events if e.get("view") == "review oct b-scan"]
    assert frames == [0, int(central.group(1)) - 1, 24]
    assert any(e.get("view") == "review oct thickness map" for e in events)

    # OCT volumes only: the signature issues a VERIFIED SR that carries the OCT's group
    form = _form(client, key, decision="override", outcome_code="refer", reason="Thick.")
    assert client.post(f"/review/{key}/sign", data=form).status_code == 303
    [review] = services.store.query("SELECT * FROM reviews")
    sr = _read(services, review["sr_sop_instance_uid"])
    assert sr.VerificationFlag == "VERIFIED" and len(_cst_in_sr(sr)) == 1


def test_b_scans_are_for_clinicians_and_this_visits_volumes_only(app: Any, services: Any) -> None:
    key, cid = oct_visit(services, "R", "OCTREV2", thickening_um=0.0)
    other, theirs = oct_visit(services, "R", "OCTREV3", thickening_um=0.0)
    operator = logged_in(app, services, "operator")
    assert operator.get(f"/review/{key}/oct/{cid}/bscan/0.png").status_code == 403
    assert operator.get(f"/review/{key}/oct/{cid}/thickness.png").status_code == 403
    client = logged_in(app, services, "clinician")
    assert client.get(f"/review/{key}/oct/{theirs}/bscan/0.png").status_code == 404
    assert client.get(f"/review/{key}/oct/{theirs}/thickness.png").status_code == 404
    assert client.get(f"/review/{other}/oct/{theirs}/bscan/0.png").status_code == 200


def test_a_volume_stored_before_the_layers_were_kept_shows_its_b_scans_plain(
    app: Any, services: Any
) -> None:
    key, cid = oct_visit(services, "R", "OCTREV4", thickening_um=0.0)
    row = services.store.one(
        "SELECT id, payload FROM results WHERE capture_pk = ? AND kind = 'screening'", (cid,)
    )
    payload = json.loads(row["payload"])
    del payload["oct"]["layers"]  # as the worker stored it before
    with services.store.write() as tx:
        tx.execute("UPDATE results SET payload = ? WHERE id = ?", (json.dumps(payload), row["id"]))
    client = logged_in(app, services, "clinician")
    html = client.get(f"/review/{key}").get_data(as_text=True)
    assert "were not kept when it was measured" in html
    shot = client.get(f"/review/{key}/oct/{cid}/bscan/3.png")
    assert shot.status_code == 200
    rgb = _rgb(shot.data)
    assert (np.ptp(rgb, axis=2) < 2).all()  # grey: nothing drawn

    # the files deleted after delivery (retention): said, not crashed on
    for path in (services.store.scalar("SELECT file_path FROM captures WHERE id = ?", (cid,)),
                 payload["oct"]["thickness_map"]):  # fmt: skip
        services.blobs.resolve(path).unlink()
    for url in (f"/review/{key}/oct/{cid}/bscan/4.png", f"/review/{key}/oct/{cid}/thickness.png"):
        gone = client.get(url)
        assert gone.status_code == 404 and "deleted after delivery" in gone.get_data(as_text=True)
    assert client.get(f"/review/{key}").status_code == 200


def _pdf_text(services: Any, uid: str) -> str:
    import subprocess

    import pydicom

    row = services.store.one(
        "SELECT file_path FROM derived_objects WHERE sop_instance_uid = ?", (uid,)
    )
    pdf = pydicom.dcmread(io.BytesIO(services.blobs.read(row["file_path"]))).EncapsulatedDocument
    done = subprocess.run(
        [require_tool("pdftotext"), "-", "-"], input=bytes(pdf), capture_output=True, check=True
    )
    return done.stdout.decode()


def mixed_visit(services: Any, patient: str) -> str:
    """Photographs of both eyes and a left-eye OCT with CI-DME, one study: the visit key."""
    study = "1.2.826.0.1.3680043.8.498.16016"
    for eye in ("R", "L"):
        services.ingestor.ingest(
            Incoming(data=_photo(eye), source=Source.UPLOAD, user_id="t",
                     fields={"patient_id": patient, "patient_name": "Roe^Ann",
                             "laterality": eye, "study_instance_uid": study})
        )  # fmt: skip
    header = OptHeader(patient_id=patient, patient_name="Roe^Ann", study_instance_uid=study)
    services.ingestor.ingest(
        Incoming(data=opt_bytes("L", thickening_um=120.0, header=header), source=Source.DICOM,
                 user_id="ae:OCT", calling_ae="OCT")
    )  # fmt: skip
    wait_for(lambda: services.pipeline.pending() == 0, timeout=90)
    row = wait_for(
        lambda: services.store.one(
            "SELECT visit_key, payload FROM visit_outcomes ORDER BY id DESC LIMIT 1"
        )
    )
    left = next(e for e in json.loads(row["payload"])["eyes"] if e["eye"] == "L")
    assert left["oct_dme"] is True and left["oct_capture_ids"]
    return str(row["visit_key"])


def _ci_dme_in_sr(ds: Any) -> list[str]:
    """The OCT groups' centre-involving DME answers (RS024) in a screening SR."""
    return [
        str(item.ConceptCodeSequence[0].CodeMeaning)
        for group in ds.ContentSequence
        for sub in group.get("ContentSequence", [])
        for item in sub.get("ContentSequence", [])
        if item.ValueType == "CODE" and item.ConceptNameCodeSequence[0].CodeValue == "RS024"
    ]


def test_the_clinician_overrides_the_oct_dme_answer_at_sign_off(app: Any, services: Any) -> None:
    key = mixed_visit(services, "OCTREV5")
    client = logged_in(app, services, "clinician")
    html = client.get(f"/review/{key}").get_data(as_text=True)
    assert 'name="oct_dme_L"' in html and "Keep: yes" in html
    assert 'name="oct_dme_R"' not in html  # no OCT of the right eye
    form = _form(client, key, decision="override", outcome_code="rescreen", oct_dme_R="no",
                 reason="Artefact.", grade_R="0", grade_L="0")  # fmt: skip
    refused = client.post(f"/review/{key}/sign", data=form)
    assert refused.status_code == 422, refused.status_code
    assert "Right eye: no gradable OCT volume" in refused.get_data(as_text=True)
    form = _form(client, key, decision="override", outcome_code="rescreen", reason="Artefact.",
                 grade_R="0", grade_L="0")  # fmt: skip
    refused = client.post(f"/review/{key}/sign", data=form)
    assert "Rescreen contradicts centre-involving macular oedema on OCT" in (
        refused.get_data(as_text=True)
    )
    form = _form(client, key, decision="override", outcome_code="rescreen", oct_dme_L="maybe",
                 reason="Artefact.")  # fmt: skip
    refused = client.post(f"/review/{key}/sign", data=form)
    assert refused.status_code == 422
    assert "The OCT macular oedema answer is yes or no." in refused.get_data(as_text=True)
    assert services.store.scalar("SELECT count(*) FROM reviews") == 0

    form = _form(client, key, decision="override", outcome_code="rescreen", oct_dme_L="no",
                 grade_R="0", grade_L="0",
                 reason="Thickening is a segmentation artefact at the fovea.")  # fmt: skip
    assert client.post(f"/review/{key}/sign", data=form).status_code == 303
    review = services.store.one("SELECT * FROM reviews ORDER BY id DESC LIMIT 1")
    assert json.loads(review["payload"])["oct_dme"] == {"L": False}
    sr = _read(services, review["sr_sop_instance_uid"])
    assert _ci_dme_in_sr(sr) == ["No"]  # the clinician's answer, not the rules' yes
    event = services.store.one(
        "SELECT detail FROM audit_events WHERE detail LIKE '%verified_sr%' ORDER BY seq DESC"
    )
    assert json.loads(event["detail"])["oct_dme"] == {"L": False}
    page = client.get(f"/review/{key}").get_data(as_text=True)
    assert '<span data-oct-dme="L">Left: CI-DME on OCT no</span>' in page
    flat = " ".join(_pdf_text(services, review["pdf_sop_instance_uid"]).split())
    assert "centre-involving macular oedema on OCT: no (replaces the automated answer)" in flat
    assert "Left eye: centre-involving macular oedema on OCT: no (clinician)" in flat

    from appliance.desks.station_view import signed_line

    outcome_id = services.store.scalar(
        "SELECT max(id) FROM visit_outcomes WHERE visit_key = ?", (key,)
    )
    assert signed_line(services.store, outcome_id) == (
        "Signed by Dr A. Grader, MD — Rescreen at the routine interval — "
        "Left eye: centre-involving macular oedema on OCT: no (clinician)"
    )
