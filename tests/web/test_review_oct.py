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
from tests.conftest import wait_for
from tests.pipeline.test_oct_pipeline import opt_bytes
from tests.web.test_review import MODELS
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
