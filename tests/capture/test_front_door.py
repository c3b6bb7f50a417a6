"""Nobody on the network can stall the cameras (security-reliability.md item 31).

``appliance serve`` runs as its own process (its memory is read from /proc) with small limits:
A-ASSOCIATE-RQ deadline 1.5 s, PDUs up to 64 KiB, 4 connections per address, instances up to
32 MiB, 48 MiB of data in flight, inflation capped at 64 MiB, and an allow-list of calling AEs.
Each attack is loopback-only and bounded (seconds). While it runs a C-ECHO from another
loopback address must answer within a second, every time; afterwards the peak RSS of the
service (VmHWM, reset before the attack) must stay within RSS_BOUND of its RSS before it, and
dcmtk's echoscu must be answered from the attacker's own address.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from appliance.capture.scp import VERIFICATION
from tests.capture import dul_client as dul
from tests.conftest import free_port, require_tool, wait_for

MIB = 1024 * 1024
RSS_BOUND = 160 * MIB  # the most an attack may add to the service's resident memory
ECHO_WITHIN = 1.0  # seconds
REQUEST_SECONDS = 1.5
PER_ADDRESS = 4
OP_8BIT = "1.2.840.10008.5.1.4.1.1.77.1.5.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    port: int
    data: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def status(self, key: str) -> int:
        """A /proc/<pid>/status figure in bytes (VmRSS, VmHWM)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(key)

    def reset_peak(self) -> None:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS

    def refusals(self, reason: str) -> list[dict[str, Any]]:
        with sqlite3.connect(f"file:{self.data / 'appliance.db'}?mode=ro", uri=True) as db:
            db.row_factory = sqlite3.Row
            rows = db.execute(
                "SELECT * FROM audit_events WHERE event_id = '110113' ORDER BY seq"
            ).fetchall()
        out = [dict(r) | {"detail": json.loads(r["detail"])} for r in rows]
        return [r for r in out if r["detail"].get("refused") == reason]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("door")
    web_port, dicom_port = free_port(), free_port()
    config = root / "appliance.toml"
    config.write_text(
        "\n".join(
            [
                f'data_dir = "{root / "var"}"',
                'web_host = "127.0.0.1"',
                f"web_port = {web_port}",
                'dicom_host = "0.0.0.0"',  # every loopback address reaches it
                f"dicom_port = {dicom_port}",
                "min_free_disk_mb = 0",
                f'models_dir = "{root / "no-models"}"',
                'dicom_allowed_calling_aes = ["CAMERA1", "CHECK", "ECHOSCU"]',
                f"dicom_request_seconds = {REQUEST_SECONDS}",
                "dicom_max_pdu_bytes = 65536",
                "dicom_max_associations = 16",
                f"dicom_max_associations_per_address = {PER_ADDRESS}",
                f"dicom_in_flight_bytes = {48 * MIB}",
                f"max_dicom_bytes = {32 * MIB}",
                f"max_inflated_bytes = {64 * MIB}",
                "dicom_acse_timeout = 5",
                "dicom_dimse_timeout = 10",
                "dicom_network_timeout = 5",
                'log_level = "WARNING"',
                "",
            ]
        )
    )
    log = (root / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "serve"],
        env={**os.environ, "APPLIANCE_CONFIG": str(config)},
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    log.close()

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError((root / "serve.log").read_text()[-3000:])
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/healthz", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    try:
        wait_for(ready, timeout=60, interval=0.1)
        yield Service(process, dicom_port, root / "var")
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def echo_seconds(port: int, source: str = "127.0.0.2") -> float:
    """One C-ECHO on a fresh association from ``source``; its round trip in seconds."""
    started = time.monotonic()
    ae = AE(ae_title="CHECK")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 5
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate("127.0.0.1", port, ae_title="SCREENING", bind_address=(source, 0))
    assert assoc.is_established, "C-ECHO association refused during the attack"
    try:
        assert int(assoc.send_c_echo().Status) == 0
    finally:
        assoc.release()
    return time.monotonic() - started


@dataclass
class Probe:
    """C-ECHO over and over from another loopback address while an attack runs."""

    port: int
    seconds: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self.seconds.append(echo_seconds(self.port))
            except (AssertionError, OSError, RuntimeError) as exc:
                self.errors.append(repr(exc))
            self._stop.wait(0.05)


def under_attack(service: Service, attack: Callable[[], Any]) -> Any:
    """Run ``attack`` while probing C-ECHO; check the echoes and the service's peak RSS."""
    time.sleep(0.2)  # let the previous attack's buffers go
    before = service.status("VmRSS")
    service.reset_peak()
    probe = Probe(service.port)
    thread = threading.Thread(target=probe.run, daemon=True)
    thread.start()
    try:
        result = attack()
        wait_for(lambda: len(probe.seconds) + len(probe.errors) >= 3, timeout=10)
    finally:
        probe._stop.set()
        thread.join(timeout=15)
    grown = service.status("VmHWM") - before
    print(
        f"\n  RSS before {before / MIB:.0f} MiB, peak +{grown / MIB:.1f} MiB; "
        f"C-ECHO x{len(probe.seconds)}, slowest {max(probe.seconds, default=0) * 1000:.0f} ms"
    )
    assert probe.errors == []
    assert max(probe.seconds) < ECHO_WITHIN, probe.seconds
    assert grown < RSS_BOUND, f"the service grew by {grown / MIB:.0f} MiB"
    echoscu = subprocess.run(
        [require_tool("echoscu"), "-aet", "ECHOSCU", "-aec", "SCREENING"]
        + ["127.0.0.1", str(service.port)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert echoscu.returncode == 0, echoscu.stdout + echoscu.stderr
    return result


# -- finding 4: connections that hold slots ----------------------------------------------------


def test_33_connections_sending_a_4gb_header_are_refused_at_once(service: Service) -> None:
    def attack() -> list[bytes]:
        sockets = [dul.connect(service.port) for _ in range(33)]
        for sock in sockets:
            sock.sendall(dul.HEADER_CLAIMING_4GB)
        # each is answered and closed well before the A-ASSOCIATE-RQ deadline
        answers = [dul.wait_closed(sock, timeout=REQUEST_SECONDS) for sock in sockets]
        for sock in sockets:
            sock.close()
        return answers

    answers = under_attack(service, attack)
    # A-ABORT (invalid PDU parameter value), or A-ASSOCIATE-RJ (transient, local limit) for
    # those over the per-address limit while others were being answered
    assert set(answers) <= {dul.a_abort_bytes(6), dul.RJ_LOCAL_LIMIT}
    assert dul.a_abort_bytes(6) in answers
    (audit,) = service.refusals("pdu_too_long")  # at most one a minute per address and reason
    assert audit["source_address"] == "127.0.0.1" and audit["outcome"] == 4


def test_idle_and_trickling_connections_hold_nothing_past_the_deadline(service: Service) -> None:
    def attack() -> tuple[list[bytes], list[bytes]]:
        same = [dul.connect(service.port) for _ in range(33)]  # all from 127.0.0.1
        spread = [dul.connect(service.port, f"127.0.1.{n}") for n in range(1, 21)]
        trickle = dul.connect(service.port, "127.0.0.3")
        request = dul.associate_rq("CAMERA1", "SCREENING", OP_8BIT, (dul.EXPLICIT_LE,))
        started = time.monotonic()
        for byte in request[:8]:  # one byte every 0.25 s: never a whole request in time
            trickle.sendall(bytes((byte,)))
            time.sleep(0.25)
        limit = REQUEST_SECONDS + 3  # the deadline, and time for the threads to see it
        answers = [dul.wait_closed(sock, timeout=limit) for sock in same]
        quiet = [dul.wait_closed(sock, timeout=limit) for sock in [*spread, trickle]]
        assert time.monotonic() - started < limit + 2
        for sock in [*same, *spread, trickle]:
            sock.close()
        return answers, quiet

    answers, quiet = under_attack(service, attack)
    assert answers.count(dul.RJ_LOCAL_LIMIT) == 33 - PER_ADDRESS  # over the per-address limit
    assert answers.count(b"") == PER_ADDRESS  # held until the deadline, then closed
    assert quiet == [b""] * 21
    assert service.refusals("address_limit") and service.refusals("request_timeout")


# -- finding 5: memory spent before anything is checked ----------------------------------------


def test_a_gigabyte_after_a_4gb_header_costs_no_memory(service: Service) -> None:
    def attack() -> int:
        sock = dul.connect(service.port)
        sent = dul.stream(sock, 1024, dul.HEADER_CLAIMING_4GB + bytes(MIB - 6))  # 1 GiB
        sock.close()
        return sent

    sent = under_attack(service, attack)
    assert sent < 64 * MIB  # cut off at the header; the rest never left the sender


def test_a_4gb_pdu_inside_an_association_is_cut_off(service: Service) -> None:
    def attack() -> tuple[int, bytes]:
        sock = dul.associate(service.port, "CAMERA1", "SCREENING", OP_8BIT)
        sent = dul.stream(sock, 1024, bytes.fromhex("0400FFFFFFF0") + bytes(MIB - 6))
        answer = dul.wait_closed(sock, timeout=10)
        sock.close()
        return sent, answer

    sent, answer = under_attack(service, attack)
    assert sent < 64 * MIB and answer == dul.a_abort_bytes(6)


def test_a_700mb_c_store_is_refused_while_it_arrives(service: Service) -> None:
    def attack() -> tuple[int, bytes]:
        sock = dul.associate(service.port, "CAMERA1", "SCREENING", OP_8BIT)
        sock.sendall(dul.p_data(1, 0x03, dul.c_store_command(OP_8BIT, generate_uid())))
        fragment = dul.p_data(1, 0x00, bytes(65000))  # dataset fragments, none the last
        sent = dul.stream(sock, 700 * MIB // 65000, fragment)
        answer = dul.wait_closed(sock, timeout=10)
        sock.close()
        return sent, answer

    sent, answer = under_attack(service, attack)
    assert sent < 100 * MIB  # cut off past 32 MiB (max_dicom_bytes), not after 700 MB
    assert answer == dul.a_abort_bytes(0)
    (audit,) = service.refusals("too_large")
    assert audit["ae_title"] == "CAMERA1"


def test_data_in_flight_share_one_budget(service: Service) -> None:
    """20 MiB held by one camera, then 31 MiB from another: past 48 MiB the second is cut off;
    the first still gets its answer."""

    def attack() -> tuple[bytes, int, bytes]:  # the cut, what was sent, the first's answer
        first = dul.associate(service.port, "CAMERA1", "SCREENING", SECONDARY_CAPTURE)
        second = dul.associate(service.port, "CAMERA1", "SCREENING", SECONDARY_CAPTURE)
        fragment = dul.p_data(1, 0x00, bytes(65000))
        for sock in (first, second):
            sock.sendall(dul.p_data(1, 0x03, dul.c_store_command(SECONDARY_CAPTURE, "1.2.3")))
        dul.stream(first, 20 * MIB // 65000, fragment)
        sent = dul.stream(second, 31 * MIB // 65000, fragment)
        cut = dul.wait_closed(second, timeout=10)
        first.sendall(dul.p_data(1, 0x02, b""))  # the last fragment: a (bad) dataset, answered
        answer = dul.read_pdu(first, timeout=60)  # bounded wait: parsing 20 MiB under load
        first.close()
        second.close()
        return cut, sent, b"" if answer is None else bytes((answer[0],))

    cut, sent, answer = under_attack(service, attack)
    assert cut == dul.a_abort_bytes(0)
    assert answer == b"\x04"  # P-DATA: the C-STORE response, not an abort
    assert service.refusals("in_flight_budget")


def _deflate_bomb(inflated: int) -> tuple[str, bytes]:
    """(SOP Instance UID, dataset) of a Deflated Explicit VR LE Secondary Capture whose
    dataset inflates to ``inflated`` bytes."""
    ds = Dataset()
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = generate_uid()
    head = DicomBytesIO()
    head.is_little_endian, head.is_implicit_VR = True, False
    write_dataset(head, ds)
    pixel_header = b"\xe0\x7f\x10\x00OB\x00\x00" + inflated.to_bytes(4, "little")
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [deflater.compress(head.getvalue() + pixel_header)]
    zeros = bytes(16 * MIB)
    parts += [deflater.compress(zeros) for _ in range(inflated // len(zeros))]
    parts.append(deflater.flush())
    return str(ds.SOPInstanceUID), b"".join(parts)


def test_four_deflate_bombs_in_parallel(service: Service) -> None:
    uid, bomb = _deflate_bomb(1024 * MIB)
    assert len(bomb) < 1.2 * MIB

    def send(_: int) -> tuple[int, str]:
        sock = dul.associate(
            service.port,
            "CAMERA1",
            "SCREENING",
            SECONDARY_CAPTURE,
            transfer_syntax=DeflatedExplicitVRLittleEndian,
        )
        try:
            status = dul.c_store(sock, SECONDARY_CAPTURE, uid, bomb)
        finally:
            sock.close()
        return int(status.Status), str(status.get("ErrorComment", ""))

    def attack() -> list[tuple[int, str]]:
        with ThreadPoolExecutor(4) as pool:
            return list(pool.map(send, range(4)))

    results = under_attack(service, attack)
    comment = "the Deflated dataset inflates beyond the 67108864-byte limit"
    assert results == [(0xC000, comment)] * 4


def test_a_port_probe_is_not_audited_and_a_camera_still_stores(service: Service) -> None:
    with socket.create_connection(("127.0.0.1", service.port), timeout=5):
        pass  # connect and close: a health check or a port scan
    assert echo_seconds(service.port, "127.0.0.1") < ECHO_WITHIN
    assert service.refusals("closed") == []
