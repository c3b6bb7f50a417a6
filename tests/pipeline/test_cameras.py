"""Camera qualification: a camera model not qualified never gets an automated negative."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest

from appliance.capture import Incoming
from appliance.config import Settings
from appliance.domain import Source
from appliance.pipeline import cameras
from tests.conftest import jpeg_bytes, op_bytes, wait_for
from tests.web_helpers import logged_in

MODELS = Path(__file__).resolve().parents[2] / "models"
CAMERA = "Demo Optics / FC-1"
TARGETS = json.loads((MODELS / "dr.card.json").read_text())["acceptance"]


@pytest.fixture
def services(settings: Settings) -> Iterator[Any]:
    from appliance.runtime.services import Services

    svc = Services(
        settings.replace(
            models_dir=str(MODELS), camera_qualification_required=True, camera_model=CAMERA
        )
    )
    svc.start(dicom=False, hotfolder=False)
    try:
        yield svc
    finally:
        svc.stop()


def _photo(eye: str, referable: bool, seed: int = 6160) -> bytes:
    """A clean macula-centred generated photograph, plainly negative (grade 0, small cup) or
    plainly referable (grade 3 or more)."""
    from appliance.synth.case import render_case
    from appliance.synth.dataset import case_for

    case = next(
        c for c in (case_for(seed, i, (600, 800)) for i in range(400))
        if c.eye == eye and c.field == "macula" and c.defect is None
        and (c.dr_grade >= 3 if referable else c.dr_grade == 0 and c.cdr <= 0.4)
    )  # fmt: skip
    return jpeg_bytes(render_case(case))


def _visit(services: Any, patient: str, referable: bool = False) -> dict[str, Any]:
    seed = 6160 + int(patient[-1])  # other photographs for every visit (no duplicates)
    for eye in ("L", "R"):
        services.ingestor.ingest(
            Incoming(
                data=_photo(eye, referable and eye == "R", seed),
                source=Source.UPLOAD,
                user_id="t",
                fields={"patient_id": patient, "patient_name": "Cam^Era", "laterality": eye},
            )
        )
    wait_for(lambda: services.pipeline.pending() == 0, timeout=60)
    row = services.store.one("SELECT payload FROM visit_outcomes ORDER BY id DESC LIMIT 1")
    return dict(json.loads(row["payload"]))


def _report(tmp_path: Path, sensitivity: float, specificity: float) -> Path:
    """The fields of an `appliance validate` report.json that qualification reads."""
    path = tmp_path / f"report-{sensitivity}-{specificity}.json"
    report = {
        "n": 120,
        "referable_dr": {
            "sensitivity": {"value": sensitivity, "numerator": 38, "denominator": 40},
            "specificity": {"value": specificity, "numerator": 70, "denominator": 80},
        },
    }
    path.write_text(json.dumps(report))
    return path


def test_an_unqualified_camera_never_gets_an_automated_negative(services: Any) -> None:
    outcome = _visit(services, "CAM1")
    assert outcome["code"] == "human_grading"
    results = [
        json.loads(r["payload"])
        for r in services.store.query("SELECT payload FROM results WHERE kind = 'screening'")
    ]
    for result in results:
        assert result["screening"]["status"] == "screened"  # the results stand ...
        assert result["dr"] is not None and result["dr"]["referable"] is False
        assert result["human_grading"] == ["unqualified_camera"]  # ... but no negative
        assert result["camera"] == {"model": CAMERA, "qualified": False}
    assert any("camera is not qualified" in p for p in outcome["prompts"])


def test_a_referable_finding_from_an_unqualified_camera_still_refers(services: Any) -> None:
    assert _visit(services, "CAM2", referable=True)["code"] == "refer"


def test_qualification_needs_the_cards_targets_and_is_audited(
    services: Any, tmp_path: Path
) -> None:
    refused = cameras.qualify(
        services.store, services.audit, CAMERA, _report(tmp_path, 0.97, 0.85), TARGETS, "dr.x"
    )
    assert not refused.met
    assert refused.failures == ("referable-DR specificity 0.85 is below 0.9",)
    assert not cameras.is_qualified(services.store, CAMERA)
    assert _visit(services, "CAM3")["code"] == "human_grading"

    report = _report(tmp_path, 0.97, 0.95)
    verdict = cameras.qualify(services.store, services.audit, CAMERA, report, TARGETS, "dr.x")
    assert verdict.met and cameras.is_qualified(services.store, CAMERA)
    assert _visit(services, "CAM4")["code"] == "rescreen"

    events = [
        json.loads(e["detail"])
        for e in services.store.query(
            "SELECT detail FROM audit_events WHERE detail LIKE '%camera_qualification%' "
            "ORDER BY seq"
        )
    ]
    assert [e["camera_qualification"] for e in events] == ["refused", "qualified"]
    import hashlib

    assert events[1]["report_sha256"] == hashlib.sha256(report.read_bytes()).hexdigest()
    listed = {c["model"]: c for c in cameras.cameras(services.store)}
    assert listed[CAMERA]["status"] == "qualified" and listed[CAMERA]["qualified_by"] == "dr.x"
    assert listed[CAMERA]["photographs"] == 4

    assert cameras.revoke(services.store, services.audit, CAMERA, "dr.x")
    assert _visit(services, "CAM5")["code"] == "human_grading"


def test_too_few_photographs_do_not_qualify() -> None:
    report = {
        "referable_dr": {
            "sensitivity": {"value": 1.0, "denominator": 5},
            "specificity": {"value": 1.0, "denominator": 50},
        }
    }
    verdict = cameras.judge(report, TARGETS)
    assert not verdict.met and verdict.failures == ("5 referable photographs, 30 needed",)


def test_a_dicom_photograph_names_its_camera_model() -> None:
    data = op_bytes()
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.Manufacturer, ds.ManufacturerModelName = "Topcon", "TRC-NW400"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    assert cameras.camera_model(buffer.getvalue(), "dicom", CAMERA) == "Topcon / TRC-NW400"
    assert cameras.camera_model(b"\xff\xd8\xff", "hotfolder", CAMERA) == CAMERA
    assert cameras.camera_model(b"\xff\xd8\xff", "upload", "") == "unknown camera (upload)"


def test_the_console_lists_cameras_and_their_status(app: Any, services: Any) -> None:
    _visit(services, "CAM6")
    html = logged_in(app, services, "admin").get("/admin/models").get_data(as_text=True)
    assert 'id="camera-list"' in html and CAMERA in html and "unqualified" in html


def test_the_command_line_qualifies_lists_and_revokes(
    services: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from appliance.cli import main

    _visit(services, "CAM7")
    config = tmp_path / "appliance.toml"
    config.write_text(
        f'data_dir = "{services.settings.data_dir}"\nmodels_dir = "{MODELS}"\n'
        "min_free_disk_mb = 0\n"
    )
    base = ["--config", str(config), "cameras"]
    report = _report(tmp_path, 0.97, 0.95)
    assert main([*base, "qualify", CAMERA, "--report", str(report), "--by", "Dr X"]) == 0
    capsys.readouterr()
    assert main([*base, "list", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert (listed["model"], listed["status"], listed["photographs"]) == (CAMERA, "qualified", 2)
    assert main([*base, "revoke", CAMERA, "--by", "Dr X"]) == 0
    assert main([*base, "revoke", CAMERA, "--by", "Dr X"]) == 1  # nothing left to revoke
    low = _report(tmp_path, 0.80, 0.95)
    assert main([*base, "qualify", CAMERA, "--report", str(low), "--by", "Dr X"]) == 1
    assert "not met: referable-DR sensitivity 0.8 is below 0.95" in capsys.readouterr().err


def test_station_and_review_say_why_a_grader_is_needed(app: Any, services: Any) -> None:
    outcome = _visit(services, "CAM8")
    key = services.store.one("SELECT visit_key FROM visit_outcomes ORDER BY id DESC LIMIT 1")
    html = logged_in(app, services, "clinician").get(f"/review/{key['visit_key']}")
    text = html.get_data(as_text=True)
    assert outcome["code"] == "human_grading"
    assert text.count("No automated negative: unqualified camera (Demo Optics / FC-1)") == 2
