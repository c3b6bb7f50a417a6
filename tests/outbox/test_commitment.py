"""Storage Commitment (push model) against a pynetdicom archive that answers N-ACTION and sends
its N-EVENT-REPORT on a new association to the appliance's own running SCP."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_role, evt
from pynetdicom.presentation import StoragePresentationContexts

from appliance import config
from appliance.capture import Incoming
from appliance.capture.scp import TRANSFER_SYNTAXES
from appliance.config import Destination, Settings
from appliance.domain import Source
from appliance.outbox import commitment, queue
from appliance.outbox.commit_dimse import PUSH_MODEL, PUSH_MODEL_INSTANCE, read_report
from tests.conftest import free_port, fundus, op_bytes, wait_for

NO_SUCH_INSTANCE = 0x0112


class CommitArchive:
    """Stores every C-STORE; answers N-ACTION, then reports on a new association to the
    appliance: instances named in ``refuse`` (uid → times) are reported failed that often;
    the first ``silent`` requests get no report at all."""

    def __init__(self, appliance_port: int) -> None:
        self.port = free_port()
        self.appliance_port = appliance_port
        self.refuse: dict[str, int] = {}
        self.silent = 0
        self.action_statuses: list[int] = []  # answers to the next N-ACTIONs (then success)
        self.stores: list[str] = []
        self.requests: list[tuple[str, list[str]]] = []
        self.report_statuses: list[int] = []
        self._lock = threading.Lock()
        ae = AE(ae_title="ARCHIVE")
        for context in StoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, TRANSFER_SYNTAXES)
        ae.add_supported_context(PUSH_MODEL, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        self.server: Any = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self._store), (evt.EVT_N_ACTION, self._action)],
        )

    def _store(self, event: Any) -> int:
        with self._lock:
            self.stores.append(str(event.dataset.SOPInstanceUID))
        return 0x0000

    def _action(self, event: Any) -> tuple[int, None]:
        info = event.action_information
        uids = [str(item.ReferencedSOPInstanceUID) for item in info.ReferencedSOPSequence]
        classes = {
            str(i.ReferencedSOPInstanceUID): str(i.ReferencedSOPClassUID)
            for i in info.ReferencedSOPSequence
        }
        with self._lock:
            self.requests.append((str(info.TransactionUID), uids))
            if self.action_statuses:
                return self.action_statuses.pop(0), None
            if self.silent > 0:
                self.silent -= 1
                return 0x0000, None
            failed = [u for u in uids if self.refuse.get(u, 0) > 0]
            for uid in failed:
                self.refuse[uid] -= 1
        report = Dataset()
        report.TransactionUID = info.TransactionUID
        report.ReferencedSOPSequence = [_ref(classes[u], u) for u in uids if u not in failed]
        if failed:
            report.FailedSOPSequence = [_ref(classes[u], u, NO_SUCH_INSTANCE) for u in failed]
        threading.Thread(target=self.report, args=(report, 2 if failed else 1)).start()
        return 0x0000, None

    def report(self, info: Dataset, event_type: int) -> None:
        ae = AE(ae_title="ARCHIVE")
        ae.add_requested_context(PUSH_MODEL, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        role = build_role(PUSH_MODEL, scu_role=True, scp_role=True)
        assoc = ae.associate("127.0.0.1", self.appliance_port, ae_title="SCREENING", ext_neg=[role])
        assert assoc.is_established
        status, _ = assoc.send_n_event_report(info, event_type, PUSH_MODEL, PUSH_MODEL_INSTANCE)
        assoc.release()
        with self._lock:
            self.report_statuses.append(int(status.Status))

    def stop(self) -> None:
        self.server.shutdown()


def _ref(sop_class: str, uid: str, reason: int | None = None) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = uid
    if reason is not None:
        item.FailureReason = reason
    return item


@pytest.fixture
def archive(settings: Settings) -> Iterator[CommitArchive]:
    server = CommitArchive(settings.dicom_port)
    yield server
    server.stop()


@pytest.fixture
def services(settings: Settings, archive: CommitArchive) -> Iterator[Any]:
    from appliance.runtime.services import Services

    destination = Destination(
        name="pacs",
        host="127.0.0.1",
        port=archive.port,
        ae_title="ARCHIVE",
        timeout=5,
        storage_commitment=True,
    )
    svc = Services(
        settings.replace(
            destinations=(destination,),
            outbox_backoff_seconds=0.05,
            outbox_backoff_cap_seconds=0.2,
        )
    )
    svc.commitments.poll_seconds = 0.05
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()


def _capture(services: Any, seed: int = 3) -> str:
    data = op_bytes(fundus(seed=seed, size=(96, 128)))
    services.ingestor.ingest(Incoming(data=data, source=Source.DICOM, user_id="ae:CAM"))
    return str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID)


def _job(services: Any, uid: str) -> dict[str, Any]:
    row = services.store.one("SELECT * FROM outbox_jobs WHERE sop_instance_uid = ?", (uid,))
    return row or {}  # {} until the pipeline queued it


def _commit_events(services: Any) -> list[dict[str, Any]]:
    rows = services.store.query("SELECT * FROM audit_events WHERE event_id = '110104'")
    return [r | {"d": json.loads(r["detail"])} for r in rows if "storage_commitment" in r["detail"]]


def test_delivered_instances_are_committed_and_audited(
    services: Any, archive: CommitArchive
) -> None:
    uids = [_capture(services, seed) for seed in (1, 2)]
    wait_for(lambda: all(_job(services, u).get("commitment") == "committed" for u in uids))
    assert set(archive.stores) == set(uids) and archive.report_statuses
    assert set(archive.report_statuses) == {0x0000}
    requested = {u for _, batch in archive.requests for u in batch}
    assert requested == set(uids)
    transactions = services.store.query("SELECT * FROM commitment_transactions")
    assert {t["state"] for t in transactions} == {"answered"}
    assert {t["transaction_uid"] for t in transactions} == {t for t, _ in archive.requests}
    items = services.store.query("SELECT * FROM commitment_items")
    assert sorted(i["sop_instance_uid"] for i in items) == sorted(uids)
    assert {i["state"] for i in items} == {"committed"}
    events = _commit_events(services)
    assert {e["d"]["result"] for e in events} == {"committed"} and events[0]["outcome"] == 0
    assert sorted(u for e in events for u in json.loads(e["sop_instance_uids"])) == sorted(uids)
    assert events[0]["d"]["calling_ae"] == "ARCHIVE"
    assert commitment.summary(services.store) == {
        "pacs": {"committed": 2, "awaiting_commitment": 0, "not_committed": 0}
    }
    assert services.audit.verify().ok


def test_a_refused_instance_is_sent_again_then_committed(
    services: Any, archive: CommitArchive
) -> None:
    keep = _capture(services, 4)
    wait_for(lambda: _job(services, keep).get("commitment") == "committed")
    uid_data = op_bytes(fundus(seed=5, size=(96, 128)))
    uid = str(pydicom.dcmread(io.BytesIO(uid_data)).SOPInstanceUID)
    archive.refuse[uid] = 1
    services.ingestor.ingest(Incoming(data=uid_data, source=Source.DICOM, user_id="ae:CAM"))
    job = wait_for(lambda: (j := _job(services, uid)).get("commitment") == "committed" and j)
    assert archive.stores.count(uid) == 2  # C-STORE again after the refusal
    assert job["state"] == "delivered" and job["commit_failures"] == 1
    failed = services.store.one(
        "SELECT * FROM commitment_items WHERE sop_instance_uid = ? AND state = 'failed'", (uid,)
    )
    assert failed is not None and failed["failure_reason"] == "0x0112"
    (refusal,) = [e for e in _commit_events(services) if e["d"]["result"] == "not committed"]
    assert refusal["outcome"] == 4 and refusal["d"]["failures"] == {uid: ["0x0112", "sent again"]}
    assert _job(services, keep).get("commitment") == "committed"  # the other one is untouched


def test_refused_again_and_again_is_dead_lettered(services: Any, archive: CommitArchive) -> None:
    data = op_bytes(fundus(seed=6, size=(96, 128)))
    uid = str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID)
    archive.refuse[uid] = 99
    services.ingestor.ingest(Incoming(data=data, source=Source.DICOM, user_id="ae:CAM"))
    job = wait_for(lambda: (j := _job(services, uid)).get("state") == "dead" and j)
    assert job["last_status"] == "commitment-failed" and job["commitment"] == "failed"
    assert job["commit_failures"] == commitment.MAX_COMMIT_FAILURES
    assert archive.stores.count(uid) == commitment.MAX_COMMIT_FAILURES
    last = _commit_events(services)[-1]
    assert last["outcome"] == 8 and last["d"]["failures"][uid][1] == "dead-lettered"
    assert commitment.summary(services.store)["pacs"]["not_committed"] == 1
    archive.refuse[uid] = 0
    assert queue.requeue_dead(services.store) == 1  # counted afresh
    services.forwarder.notify()
    wait_for(lambda: _job(services, uid).get("commitment") == "committed")


def test_an_unanswered_request_is_made_again(services: Any, archive: CommitArchive) -> None:
    archive.silent = 1
    services.commitments.timeout_seconds = 0.3
    uid = _capture(services, 7)
    wait_for(lambda: _job(services, uid).get("commitment") == "committed")
    assert len(archive.requests) == 2 and archive.requests[0][0] != archive.requests[1][0]
    states = [
        r["state"]
        for r in services.store.query("SELECT state FROM commitment_transactions ORDER BY id")
    ]
    assert states == ["expired", "answered"]
    results = [e["d"]["result"] for e in _commit_events(services)]
    assert results == ["no answer", "committed"]


def test_a_report_for_an_unknown_transaction_is_refused(
    services: Any, archive: CommitArchive
) -> None:
    info = Dataset()
    info.TransactionUID = "2.25.1234"
    info.ReferencedSOPSequence = [_ref("1.2.840.10008.5.1.4.1.1.77.1.5.1", "2.25.99")]
    archive.report(info, 1)
    assert archive.report_statuses == [0x0110]
    uid = _capture(services, 8)  # still answers afterwards
    wait_for(lambda: _job(services, uid).get("commitment") == "committed")


def test_a_refused_request_is_made_again_later(services: Any, archive: CommitArchive) -> None:
    services.commitments.retry_seconds = 0.2
    archive.action_statuses = [0x0110]
    uid = _capture(services, 9)
    wait_for(lambda: _job(services, uid).get("commitment") == "committed")
    states = [
        (r["state"], r["error"])
        for r in services.store.query("SELECT * FROM commitment_transactions ORDER BY id")
    ]
    assert states == [("unsent", "N-ACTION refused 0x0110"), ("answered", "")]
    results = [e["d"]["result"] for e in _commit_events(services)]
    assert results == ["request failed", "committed"]


def test_outbox_status_json_shows_commitment(
    services: Any, archive: CommitArchive, settings: Settings, tmp_path: Any
) -> None:
    uid = _capture(services, 10)
    wait_for(lambda: _job(services, uid).get("commitment") == "committed")
    toml = tmp_path / "a.toml"
    toml.write_text(
        f'data_dir = "{settings.data_dir}"\n[[destinations]]\nname = "pacs"\nhost = "127.0.0.1"\n'
        f'port = {archive.port}\nae_title = "ARCHIVE"\nstorage_commitment = true\n'
    )
    out = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "--config", str(toml)]
        + ["outbox", "status", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    status = json.loads(out.stdout)
    assert status["pacs"]["delivered"]["count"] == 1
    assert status["pacs"]["commitment"] == {
        "committed": 1,
        "awaiting_commitment": 0,
        "not_committed": 0,
    }


def test_read_report_needs_a_transaction_uid() -> None:
    with pytest.raises(ValueError, match="Transaction UID"):
        read_report(1, Dataset())
    info = Dataset()
    info.TransactionUID = "2.25.7"
    info.FailedSOPSequence = [_ref("1.2.3", "2.25.8", 0x0119)]
    report = read_report(2, info)
    assert report.committed == () and report.failed == (("2.25.8", "0x0119"),)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"storage_commitment": "yes"}, "storage_commitment must be true or false"),
        (
            {"kind": "stow", "url": "http://x/dicom-web", "storage_commitment": True},
            "storage_commitment needs kind = 'dimse'",
        ),
    ],
)
def test_storage_commitment_setting_is_checked(table: dict[str, Any], message: str) -> None:
    base = {"name": "pacs", "host": "h", "port": 104, "ae_title": "A"}
    with pytest.raises(ValueError, match=message):
        config.load(environ={}, destinations=[base | table])
    (loaded,) = config.load(
        environ={}, destinations=[base | {"storage_commitment": True}]
    ).destinations
    assert loaded.storage_commitment is True
    assert config.load(environ={}, destinations=[base]).destinations[0].storage_commitment is False
