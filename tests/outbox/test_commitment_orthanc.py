"""Storage Commitment against a real Orthanc: it answers the N-ACTION and sends its
N-EVENT-REPORT on a new association to the appliance's running SCP, which it knows from its
``DicomModalities``. Without Orthanc this skips locally and fails under ``CI=true``."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pydicom
import pytest

from appliance.capture import Incoming
from appliance.config import Destination, Settings
from appliance.domain import Source
from appliance.outbox import commitment
from tests.conftest import fundus, op_bytes, wait_for
from tests.orthanc_server import Orthanc

pytestmark = pytest.mark.tool("Orthanc")


@pytest.fixture
def orthanc(tmp_path: Path, settings: Settings) -> Iterator[Orthanc]:
    appliance = (settings.dicom_ae_title, "127.0.0.1", settings.dicom_port)
    with Orthanc(tmp_path / "orthanc", modalities={"screening": appliance}) as server:
        yield server


@pytest.fixture
def services(settings: Settings, orthanc: Orthanc) -> Iterator[Any]:
    from appliance.runtime.services import Services

    destination = Destination(
        name="pacs",
        host="127.0.0.1",
        port=orthanc.dicom_port,
        ae_title=orthanc.aet,
        timeout=10,
        storage_commitment=True,
    )
    svc = Services(
        settings.replace(
            destinations=(destination,), outbox_backoff_seconds=0.05, outbox_backoff_cap_seconds=0.2
        )
    )
    svc.commitments.poll_seconds = 0.05
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()


def _capture(services: Any, seed: int) -> str:
    data = op_bytes(fundus(seed=seed, size=(96, 128)))
    services.ingestor.ingest(Incoming(data=data, source=Source.DICOM, user_id="ae:CAM"))
    return str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID)


def _job(services: Any, uid: str) -> dict[str, Any]:
    row = services.store.one("SELECT * FROM outbox_jobs WHERE sop_instance_uid = ?", (uid,))
    return row or {}


def _events(services: Any) -> list[dict[str, Any]]:
    rows = services.store.query("SELECT * FROM audit_events WHERE event_id = '110104'")
    return [r | {"d": json.loads(r["detail"])} for r in rows if "storage_commitment" in r["detail"]]


def test_orthanc_commits_what_was_delivered(
    services: Any, orthanc: Orthanc, settings: Settings
) -> None:
    uids = [_capture(services, seed) for seed in (21, 22, 23)]
    wait_for(
        lambda: all(_job(services, u).get("commitment") == "committed" for u in uids),
        timeout=30,
    )
    assert orthanc.sop_uids() == set(uids)
    transactions = services.store.query("SELECT * FROM commitment_transactions")
    assert transactions and {t["state"] for t in transactions} == {"answered"}
    assert {t["event_type"] for t in transactions} == {1}  # all committed
    events = _events(services)
    assert {e["d"]["result"] for e in events} == {"committed"}
    assert {e["outcome"] for e in events} == {0}
    assert sorted(u for e in events for u in json.loads(e["sop_instance_uids"])) == sorted(uids)
    assert {e["d"]["calling_ae"] for e in events} == {orthanc.aet}  # it came from Orthanc
    assert commitment.summary(services.store)["pacs"] == {
        "committed": 3,
        "awaiting_commitment": 0,
        "not_committed": 0,
    }
    assert services.audit.verify().ok


def test_an_instance_orthanc_lost_is_sent_again_and_then_committed(
    services: Any, orthanc: Orthanc
) -> None:
    hold = datetime.now(UTC) + timedelta(days=1)
    services.commitments._not_before["pacs"] = hold  # no request until the instance is gone
    uid = _capture(services, 24)
    wait_for(lambda: _job(services, uid).get("commitment") == "awaiting", timeout=30)
    status, _ = orthanc.request("DELETE", f"/instances/{orthanc.instance_id(uid)}")
    assert status == 200 and uid not in orthanc.sop_uids()
    services.commitments._not_before.clear()
    services.commitments.notify()

    job = wait_for(
        lambda: (j := _job(services, uid)).get("commitment") == "committed" and j, timeout=30
    )
    assert job["commit_failures"] == 1 and job["attempts"] == 2  # C-STORE again
    assert uid in orthanc.sop_uids()
    failed = services.store.one(
        "SELECT * FROM commitment_items WHERE sop_instance_uid = ? AND state = 'failed'", (uid,)
    )
    assert failed is not None and failed["failure_reason"].startswith("0x")
    results = [e["d"]["result"] for e in _events(services)]
    assert results == ["not committed", "committed"]
