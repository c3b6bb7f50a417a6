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
    assert "grade" not in payload and "dr" not in payload  # no placeholder grades
    status = services.store.scalar("SELECT status FROM captures WHERE id = ?", (capture.id,))
    assert status == "processed"


def test_backlog_is_processed_after_a_restart(settings: Settings) -> None:
    from appliance.service import Services

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
