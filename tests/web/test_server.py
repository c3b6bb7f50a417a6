"""The production web server under slow and half-open clients, on a served process.

Each test starts ``appliance serve`` (waitress, see web/server.py) with short deadlines and the
default 1,024-descriptor limit a unit without ``LimitNOFILE`` would give it, opens hundreds of
connections on 127.0.0.1 that never finish their request, and checks that /healthz answers
(a one-second socket timeout bounds every step), that C-ECHO and C-STORE still succeed, that
no thread is spent per connection, and that each connection is closed once its deadline has
passed and not before.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import resource
import selectors
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pynetdicom import AE

from appliance.capture.scp import VERIFICATION
from tests.conftest import free_port, fundus, op_bytes, require_tool

HEADER_TIMEOUT = 2.0
REQUEST_TIMEOUT = 4.0
IDLE_TIMEOUT = 2.0
SLACK = 8.0  # the deadlines are checked about once a second; a loaded CI machine is slower
EARLY = 0.1  # the server measures on its own clock: allow it this much ahead of ours
PROMPT = 1.0  # /healthz, and every socket step of it, within a second


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    port: int
    dicom_port: int
    tls: ssl.SSLContext | None

    def connection(self, timeout: float = PROMPT) -> http.client.HTTPConnection:
        if self.tls is not None:
            return http.client.HTTPSConnection(
                "127.0.0.1", self.port, timeout=timeout, context=self.tls
            )
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def healthz(self) -> dict[str, Any]:
        conn = self.connection()
        try:
            conn.request("GET", "/healthz")
            response = conn.getresponse()
            assert response.status == 200
            assert response.getheader("Server") is None  # the server does not name itself
            body: dict[str, Any] = json.loads(response.read())
            return body
        finally:
            conn.close()

    def proc(self, key: str) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise KeyError(key)

    def descriptors(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))


def _nofile(soft: int) -> Callable[[], None]:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, hard), hard))

    return apply


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    started: list[Served] = []

    def start(tls: bool = False, **settings: Any) -> Served:
        env = {
            **os.environ,
            "APPLIANCE_DATA_DIR": str(tmp_path / "data"),
            "APPLIANCE_WEB_PORT": str(free_port()),
            "APPLIANCE_DICOM_HOST": "127.0.0.1",
            "APPLIANCE_DICOM_PORT": str(free_port()),
            "APPLIANCE_MODELS_DIR": str(tmp_path / "no-models"),
            "APPLIANCE_MIN_FREE_DISK_MB": "0",
            "APPLIANCE_WEB_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
            "APPLIANCE_WEB_REQUEST_TIMEOUT": str(REQUEST_TIMEOUT),
            "APPLIANCE_WEB_IDLE_TIMEOUT": str(IDLE_TIMEOUT),
        }
        env.update({f"APPLIANCE_{k.upper()}": str(v) for k, v in settings.items()})
        context = None
        if tls:
            openssl = require_tool("openssl")
            cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
            subprocess.run(
                [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                 "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                 "-keyout", str(key), "-out", str(cert)],
                check=True, capture_output=True,
            )  # fmt: skip
            env["APPLIANCE_WEB_TLS_CERT"], env["APPLIANCE_WEB_TLS_KEY"] = str(cert), str(key)
            context = ssl.create_default_context(cafile=str(cert))
            context.check_hostname = False
        log = (tmp_path / "serve.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "appliance.cli", "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_nofile(1024),  # what a unit without LimitNOFILE gets
        )
        served = Served(
            process, int(env["APPLIANCE_WEB_PORT"]), int(env["APPLIANCE_DICOM_PORT"]), context
        )
        started.append(served)
        deadline = time.monotonic() + 60
        while True:
            try:
                served.healthz()
                return served
            except (OSError, http.client.HTTPException):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((tmp_path / "serve.log").read_text()[-3000:]) from None
                time.sleep(0.2)

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    try:
        yield start
    finally:
        for served in started:
            served.process.terminate()
            try:
                served.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                served.process.kill()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def half_open(port: int, n: int, payload: bytes) -> list[tuple[socket.socket, float]]:
    """``n`` connections that send ``payload`` and then nothing; each with when it was sent."""
    out = []
    for _ in range(n):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        if payload:
            sock.sendall(payload)
        out.append((sock, time.monotonic()))
    return out


def closed_after(conns: list[tuple[Any, float]], bound: float) -> list[float]:
    """Wait (at most ``bound`` seconds) until the server closed every connection; returns,
    per connection, how long after its last send the close was seen."""
    selector = selectors.DefaultSelector()
    for index, (sock, _) in enumerate(conns):
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, index)
    seen: dict[int, float] = {}
    deadline = time.monotonic() + bound
    while len(seen) < len(conns) and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.5):
            sock, sent = conns[key.data]
            try:
                data = sock.recv(4096)
            except (ssl.SSLWantReadError, BlockingIOError):
                continue
            except (ConnectionResetError, ssl.SSLError):
                data = b""
            if not data:
                seen[key.data] = time.monotonic() - sent
                selector.unregister(sock)
    selector.close()
    for sock, _ in conns:
        sock.close()
    assert len(seen) == len(conns), f"{len(conns) - len(seen)} connections were never closed"
    return [seen[i] for i in range(len(conns))]


def echo(port: int) -> int:
    ae = AE(ae_title="CHECK")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 5
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate("127.0.0.1", port, ae_title="SCREENING")
    assert assoc.is_established
    try:
        return int(assoc.send_c_echo().Status)
    finally:
        assoc.release()


def store(port: int, seed: int) -> int:
    ds = pydicom.dcmread(io.BytesIO(op_bytes(fundus(seed=seed, size=(96, 128)))))
    ae = AE(ae_title="CAMERA1")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="SCREENING")
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(ds).Status)
    finally:
        assoc.release()


def test_300_half_open_requests_hold_no_thread_and_healthz_answers(
    serve: Callable[..., Served],
) -> None:
    served = serve()
    threads = served.proc("Threads")

    attackers = half_open(served.port, 300, b"GET /heal")
    for _ in range(5):
        assert served.healthz()["status"] == "ok"
    assert served.proc("Threads") <= threads  # a socket each, not a thread each
    assert served.descriptors() < 300 + 100
    assert echo(served.dicom_port) == 0x0000
    assert store(served.dicom_port, seed=71) == 0x0000

    waited = closed_after(attackers, HEADER_TIMEOUT + SLACK)
    assert min(waited) >= HEADER_TIMEOUT - EARLY  # the deadline, and not before
    assert served.healthz()["captures"] == 1
    assert served.process.poll() is None


def test_https_stalled_handshakes_and_half_open_requests_are_dropped(
    serve: Callable[..., Served],
) -> None:
    served = serve(tls=True)
    assert served.tls is not None
    threads = served.proc("Threads")

    silent = half_open(served.port, 100, b"")  # TCP only: the handshake never starts
    partial_hello = half_open(served.port, 100, b"\x16\x03\x01\x02\x00")  # a record header
    handshaken = []
    for _ in range(100):
        raw = socket.create_connection(("127.0.0.1", served.port), timeout=5)
        tls = served.tls.wrap_socket(raw, server_hostname="127.0.0.1")
        tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        handshaken.append((tls, time.monotonic()))
    for _ in range(5):
        assert served.healthz()["status"] == "ok"
    assert served.proc("Threads") <= threads
    assert echo(served.dicom_port) == 0x0000

    waited = closed_after(silent + partial_hello + handshaken, HEADER_TIMEOUT + SLACK)
    assert min(waited) >= HEADER_TIMEOUT - EARLY
    assert served.healthz()["status"] == "ok"


def test_body_and_idle_deadlines(serve: Callable[..., Served]) -> None:
    served = serve()
    # Headers complete, then a body that stops after 10 of 1,000 bytes: the request deadline.
    slow_body = half_open(
        served.port,
        1,
        b"POST /api/captures HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789",
    )
    # One request answered, then silence on a keep-alive connection: the idle deadline.
    idle = socket.create_connection(("127.0.0.1", served.port), timeout=5)
    asked = time.monotonic()
    idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = b""
    while not answer.rstrip().endswith(b"}"):
        answer += idle.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200 ")

    (body_wait,) = closed_after(slow_body, REQUEST_TIMEOUT + SLACK)
    (idle_wait,) = closed_after([(idle, asked)], IDLE_TIMEOUT + SLACK)
    assert body_wait >= REQUEST_TIMEOUT - EARLY
    assert idle_wait >= IDLE_TIMEOUT - EARLY
    assert served.healthz()["status"] == "ok"


def test_a_flood_past_the_connection_limit_takes_the_oldest_places(
    serve: Callable[..., Served],
) -> None:
    """1,000 half-open requests against a limit of 200 and 1,024 descriptors: the newest
    connection takes the place of the oldest, so /healthz and DICOM keep answering."""
    served = serve(web_connection_limit=200, web_header_timeout=600)
    attackers = half_open(served.port, 1000, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    for _ in range(5):
        assert served.healthz()["status"] == "ok"
    assert served.descriptors() < 200 + 100

    # The oldest 800 (and more, for the healthz checks' places) were closed long before the
    # deadline; this process closes its ends too (its own DICOM client uses select()).
    oldest, newest = attackers[:800], attackers[800:]
    waited = closed_after(oldest, SLACK)
    assert max(waited) < 600
    # With the newest still holding their places at the limit, DICOM answers.
    assert echo(served.dicom_port) == 0x0000
    assert store(served.dicom_port, seed=72) == 0x0000
    assert served.healthz()["captures"] == 1
    for sock, _ in newest:
        sock.close()
    assert served.process.poll() is None


def test_the_unit_leaves_room_above_the_connection_limit() -> None:
    """The unit raises the descriptor limit above the web connection limit plus the DICOM side
    and the store; the default limit stays under the 1,024 that select() can watch."""
    from appliance.config import Settings

    unit = Path(__file__).resolve().parents[2] / "firmware_scripts/systemd/retina-appliance.service"
    (nofile,) = [
        int(line.split("=", 1)[1])
        for line in unit.read_text().splitlines()
        if line.startswith("LimitNOFILE=")
    ]
    limit = Settings().web_connection_limit
    assert limit + 300 < 1024 <= nofile
