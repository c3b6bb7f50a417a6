"""The worker: stored results, honest 'no model', failures kept, restart picks up the backlog."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from appliance.capture import Incoming
from appliance.config import Settings
from appliance.domain import Source
from tests.conftest import fundus, jpeg_bytes, wait_for


def test_result_says_no_model_is_installed(services: Any) -> None:
    capture = services.ingestor.ingest(
        Incoming(data=jpeg_bytes(fundus(seed=5)), source=Source.UPLOAD, user_id="tester")
    )
    row = wait_for(
        lambda: services.store.one("SELECT * FROM results WHERE capture_pk = ?", (capture.id,))
    )
    payload = json.loads(row["payload"])
    assert payload["status"] == "no_model"
    assert "No screening model installed" in payload["message"]
    assert payload["dr"] is None and payload["glaucoma"] is None  # no placeholder grades
    visit = wait_for(lambda: services.store.one("SELECT * FROM visit_outcomes ORDER BY id DESC"))
    assert visit["code"] == "no_model" and visit["visit_key"] == f"capture:{capture.id}"
    status = services.store.scalar("SELECT status FROM captures WHERE id = ?", (capture.id,))
    assert status == "processed"


def test_backlog_is_processed_after_a_restart(settings: Settings) -> None:
    from appliance.runtime.services import Services

    first = Services(settings)
    first.start(dicom=False, hotfolder=False, worker=False)  # receives, then "crashes"
    ids = [
        first.ingestor.ingest(
            Incoming(
                data=jpeg_bytes(fundus(seed=s, size=(384, 512))), source=Source.UPLOAD, user_id="t"
            )
        ).id
        for s in (1, 2, 3)
    ]
    first.stop()
    second = Services(settings)
    second.start(dicom=False, hotfolder=False)
    try:
        wait_for(lambda: second.pipeline.pending() == 0)
        reports = second.store.scalar(
            "SELECT count(*) FROM quality_reports WHERE capture_pk IN (?, ?, ?)", tuple(ids)
        )
        assert reports == 3
    finally:
        second.stop()


def test_undecodable_stored_file_fails_visibly_and_the_worker_goes_on(
    services: Any, settings: Settings
) -> None:
    bad = services.ingestor.ingest(
        Incoming(
            data=jpeg_bytes(fundus(seed=6, size=(384, 512))), source=Source.UPLOAD, user_id="t"
        )
    )
    wait_for(
        lambda: (
            services.store.scalar("SELECT status FROM captures WHERE id = ?", (bad.id,))
            == "processed"
        )
    )
    # damage a stored file behind the appliance's back, then ask for it again
    path: Path = settings.data_path / bad.file_path
    path.write_bytes(path.read_bytes()[:200])
    with services.store.write() as tx:
        tx.execute("DELETE FROM quality_reports WHERE capture_pk = ?", (bad.id,))
        tx.execute("DELETE FROM results WHERE capture_pk = ?", (bad.id,))
        tx.execute("UPDATE captures SET status = 'received' WHERE id = ?", (bad.id,))
    services.pipeline.notify(bad.id)
    row = wait_for(
        lambda: services.store.one(
            "SELECT * FROM captures WHERE id = ? AND status = 'failed'", (bad.id,)
        )
    )
    assert row["status_reason"].startswith("corrupt_image")
    event = services.store.one("SELECT * FROM audit_events ORDER BY seq DESC LIMIT 1")
    assert event["outcome"] == 8 and json.loads(event["detail"])["failed"] == "corrupt_image"
    good = services.ingestor.ingest(
        Incoming(
            data=jpeg_bytes(fundus(seed=7, size=(384, 512))), source=Source.UPLOAD, user_id="t"
        )
    )
    wait_for(
        lambda: (
            services.store.scalar("SELECT status FROM captures WHERE id = ?", (good.id,))
            == "processed"
        )
    )


def test_two_eyes_with_the_shipped_models_complete_a_visit(settings: Settings) -> None:
    from appliance.runtime.services import Services
    from appliance.synth.case import render_case
    from appliance.synth.dataset import case_for

    models = Path(__file__).resolve().parents[2] / "models"
    services = Services(settings.replace(models_dir=str(models)))
    services.start(dicom=False, hotfolder=False)
    try:
        ids = []
        for eye in ("L", "R"):
            case = next(
                c for c in (case_for(6160, i, (600, 800)) for i in range(200))
                if c.eye == eye and c.field == "macula" and c.defect is None
            )  # fmt: skip
            capture = services.ingestor.ingest(
                Incoming(
                    data=jpeg_bytes(render_case(case)),
                    source=Source.UPLOAD,
                    user_id="t",
                    fields={"patient_id": "VISIT1", "laterality": eye},
                )
            )
            ids.append(capture.id)
        wait_for(lambda: services.pipeline.pending() == 0, timeout=60)
        row = services.store.one("SELECT * FROM visit_outcomes ORDER BY id DESC LIMIT 1")
        outcome = json.loads(row["payload"])
        assert row["visit_key"].startswith("patient:")
        assert {eye["eye"]: eye["status"] for eye in outcome["eyes"]} == {
            "L": "graded",
            "R": "graded",
        }
        assert outcome["complete"] is True and outcome["code"] != "incomplete"
        result = json.loads(
            services.store.one("SELECT payload FROM results WHERE capture_pk = ?", (ids[0],))[
                "payload"
            ]
        )
        assert result["status"] == "screened" and result["laterality"] == "L"
        assert (settings.data_path / result["heatmap"]).is_file()
        assert {m["name"] for m in result["models"]} >= {"retina-dr-demo", "retina-glaucoma-demo"}
        assert services.audit.verify().ok
    finally:
        services.stop()


def test_a_png_photograph_becomes_a_lossless_op(services: Any) -> None:
    import io

    import numpy as np
    import pydicom

    from tests.conftest import png_bytes

    rgb = fundus(seed=21, size=(300, 400), eye="R")
    capture = services.ingestor.ingest(
        Incoming(
            data=png_bytes(rgb),
            source=Source.UPLOAD,
            user_id="t",
            fields={"patient_id": "PNG1", "laterality": "R"},
        )
    )
    wait_for(lambda: services.pipeline.pending() == 0, timeout=30)
    row = services.store.one(
        "SELECT file_path FROM derived_objects WHERE capture_pk = ? AND kind = 'op'",
        (capture.id,),
    )
    assert row is not None
    ds = pydicom.dcmread(io.BytesIO(services.blobs.read(row["file_path"])))
    assert ds.PatientID == "PNG1" and ds.ImageLaterality == "R"
    assert ds.LossyImageCompression == "00"
    assert np.array_equal(ds.pixel_array, rgb)
