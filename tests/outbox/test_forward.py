"""Store-and-forward against a real pynetdicom archive on localhost."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pynetdicom import AE, evt
from pynetdicom.presentation import StoragePresentationContexts

from appliance.capture import Incoming
from appliance.capture.scp import TRANSFER_SYNTAXES
from appliance.config import Destination, Settings
from appliance.domain import Source
from appliance.outbox import queue
from appliance.outbox.policy import Verdict, backoff_seconds, classify_dimse
from tests.conftest import free_port, op_bytes, wait_for


class Archive:
    """A test archive: answers each C-STORE with the next scripted status (then success)."""

    def __init__(self, port: int, statuses: list[int] | None = None) -> None:
        self.port = port
        self.statuses = list(statuses or [])
        self.stored: dict[str, bytes] = {}
        self.attempts = 0
        self._lock = threading.Lock()
        self.server: Any = None

    def _on_store(self, event: Any) -> int:
        with self._lock:
            self.attempts += 1
            status = self.statuses.pop(0) if self.statuses else 0x0000
            if status == 0x0000:
                ds = event.dataset
                self.stored[str(ds.SOPInstanceUID)] = bytes(ds.PixelData)
        return status

    def start(self) -> Archive:
        ae = AE(ae_title="ARCHIVE")
        for context in StoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, TRANSFER_SYNTAXES)
        self.server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None


@pytest.fixture
def archive_port() -> int:
    return free_port()


@pytest.fixture
def settings(settings: Settings, archive_port: int) -> Settings:
    return settings.replace(
        destinations=(
            Destination(
                name="pacs", host="127.0.0.1", port=archive_port, ae_title="ARCHIVE", timeout=5
            ),
        ),
        outbox_backoff_seconds=0.05,
        outbox_backoff_cap_seconds=0.2,
    )


@pytest.fixture
def archive(archive_port: int) -> Iterator[Archive]:
    server = Archive(archive_port).start()
    yield server
    server.stop()


def _send_capture(services: Any, **kw: Any) -> str:
    data = op_bytes(**kw)
    services.ingestor.ingest(
        Incoming(data=data, source=Source.DICOM, user_id="ae:CAM", calling_ae="CAM")
    )
    return str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID)


def _job(services: Any, uid: str) -> dict[str, Any] | None:
    return services.store.one("SELECT * FROM outbox_jobs WHERE sop_instance_uid = ?", (uid,))


def test_a_dicom_capture_is_forwarded_as_received(services: Any, archive: Archive) -> None:
    uid = _send_capture(services)
    job = wait_for(lambda: (j := _job(services, uid)) and j["state"] == "delivered" and j)
    assert job["last_status"] == "0x0000" and job["attempts"] == 1
    stored = services.store.one("SELECT file_path FROM captures WHERE sop_instance_uid = ?", (uid,))
    original = pydicom.dcmread(services.blobs.resolve(stored["file_path"]))
    assert archive.stored[uid] == bytes(original.PixelData)  # the camera's JPEG, untouched
    event = services.store.one(
        "SELECT * FROM audit_events WHERE event_id = '110104' AND user_id = 'system:outbox'"
    )
    assert json.loads(event["detail"])["destination"] == "pacs" and event["outcome"] == 0
    assert json.loads(event["sop_instance_uids"]) == [uid]


def test_out_of_resources_is_retried_then_delivered_once(services: Any, archive: Archive) -> None:
    archive.statuses = [0xA700, 0xA702]
    uid = _send_capture(services)
    job = wait_for(lambda: (j := _job(services, uid)) and j["state"] == "delivered" and j)
    assert job["attempts"] == 3 and list(archive.stored) == [uid]


def test_cannot_understand_is_dead_lettered_and_can_be_requeued(
    services: Any, archive: Archive, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive.statuses = [0xC000]
    uid = _send_capture(services)
    job = wait_for(lambda: (j := _job(services, uid)) and j["state"] == "dead" and j)
    assert job["last_status"] == "0xC000" and uid not in archive.stored
    time.sleep(0.3)  # dead stays dead: no retry storm
    assert archive.attempts == 1
    assert queue.requeue_dead(services.store) == 1
    services.forwarder.notify()
    wait_for(lambda: _job(services, uid)["state"] == "delivered")
    assert uid in archive.stored


def test_archive_outage_is_retried_until_it_returns(services: Any, archive_port: int) -> None:
    uid = _send_capture(services)
    wait_for(lambda: (j := _job(services, uid)) and j["attempts"] >= 2)
    job = _job(services, uid)
    assert job["state"] in ("queued", "leased") and job["last_status"] in (None, "no-status")
    late = Archive(archive_port).start()
    try:
        wait_for(lambda: _job(services, uid)["state"] == "delivered")
        assert uid in late.stored
    finally:
        late.stop()


def test_a_crash_mid_send_resends_after_the_lease(
    settings: Settings, archive: Archive, tmp_path: Path
) -> None:
    from appliance.runtime.services import Services

    first = Services(settings)
    first.start(dicom=False, hotfolder=False, worker=False)
    data = op_bytes()
    uid = str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID)
    first.ingestor.ingest(Incoming(data=data, source=Source.DICOM, user_id="ae:CAM"))
    first.pipeline.drain()
    (job,) = queue.lease(first.store, "pacs", 10, lease_seconds=0.2)  # then the process "dies"
    first.stop()
    second = Services(settings)
    second.start(dicom=False, hotfolder=False)
    try:
        time.sleep(0.25)
        second.forwarder.notify()
        row = wait_for(lambda: (j := _job(second, uid)) and j["state"] == "delivered" and j)
        assert row["attempts"] == 2 and list(archive.stored) == [uid]
    finally:
        second.stop()


@pytest.mark.parametrize(
    ("status", "verdict"),
    [(0x0000, Verdict.DONE), (0xB000, Verdict.DONE), (0xB007, Verdict.DONE),
     (0xA700, Verdict.RETRY), (0xA7FF, Verdict.RETRY), (None, Verdict.RETRY),
     (0xC000, Verdict.DEAD), (0xA900, Verdict.DEAD), (0x0122, Verdict.DEAD),
     (0x0124, Verdict.DEAD)],
)  # fmt: skip
def test_dimse_status_policy(status: int | None, verdict: Verdict) -> None:
    assert classify_dimse(status).verdict is verdict


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_seconds(n, 5, 60) for n in (1, 2, 3, 4, 5, 9)] == [5, 10, 20, 40, 60, 60]
