"""Retention: local files deleted N days after every destination confirmed delivery — never
before, never while a job is pending or dead, never with retention_days = 0 — and audited."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
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
from appliance.outbox.retention import Retention
from tests.conftest import free_port, fundus, jpeg_bytes, op_bytes, wait_for

DAYS = 3


class Archive:
    """A pynetdicom archive answering every C-STORE with ``status``."""

    def __init__(self, status: int = 0x0000) -> None:
        self.port = free_port()
        self.status = status
        self.stored: list[str] = []
        self._lock = threading.Lock()
        ae = AE(ae_title="ARCHIVE")
        for context in StoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, TRANSFER_SYNTAXES)
        self.server: Any = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)]
        )

    def _store(self, event: Any) -> int:
        with self._lock:
            if self.status == 0x0000:
                self.stored.append(str(event.dataset.SOPInstanceUID))
            return self.status

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    def destination(self, name: str) -> Destination:
        return Destination(name=name, host="127.0.0.1", port=self.port, ae_title="ARCHIVE")


@pytest.fixture
def archives() -> Iterator[list[Archive]]:
    servers = [Archive(), Archive()]
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture
def settings(settings: Settings, archives: list[Archive]) -> Settings:
    return settings.replace(
        destinations=(archives[0].destination("pacs"), archives[1].destination("mirror")),
        outbox_backoff_seconds=0.05,
        outbox_backoff_cap_seconds=0.2,
    )


def _retention(services: Any, days_later: float, days: int = DAYS) -> Retention:
    later = datetime.now(UTC) + timedelta(days=days_later)
    return Retention(services.store, services.blobs, services.audit, days, clock=lambda: later)


def _states(services: Any) -> list[str]:
    return [r["state"] for r in services.store.query("SELECT state FROM outbox_jobs ORDER BY id")]


def _dicom_capture(services: Any) -> tuple[str, Path]:
    data = op_bytes(fundus(seed=7, size=(120, 160)))
    capture = services.ingestor.ingest(Incoming(data=data, source=Source.DICOM, user_id="ae:CAM"))
    row = services.store.one("SELECT file_path FROM captures WHERE id = ?", (capture.id,))
    uid = str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID)
    return uid, services.blobs.resolve(row["file_path"])


def _deletions(services: Any) -> list[dict[str, Any]]:
    return services.store.query("SELECT * FROM audit_events WHERE event_id = '110105'")


def test_files_go_only_after_the_period_following_delivery_to_every_destination(
    services: Any,
) -> None:
    uid, path = _dicom_capture(services)
    wait_for(lambda: _states(services) == ["delivered", "delivered"])
    assert _retention(services, DAYS - 0.5).sweep() == 0 and path.exists()  # not yet

    assert _retention(services, DAYS + 0.5).sweep() == 1
    assert not path.exists()
    row = services.store.one("SELECT purged_at FROM captures WHERE sop_instance_uid = ?", (uid,))
    assert row["purged_at"] is not None  # the row (identity, results) stays, marked
    (event,) = _deletions(services)
    assert (event["action"], event["user_id"], event["outcome"]) == ("D", "system:retention", 0)
    assert event["patient_id"] == "PAT001" and json.loads(event["sop_instance_uids"]) == [uid]
    detail = json.loads(event["detail"])
    assert detail["reason"] == "retention" and detail["retention_days"] == DAYS
    assert services.audit.verify().ok
    assert _retention(services, DAYS + 10).sweep() == 0 and len(_deletions(services)) == 1


def test_a_dead_letter_keeps_the_files_until_it_is_delivered_too(
    services: Any, archives: list[Archive]
) -> None:
    archives[1].status = 0xC000  # the mirror refuses it
    _, path = _dicom_capture(services)
    wait_for(lambda: sorted(_states(services)) == ["dead", "delivered"])
    assert _retention(services, 1000).sweep() == 0 and path.exists()

    archives[1].status = 0x0000
    assert queue.requeue_dead(services.store) == 1
    services.forwarder.notify()
    wait_for(lambda: _states(services) == ["delivered", "delivered"])
    assert _retention(services, DAYS - 0.5).sweep() == 0  # counted from the last delivery
    assert _retention(services, DAYS + 0.5).sweep() == 1 and not path.exists()


def test_a_pending_job_keeps_the_files(services: Any, archives: list[Archive]) -> None:
    archives[1].stop()  # the mirror is down: its job waits and retries
    _, path = _dicom_capture(services)
    wait_for(
        lambda: services.store.scalar(
            "SELECT count(*) FROM outbox_jobs WHERE destination = 'mirror' AND attempts >= 2"
        )
    )
    assert "delivered" in _states(services)
    assert _retention(services, 1000).sweep() == 0 and path.exists()
    assert _deletions(services) == []


def test_retention_days_zero_never_deletes(services: Any) -> None:
    _, path = _dicom_capture(services)
    wait_for(lambda: _states(services) == ["delivered", "delivered"])
    keep = _retention(services, 365 * 100, days=0)
    assert keep.sweep() == 0 and path.exists()
    keep.start()
    assert not keep.running()  # no timer at all
    assert services.retention.days == 0 and not services.retention.running()  # the default


def test_a_camera_jpeg_and_the_op_made_from_it_go_together(services: Any) -> None:
    jpeg = jpeg_bytes(fundus(seed=9, size=(240, 320), eye="L"))
    capture = services.ingestor.ingest(
        Incoming(
            data=jpeg,
            source=Source.UPLOAD,
            user_id="tester",
            fields={"patient_id": "RET-1", "laterality": "L"},
        )
    )
    wait_for(lambda: _states(services) == ["delivered", "delivered"])
    photo = services.store.one("SELECT file_path FROM captures WHERE id = ?", (capture.id,))
    op = services.store.one("SELECT * FROM derived_objects WHERE capture_pk = ?", (capture.id,))
    files = [services.blobs.resolve(photo["file_path"]), services.blobs.resolve(op["file_path"])]
    assert all(f.exists() for f in files)

    assert _retention(services, DAYS + 1).sweep() == 1
    assert not any(f.exists() for f in files)
    purged = services.store.one("SELECT purged_at FROM derived_objects WHERE id = ?", (op["id"],))[
        "purged_at"
    ]
    assert purged is not None
    (event,) = _deletions(services)
    assert json.loads(event["sop_instance_uids"]) == [op["sop_instance_uid"]]
    assert event["patient_id"] == "RET-1" and json.loads(event["detail"])["objects"] == ["op"]


def test_visit_documents_follow_their_own_delivery(services: Any, archives: list[Archive]) -> None:
    """An SR with no capture of its own (a visit document): deleted after its own delivery."""
    archives[1].status = 0xC000
    store, blobs = services.store, services.blobs
    data = op_bytes(fundus(seed=11, size=(96, 128)), patient_id="DOC-1")
    uid = str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID)
    relative = blobs.put(data, "application/dicom")
    with store.write() as tx:
        tx.insert(
            "derived_objects",
            {
                "capture_pk": None,
                "visit_key": "patient:1:2026-11-29",
                "kind": "sr",
                "sop_class_uid": "1.2.840.10008.5.1.4.1.1.88.34",
                "sop_instance_uid": uid,
                "series_instance_uid": "2.25.1",
                "study_instance_uid": "2.25.2",
                "file_path": relative,
                "created_at": datetime.now(UTC).isoformat(),
            },
        )
        for name in ("pacs", "mirror"):
            queue.enqueue(
                tx,
                kind="sr",
                destination=name,
                sop_instance_uid=uid,
                file_path=relative,
                study=None,
            )
    services.forwarder.notify()
    wait_for(lambda: _states(services) == ["delivered", "dead"])
    assert _retention(services, 1000).sweep() == 0 and blobs.resolve(relative).exists()
    archives[1].status = 0x0000
    queue.requeue_dead(services.store)
    services.forwarder.notify()
    wait_for(lambda: _states(services) == ["delivered", "delivered"])
    assert _retention(services, DAYS + 1).sweep() == 1
    assert not blobs.resolve(relative).exists()
    (event,) = _deletions(services)
    assert json.loads(event["detail"])["visit"] == "patient:1:2026-11-29"


def test_files_left_by_a_crash_after_the_commit_are_removed_at_start(services: Any) -> None:
    _, path = _dicom_capture(services)
    wait_for(lambda: _states(services) == ["delivered", "delivered"])
    data = path.read_bytes()
    sweeper = _retention(services, DAYS + 1)
    assert sweeper.sweep() == 1
    path.write_bytes(data)  # as if the process died between the commit and the removal
    assert sweeper.recover() == 1 and not path.exists()
    assert len(_deletions(services)) == 1  # the deletion was already audited, once


def test_the_service_runs_the_sweep_when_retention_is_set(settings: Settings) -> None:
    from appliance.runtime.services import Services

    services = Services(settings.replace(retention_days=2))
    services.start(dicom=False, hotfolder=False)
    try:
        assert services.retention.days == 2
        assert services.retention.running()
    finally:
        services.stop()
    assert not services.retention.running()


def test_with_storage_commitment_files_wait_for_the_commitment(
    settings: Settings, archives: list[Archive]
) -> None:
    """Delivered is not enough for a destination with storage_commitment on: the files stay
    until the archive's N-EVENT-REPORT commits them, and the period counts from then."""
    from dataclasses import replace

    from pydicom.dataset import Dataset

    from appliance.runtime.services import Services

    pacs = replace(archives[0].destination("pacs"), storage_commitment=True)
    services = Services(settings.replace(destinations=(pacs, archives[1].destination("mirror"))))
    services.start(dicom=False, hotfolder=False)
    try:
        uid, path = _dicom_capture(services)
        wait_for(lambda: _states(services) == ["delivered", "delivered"])
        # this archive has no Storage Commitment: the request is refused, nothing is committed
        wait_for(lambda: services.store.one("SELECT * FROM commitment_transactions"))
        assert _retention(services, 1000).sweep() == 0 and path.exists()
        assert _deletions(services) == []

        transaction = services.store.one("SELECT * FROM commitment_transactions")
        info = Dataset()
        info.TransactionUID = transaction["transaction_uid"]
        item = Dataset()
        item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.5.1"
        item.ReferencedSOPInstanceUID = uid
        info.ReferencedSOPSequence = [item]
        assert services.commitments.on_report(1, info, "ARCHIVE", "127.0.0.1") == 0x0000
        job = services.store.one("SELECT * FROM outbox_jobs WHERE destination = 'pacs'")
        assert job["commitment"] == "committed"
        assert _retention(services, DAYS - 0.5).sweep() == 0  # counted from the commitment
        assert _retention(services, DAYS + 0.5).sweep() == 1 and not path.exists()
    finally:
        services.stop()


def test_an_octs_arrays_go_with_the_volume(services: Any) -> None:
    from appliance.visits import ImageRecord
    from tests.pipeline.test_oct_pipeline import opt_bytes

    capture = services.ingestor.ingest(
        Incoming(data=opt_bytes("R"), source=Source.DICOM, user_id="ae:OCT")
    )
    row = wait_for(
        lambda: services.store.one(
            "SELECT payload FROM results WHERE capture_pk = ?", (capture.id,)
        ),
        timeout=60,
    )
    scan = ImageRecord.parse(row["payload"]).oct
    assert scan is not None and scan.thickness_map and scan.bscan and scan.bscan_layers
    assert scan.layers  # every B-scan's boundaries and fluid
    opm = services.store.one("SELECT * FROM derived_objects WHERE kind = 'opm'")
    assert opm is not None and opm["capture_pk"] == capture.id  # its thickness map object
    seg = wait_for(  # and its Segmentation, built right after the analysis
        lambda: services.store.one("SELECT * FROM derived_objects WHERE kind = 'seg'"), timeout=60
    )
    assert seg["capture_pk"] == capture.id
    paths = (scan.thickness_map, scan.bscan, scan.bscan_layers, scan.layers, opm["file_path"],
             seg["file_path"])  # fmt: skip
    made = [services.blobs.resolve(p) for p in paths]
    assert all(path.exists() for path in made)
    # the OPT as received, its thickness map and its Segmentation, each to both destinations
    wait_for(lambda: _states(services) == ["delivered"] * 6, timeout=30)
    assert _retention(services, DAYS + 0.5).sweep() == 1
    assert not any(path.exists() for path in made)
