"""An incomplete visit gets its SR and PDF once no photograph has arrived for the quiet period."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pydicom

from appliance.capture import Incoming
from appliance.config import Settings
from appliance.domain import Source
from tests.conftest import jpeg_bytes, wait_for

MODELS = Path(__file__).resolve().parents[2] / "models"


def _one_eye(services: Any, patient: str) -> int:
    from appliance.synth.case import render_case
    from appliance.synth.dataset import case_for

    case = next(
        c for c in (case_for(6160, i, (600, 800)) for i in range(200))
        if c.eye == "R" and c.field == "macula" and c.defect is None
    )  # fmt: skip
    capture = services.ingestor.ingest(
        Incoming(
            data=jpeg_bytes(render_case(case)),
            source=Source.UPLOAD,
            user_id="t",
            fields={"patient_id": patient, "laterality": "R"},
        )
    )
    return int(capture.id)


def _documents(services: Any) -> list[dict[str, Any]]:
    return services.store.query("SELECT kind, file_path FROM derived_objects WHERE kind != 'op'")


def test_documents_follow_the_quiet_period(settings: Settings) -> None:
    from appliance.runtime.services import Services

    services = Services(settings.replace(models_dir=str(MODELS), documents_quiet_seconds=600.0))
    services.start(dicom=False, hotfolder=False, worker=False)
    try:
        _one_eye(services, "QUIET1")
        services.pipeline.drain()
        outcome = services.store.one("SELECT payload FROM visit_outcomes ORDER BY id DESC")
        assert outcome is not None and json.loads(outcome["payload"])["complete"] is False
        assert _documents(services) == []  # one eye only: not complete

        assert services.pipeline.issue_quiet_visits() == 0  # within the quiet period
        assert _documents(services) == []

        later = time.time() + 601
        assert services.pipeline.issue_quiet_visits(now=later) == 1
        kinds = sorted(row["kind"] for row in _documents(services))
        assert kinds == ["pdf", "sr"]
        sr_row = next(r for r in _documents(services) if r["kind"] == "sr")
        sr = pydicom.dcmread(services.blobs.resolve(sr_row["file_path"]))
        assert sr.VerificationFlag == "UNVERIFIED" and sr.PatientID == "QUIET1"

        # the same images never get a second copy under new UIDs
        assert services.pipeline.issue_quiet_visits(now=later + 60) == 0
        assert len(_documents(services)) == 2
        trigger = services.store.query(
            "SELECT detail FROM audit_events WHERE detail LIKE '%quiet_period%'"
        )
        assert len(trigger) == 1
    finally:
        services.stop()


def test_zero_means_only_complete_visits(settings: Settings) -> None:
    from appliance.runtime.services import Services

    services = Services(settings.replace(models_dir=str(MODELS), documents_quiet_seconds=0.0))
    services.start(dicom=False, hotfolder=False)
    try:
        _one_eye(services, "QUIET2")
        wait_for(lambda: services.pipeline.pending() == 0, timeout=60)
        time.sleep(1.5)  # a few worker passes
        assert _documents(services) == []
    finally:
        services.stop()
