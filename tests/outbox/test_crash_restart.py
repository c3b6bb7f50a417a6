"""Crash and outage with real processes: ``appliance serve`` killed with SIGKILL mid-send.

Orthanc (C-STORE and STOW-RS destinations on the same archive) is down while a camera sends
DICOM images and drops JPEGs into the hot folder, so every job waits queued. Orthanc comes
back, the appliance starts sending, and is killed -9 while a batch is leased (a TCP gate in front
of the C-STORE destination holds the forwarder's connection, so the lease is made to exist, not
polled for); both are then
restarted. Every object must arrive exactly once, under the SOP Instance UID it was given the
first time, with nothing missing.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import closing
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pynetdicom import AE

from tests.conftest import free_port, fundus, jpeg_bytes, op_bytes, wait_for
from tests.orthanc_server import Orthanc
from tests.tcp_gate import TcpGate

pytestmark = pytest.mark.tool("Orthanc")

DICOM_IMAGES = 16
JPEG_IMAGES = 8
DESTINATIONS = ("pacs", "web")


@cache
def _image(seed: int) -> np.ndarray:
    return fundus(seed=seed, size=(600, 800))


class Appliance:
    """``appliance serve`` as its own process, on its own data directory and ports."""

    def __init__(self, root: Path, orthanc: Orthanc, pacs_port: int) -> None:
        self.root = root
        self.data = root / "var"
        self.web_port, self.dicom_port = free_port(), free_port()
        self.config = root / "appliance.toml"
        self.config.write_text(
            "\n".join(
                [
                    f'data_dir = "{self.data}"',
                    'web_host = "127.0.0.1"',
                    f"web_port = {self.web_port}",
                    'dicom_host = "127.0.0.1"',
                    f"dicom_port = {self.dicom_port}",
                    "min_free_disk_mb = 0",
                    f'models_dir = "{root / "no-models"}"',
                    "hotfolder_stable_seconds = 0.3",
                    "hotfolder_poll_seconds = 0.1",
                    "outbox_backoff_seconds = 0.2",
                    "outbox_backoff_cap_seconds = 1.0",
                    "",
                    "[[destinations]]",
                    'name = "pacs"',
                    'host = "127.0.0.1"',
                    f"port = {pacs_port}",
                    'ae_title = "ORTHANC"',
                    "timeout = 5",
                    "",
                    "[[destinations]]",
                    'name = "web"',
                    'kind = "stow"',
                    f'url = "{orthanc.url}/dicom-web"',
                    "timeout = 5",
                    "",
                ]
            )
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = (self.root / f"serve-{self.starts}.log").open("wb")
        env = {**os.environ, "APPLIANCE_CONFIG": str(self.config)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "appliance.cli", "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        wait_for(self._ready, timeout=60, interval=0.1)

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"appliance serve exited:\n{self.log_tail()}")
        try:
            url = f"http://127.0.0.1:{self.web_port}/healthz"
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def kill9(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def log_tail(self, lines: int = 40) -> str:
        text = "".join(p.read_text(errors="replace") for p in sorted(self.root.glob("serve-*.log")))
        return "\n".join(text.splitlines()[-lines:])

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """Read the appliance's database as an outsider would (read-only)."""
        uri = f"file:{self.data / 'appliance.db'}?mode=ro"
        with closing(sqlite3.connect(uri, uri=True, timeout=10)) as conn:
            conn.row_factory = sqlite3.Row
            return list(conn.execute(sql, params))

    def states(self) -> dict[str, int]:
        rows = self.query("SELECT state, count(*) AS n FROM outbox_jobs GROUP BY state")
        return {row["state"]: row["n"] for row in rows}


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    server = Orthanc(tmp_path / "orthanc")
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def gate(orthanc: Orthanc) -> Iterator[TcpGate]:
    """The C-STORE destination reaches Orthanc through a gate the test can hold."""
    with TcpGate(orthanc.dicom_port) as server:
        yield server


@pytest.fixture
def appliance(tmp_path: Path, orthanc: Orthanc, gate: TcpGate) -> Iterator[Appliance]:
    node = Appliance(tmp_path, orthanc, gate.port)
    try:
        yield node
    finally:
        node.stop()


def _c_store(port: int, datasets: list[bytes]) -> None:
    """The camera: one association, every image answered with success."""
    ae = AE(ae_title="CAMERA")
    contexts = {
        (str(ds.file_meta.MediaStorageSOPClassUID), str(ds.file_meta.TransferSyntaxUID))
        for ds in (pydicom.dcmread(io.BytesIO(d)) for d in datasets)
    }
    for sop_class, syntax in contexts:
        ae.add_requested_context(sop_class, [syntax])
    assoc = ae.associate("127.0.0.1", port, ae_title="SCREENING")
    assert assoc.is_established
    try:
        for data in datasets:
            status = assoc.send_c_store(pydicom.dcmread(io.BytesIO(data)))
            assert status.Status == 0x0000
    finally:
        assoc.release()


def _drop_jpegs(inbox: Path) -> None:
    inbox.mkdir(parents=True, exist_ok=True)
    for n in range(JPEG_IMAGES):
        sidecar = {"patient_id": f"CRASH-{n // 2}", "laterality": "LR"[n % 2]}
        (inbox / f"photo{n}.json").write_text(json.dumps(sidecar))
        part = inbox / f"photo{n}.jpg.part"
        part.write_bytes(jpeg_bytes(_image(100 + n)))
        part.rename(inbox / f"photo{n}.jpg")


def test_kill_9_mid_send_and_an_archive_outage_lose_and_duplicate_nothing(
    orthanc: Orthanc, gate: TcpGate, appliance: Appliance
) -> None:
    # The archive is down from the start: everything the camera sends waits in the outbox.
    appliance.start()
    dicom = [op_bytes(_image(n), patient_id=f"CRASH-D{n // 2}") for n in range(DICOM_IMAGES)]
    received_uids = {str(pydicom.dcmread(io.BytesIO(d)).SOPInstanceUID) for d in dicom}
    _c_store(appliance.dicom_port, dicom)
    _drop_jpegs(appliance.data / "inbox")
    objects = DICOM_IMAGES + JPEG_IMAGES
    wait_for(lambda: sum(appliance.states().values()) == objects * len(DESTINATIONS), timeout=90)
    wait_for(  # the forwarder has tried the archive and is backing off
        lambda: appliance.query("SELECT count(*) FROM outbox_jobs WHERE attempts > 0")[0][0] > 0
    )
    assert appliance.states().get("delivered", 0) == 0

    # The archive returns; kill -9 the appliance while a batch is leased (mid-send). The forwarder
    # leases a batch before it connects, so a connection held open at the gate is a lease held.
    gate.hold()
    orthanc.start()
    assert gate.held.wait(timeout=60), "the forwarder never connected to the C-STORE archive"
    appliance.kill9()
    at_kill = appliance.states()
    assert at_kill.get("leased", 0) > 0, at_kill
    assert at_kill.get("delivered", 0) < objects * len(DESTINATIONS), at_kill

    # Restart both: the archive first stopped (an outage at restart too), then both up again.
    orthanc.stop()
    orthanc.start()
    gate.release()
    appliance.start()
    wait_for(
        lambda: appliance.states() == {"delivered": objects * len(DESTINATIONS)},
        timeout=120,
        interval=0.2,
    )

    # What the appliance made: one OP per JPEG, each UID minted once, never re-minted.
    derived = appliance.query("SELECT capture_pk, kind, sop_instance_uid FROM derived_objects")
    assert len(derived) == JPEG_IMAGES and {row["kind"] for row in derived} == {"op"}
    assert len({row["capture_pk"] for row in derived}) == JPEG_IMAGES
    minted = {row["sop_instance_uid"] for row in derived}
    assert len(minted) == JPEG_IMAGES and not minted & received_uids

    # One job per object and destination, each acknowledged delivered exactly once.
    jobs = appliance.query("SELECT id, destination, sop_instance_uid FROM outbox_jobs")
    assert {(j["sop_instance_uid"], j["destination"]) for j in jobs} == {
        (uid, name) for uid in received_uids | minted for name in DESTINATIONS
    }
    delivered_events = [
        json.loads(row["detail"])["job"]
        for row in appliance.query(
            "SELECT detail FROM audit_events WHERE event_id = '110104' "
            "AND user_id = 'system:outbox' AND json_extract(detail, '$.result') = 'delivered'"
        )
    ]
    assert sorted(delivered_events) == sorted(j["id"] for j in jobs)

    # The archive holds every object once: nothing missing, nothing extra.
    assert orthanc.sop_uids() == received_uids | minted
    assert len(orthanc.instances()) == objects
    for data in dicom[:2]:
        uid = str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID)
        stored = pydicom.dcmread(io.BytesIO(orthanc.file(uid)))
        assert bytes(stored.PixelData) == bytes(pydicom.dcmread(io.BytesIO(data)).PixelData)

    # The audit chain survived the SIGKILL intact.
    appliance.stop()
    verify = subprocess.run(
        [
            sys.executable,
            "-m",
            "appliance.cli",
            "--config",
            str(appliance.config),
            "audit",
            "verify",
        ],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
