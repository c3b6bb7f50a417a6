"""C-STORE sessions against a real pynetdicom archive: one association across batches, contexts
the archive refuses, unreadable files, and two lanes sending one backlog at the same time."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid
from pynetdicom import AE, evt

from appliance.audit import AuditTrail
from appliance.outbox import queue
from appliance.outbox.dimse import DimseTarget
from appliance.outbox.policy import Verdict
from appliance.outbox.worker import Forwarder
from appliance.store import BlobStore, Store
from tests.conftest import free_port, fundus, op_bytes

OP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.5.1"
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"


class OpOnlyArchive:
    """Takes Ophthalmic Photography in JPEG Baseline only; counts associations and stores."""

    def __init__(self) -> None:
        self.port = free_port()
        self.stored: list[str] = []
        self.associations = 0
        self._lock = threading.Lock()
        ae = AE(ae_title="ARCHIVE")
        ae.add_supported_context(OP_CLASS, [JPEGBaseline8Bit])
        self.server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self._store), (evt.EVT_ACCEPTED, self._accepted)],
        )

    def _accepted(self, event: Any) -> None:
        with self._lock:
            self.associations += 1

    def _store(self, event: Any) -> int:
        with self._lock:
            self.stored.append(str(event.dataset.SOPInstanceUID))
        return 0x0000

    def target(self, lanes: int = 1) -> DimseTarget:
        return DimseTarget("pacs", "127.0.0.1", self.port, "ARCHIVE", "SCREENING", 5.0, lanes)


@pytest.fixture
def archive() -> Iterator[OpOnlyArchive]:
    server = OpOnlyArchive()
    yield server
    server.server.shutdown()


def _op_files(folder: Path, count: int) -> tuple[list[Path], list[str]]:
    image = fundus(size=(96, 128))
    paths, uids = [], []
    for n in range(count):
        data = op_bytes(image)
        path = folder / f"op{n}.dcm"
        path.write_bytes(data)
        paths.append(path)
        uids.append(str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID))
    return paths, uids


def _secondary_capture(folder: Path) -> Path:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SC_CLASS
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SC_CLASS
    ds.PatientID = "SC-1"
    path = folder / "sc.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_one_association_carries_every_batch_of_a_session(
    archive: OpOnlyArchive, tmp_path: Path
) -> None:
    files, uids = _op_files(tmp_path, 6)
    with archive.target().session() as session:
        answers = [session.send(files[i : i + 2]) for i in (0, 2, 4)]
        assert session.associations == 1
    assert [r.verdict for batch in answers for r in batch] == [Verdict.DONE] * 6
    assert archive.stored == uids and archive.associations == 1


def test_a_refused_context_is_dead_lettered_and_the_rest_of_the_batch_is_sent(
    archive: OpOnlyArchive, tmp_path: Path
) -> None:
    (op,), (uid,) = _op_files(tmp_path, 1)
    gone = tmp_path / "gone.dcm"
    sc, dead_op, ok_op = archive.target().send([_secondary_capture(tmp_path), gone, op])
    assert (sc.verdict, sc.status) == (Verdict.DEAD, "0x0122") and SC_CLASS in sc.message
    assert (dead_op.verdict, dead_op.status) == (Verdict.DEAD, "unreadable")
    assert ok_op.verdict is Verdict.DONE and archive.stored == [uid]


def test_two_lanes_deliver_a_backlog_each_object_once(
    archive: OpOnlyArchive, tmp_path: Path
) -> None:
    data_dir = tmp_path / "var"
    store = Store(data_dir / "appliance.db")
    blobs = BlobStore(data_dir)
    trail = AuditTrail(store, data_dir / "audit.head")
    target = archive.target(lanes=2)  # one lane alone may send 16 of the 30 in a pass
    forwarder = Forwarder(store, blobs, trail, [target], batch=4, batches_per_pass=4)
    files, uids = _op_files(tmp_path, 30)
    try:
        with store.write() as tx:
            for path, uid in zip(files, uids, strict=True):
                queue.enqueue(
                    tx,
                    kind="received",
                    destination="pacs",
                    sop_instance_uid=uid,
                    file_path=blobs.put(path.read_bytes(), "application/dicom"),
                    study=None,
                )
        assert forwarder.pass_once() == 30
        rows = store.query("SELECT state, attempts FROM outbox_jobs")
        assert {(r["state"], r["attempts"]) for r in rows} == {("delivered", 1)}
        assert sorted(archive.stored) == sorted(uids)  # each sent once, none missing
        assert archive.associations == 2  # one per lane, kept across its batches
    finally:
        store.close()
