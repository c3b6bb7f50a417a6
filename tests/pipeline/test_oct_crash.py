"""Crash loss on the OCT path: the appliance killed with SIGKILL, restarted, nothing lost.

The appliance runs as its own process (tests/pipeline/oct_crash_child.py: SCP, worker,
forwarder) and a camera sends it an OPT volume. The process is killed -9 at one point of the
volume's way: stored but not analysed, analysed but nothing recorded, its arrays and thickness
map written but not recorded (no outbox row), its analysis recorded but its visit's SR and PDF
not yet built, those built but not recorded, and in the middle of a send to the archive (the
archive, a pynetdicom SCP in this test, holds the C-STORE). The worker's ``step_hook`` stops
the child at the step and says so; the test kills it then, so the crash is at a known point and
no sleep races it. After a restart the OPT and every object made from it (thickness map, SR,
PDF) must reach the archive exactly once under the UIDs recorded for them, the analysis must be
redone (one result, measured), SQLite must be sound and the audit chain intact.

And beside the crashes: a capture whose result cannot be stored (the disk fills between its
arrival and its analysis) holds up no other capture and is not redone in a loop; it is stored
once the disk has room again.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import IO, Any

import pydicom
import pytest
from pynetdicom import AE

from appliance.config import Destination, Settings
from appliance.dicom.thickness_map import OPHTHALMIC_THICKNESS_MAP
from appliance.pipeline.held import HOLD_SECONDS
from appliance.synth.oct.dicom import OPT_SOP_CLASS, OptHeader
from tests.conftest import free_port, op_bytes, wait_for
from tests.pipeline.test_oct_pipeline import opt_bytes
from tests.pipeline.uid_archive import UidArchive

ROOT = Path(__file__).resolve().parents[2]
# what the database and the disk hold when the process is killed at each step: capture status,
# results, derived objects, outbox jobs, documents owed, DICOM files on disk (OPT, map, SR, PDF)
AT_KILL = {
    "analysing": ("received", 0, 0, 0, 0, 1),
    "analysed": ("received", 0, 0, 0, 0, 1),
    "oct_documents_written": ("received", 0, 0, 0, 0, 2),  # the map's file, no row
    "outcome": ("processed", 1, 1, 2, 1, 2),  # the segmentation owed, built after the commit
    "documents_built": ("processed", 1, 1, 2, 1, 3),  # the segmentation built first, owed, no row
}
STEPS = list(AT_KILL)


class Child:
    """The appliance process, stopped at a step and killed there."""

    def __init__(self, root: Path, archive_port: int) -> None:
        self.root = root
        self.data = root / "var"
        self.dicom_port = free_port()
        self.config = root / "appliance.toml"
        self.config.write_text(
            "\n".join(
                [
                    f'data_dir = "{self.data}"',
                    'dicom_host = "127.0.0.1"',
                    f"dicom_port = {self.dicom_port}",
                    "min_free_disk_mb = 0",
                    f'models_dir = "{root / "no-models"}"',
                    "documents_quiet_seconds = 1.0",  # an OCT-only visit gets its SR and PDF
                    "outbox_backoff_seconds = 0.2",
                    "outbox_backoff_cap_seconds = 1.0",
                    "",
                    "[[destinations]]",
                    'name = "pacs"',
                    'host = "127.0.0.1"',
                    f"port = {archive_port}",
                    'ae_title = "ARCHIVE"',
                    "timeout = 5",
                    "",
                ]
            )
        )
        self.process: subprocess.Popen[str] | None = None
        self.starts = 0

    def start(self, stop_at: str | None = None) -> None:
        self.starts += 1
        log = (self.root / f"child-{self.starts}.log").open("wb")
        command = [sys.executable, "-m", "tests.pipeline.oct_crash_child", str(self.config)]
        self.process = subprocess.Popen(
            [*command, *([stop_at] if stop_at else [])],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        log.close()
        self.expect("READY")

    def expect(self, line: str) -> None:
        """Wait for the child to print ``line`` (it blocks there, or has started)."""
        assert self.process is not None and self.process.stdout is not None
        stdout: IO[str] = self.process.stdout
        got = stdout.readline().strip()
        assert got == line, f"child said {got!r}, not {line!r}:\n{self.log_tail()}"

    def kill9(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def log_tail(self, lines: int = 30) -> str:
        text = "".join(p.read_text(errors="replace") for p in sorted(self.root.glob("child-*")))
        return "\n".join(text.splitlines()[-lines:])

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        uri = f"file:{self.data / 'appliance.db'}?mode=ro"
        with closing(sqlite3.connect(uri, uri=True, timeout=10)) as conn:
            conn.row_factory = sqlite3.Row
            return list(conn.execute(sql, params))


@pytest.fixture
def archive() -> Iterator[UidArchive]:
    server = UidArchive(free_port()).start()
    yield server
    server.stop()


@pytest.fixture
def child(tmp_path: Path, archive: UidArchive) -> Iterator[Child]:
    node = Child(tmp_path, archive.port)
    try:
        yield node
    finally:
        node.stop()


def _c_store(port: int, data: bytes) -> None:
    ds = pydicom.dcmread(io.BytesIO(data))
    ae = AE(ae_title="OCTCAM")
    ae.add_requested_context(OPT_SOP_CLASS, str(ds.file_meta.TransferSyntaxUID))
    assoc = ae.associate("127.0.0.1", port, ae_title="SCREENING")
    assert assoc.is_established
    try:
        assert int(assoc.send_c_store(ds).Status) == 0x0000
    finally:
        assoc.release()


def _all_delivered(child: Child) -> bool:
    kinds = {r["kind"] for r in child.query("SELECT kind FROM derived_objects")}
    states = {r["state"] for r in child.query("SELECT state FROM outbox_jobs")}
    return kinds >= {"opm", "seg", "sr", "pdf"} and states == {"delivered"}


def _assert_everything_reached_the_archive_once(
    child: Child, archive: UidArchive, opt_uid: str
) -> None:
    derived = child.query("SELECT kind, sop_instance_uid FROM derived_objects ORDER BY id")
    kinds = sorted(r["kind"] for r in derived)
    assert kinds == ["opm", "pdf", "seg", "sr"], [dict(r) for r in derived]
    made = {r["sop_instance_uid"] for r in derived}
    jobs = child.query("SELECT sop_instance_uid, destination, state FROM outbox_jobs")
    assert sorted((j["sop_instance_uid"], j["state"]) for j in jobs) == sorted(
        (uid, "delivered") for uid in made | {opt_uid}
    )
    # at the archive: the OPT and what was made from it, each once, nothing minted twice
    assert archive.uids() == made | {opt_uid}
    assert all(archive.deliveries[uid] == 1 for uid in made | {opt_uid}), archive.deliveries
    opm = next(r["sop_instance_uid"] for r in derived if r["kind"] == "opm")
    assert archive.stored[opm].SOPClassUID == OPHTHALMIC_THICKNESS_MAP
    # the analysis was redone, once: one result, measured
    [capture] = child.query("SELECT id, status FROM captures")
    results = child.query("SELECT payload FROM results WHERE capture_pk = ?", (capture["id"],))
    assert capture["status"] == "processed" and len(results) == 1
    assert json.loads(results[0]["payload"])["status"] == "measured"
    assert child.query("SELECT count(*) FROM documents_due")[0][0] == 0
    assert child.query("PRAGMA integrity_check")[0][0] == "ok"
    verify = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "--config", str(child.config), "audit", "verify"],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr


def _state(child: Child) -> tuple[str, int, int, int, int, int]:
    def count(table: str) -> int:
        return int(child.query(f"SELECT count(*) FROM {table}")[0][0])

    [capture] = child.query("SELECT status FROM captures")
    files = len(list((child.data / "blobs").glob("*/*.dcm")))
    return (capture["status"], count("results"), count("derived_objects"), count("outbox_jobs"),
            count("documents_due"), files)  # fmt: skip


def _volume(patient: str) -> tuple[bytes, str]:
    header = OptHeader(patient_id=patient, study_instance_uid="1.2.826.0.1.3680043.8.498.7")
    data = opt_bytes("R", header=header)
    return data, str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID)


@pytest.mark.parametrize("step", STEPS)
def test_a_kill_9_at_any_step_of_an_oct_loses_and_duplicates_nothing(
    child: Child, archive: UidArchive, step: str
) -> None:
    child.start(stop_at=step)
    data, opt_uid = _volume(f"CRASH-{step}")
    _c_store(child.dicom_port, data)
    child.expect(f"AT {step}")
    child.kill9()
    assert _state(child) == AT_KILL[step]
    child.start()  # the restart: no stop
    wait_for(lambda: _all_delivered(child), timeout=120, interval=0.2)
    _assert_everything_reached_the_archive_once(child, archive, opt_uid)


def test_a_kill_9_in_the_middle_of_a_send_resends_and_duplicates_nothing(
    child: Child, archive: UidArchive
) -> None:
    archive.hold()  # the archive takes the first C-STORE and does not answer it
    child.start()
    data, opt_uid = _volume("CRASH-SEND")
    _c_store(child.dicom_port, data)
    assert archive.held.wait(timeout=120), f"nothing was forwarded:\n{child.log_tail()}"
    child.kill9()
    leased = child.query("SELECT count(*) FROM outbox_jobs WHERE state = 'leased'")[0][0]
    assert leased >= 1  # the send was under way: its outcome unknown
    archive.release()
    child.start()
    wait_for(lambda: _all_delivered(child), timeout=120, interval=0.2)
    _assert_everything_reached_the_archive_once(child, archive, opt_uid)


def test_a_capture_whose_result_cannot_be_stored_holds_up_nothing(settings: Settings) -> None:
    from appliance.capture import Incoming
    from appliance.domain import Source
    from appliance.runtime.services import Services

    archive = Destination("pacs", "127.0.0.1", free_port(), "NOBODY", timeout=2)
    services = Services(settings.replace(destinations=(archive,)))
    services.start(dicom=False, hotfolder=False, worker=False)
    try:
        ids = [
            services.ingestor.ingest(
                Incoming(data=data, source=Source.DICOM, user_id="ae:CAM", calling_ae="CAM")
            ).id
            for data in (_volume("FULL-1")[0], op_bytes(patient_id="FULL-2"))
        ]
        # the disk fills after both arrived: the OCT's arrays cannot be written
        services.blobs.min_free_bytes = services.blobs.free_bytes() + 1
        assert services.pipeline.drain() == 2
        status = {r["id"]: r["status"] for r in services.store.query("SELECT * FROM captures")}
        assert status == {ids[0]: "received", ids[1]: "processed"}  # the photograph went on
        [event] = services.store.query(
            "SELECT outcome, detail FROM audit_events "
            "WHERE json_extract(detail, '$.stage') = 'store'"
        )
        detail = json.loads(event["detail"])
        assert event["outcome"] == 8 and detail["failed"] == "OutOfResources"
        assert "storage is nearly full" in detail["message"]
        # told success, so it goes to the archive as received while its analysis waits
        held = services.store.one("SELECT * FROM captures WHERE id = ?", (ids[0],))
        [job] = services.store.query(
            "SELECT kind, file_path FROM outbox_jobs WHERE sop_instance_uid = ?",
            (held["sop_instance_uid"],),
        )
        assert (job["kind"], job["file_path"]) == ("received", held["file_path"])
        assert services.pipeline.drain() == 0  # held back: not redone at once, in a loop
        services.blobs.min_free_bytes = 0  # room again
        later = time.monotonic() + HOLD_SECONDS[0] + 1
        assert services.pipeline.drain(now=later) == 1
        row = services.store.one("SELECT status FROM captures WHERE id = ?", (ids[0],))
        assert row["status"] == "processed"
        [result] = services.store.query(
            "SELECT payload FROM results WHERE capture_pk = ?", (ids[0],)
        )
        assert json.loads(result["payload"])["status"] == "measured"
        assert len(services.store.query("SELECT id FROM derived_objects WHERE kind = 'opm'")) == 1
        jobs = services.store.query(
            "SELECT id FROM outbox_jobs WHERE sop_instance_uid = ?", (held["sop_instance_uid"],)
        )
        assert len(jobs) == 1  # queued once, not again with its analysis
        assert services.audit.verify().ok
    finally:
        services.stop()
