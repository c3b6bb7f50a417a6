"""STOW-RS client against a scripted local HTTP server (no archive needed)."""

from __future__ import annotations

import base64
import email.parser
import email.policy
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pydicom
import pytest

from appliance.outbox.policy import Verdict
from appliance.outbox.stow import StowTarget
from tests.conftest import free_port, fundus, op_bytes

Reply = tuple[int, bytes]


class Recorder(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.replies: list[Reply] = []
        self.requests: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/dicom-web"


class Handler(BaseHTTPRequestHandler):
    server: Recorder

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.requests.append({"path": self.path, "headers": self.headers, "body": body})
        code, payload = self.server.replies.pop(0) if self.server.replies else (200, b"{}")
        self.send_response(code)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def server() -> Iterator[Recorder]:
    httpd = Recorder()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def _files(tmp_path: Path, count: int) -> tuple[list[Path], list[str]]:
    paths, uids = [], []
    for n in range(count):
        data = op_bytes(fundus(size=(96, 128)))
        path = tmp_path / f"op{n}.dcm"
        path.write_bytes(data)
        paths.append(path)
        uids.append(str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID))
    return paths, uids


def _sop(uid: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.77.1.5.1"]},
            "00081155": {"vr": "UI", "Value": [uid]}, **(extra or {})}  # fmt: skip


def _reason(tag: str, code: int) -> dict[str, Any]:
    return {tag: {"vr": "US", "Value": [code]}}


def test_200_is_done_and_the_body_is_the_files_as_stored(server: Recorder, tmp_path: Path) -> None:
    files, _ = _files(tmp_path, 3)
    results = StowTarget("web", server.url + "/").send(files)
    assert [r.verdict for r in results] == [Verdict.DONE] * 3
    assert {r.status for r in results} == {"HTTP 200"}
    (request,) = server.requests
    assert request["path"] == "/dicom-web/studies"
    headers = request["headers"]
    assert headers["Accept"] == "application/dicom+json"
    assert "Authorization" not in headers
    content_type = headers["Content-Type"]
    assert content_type.startswith('multipart/related; type="application/dicom"; boundary=')
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + request["body"]
    )
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["application/dicom"] * 3
    assert [p.get_payload(decode=True) for p in parts] == [f.read_bytes() for f in files]


def test_202_is_judged_per_instance(server: Recorder, tmp_path: Path) -> None:
    files, uids = _files(tmp_path, 4)
    answer = {
        "00081198": {"vr": "SQ", "Value": [
            _sop(uids[0], _reason("00081197", 0xA700)),
            _sop(uids[1], _reason("00081197", 0xC122)),
        ]},
        "00081199": {"vr": "SQ", "Value": [
            _sop(uids[2]),
            _sop(uids[3], _reason("00081196", 0xB000)),
        ]},
    }  # fmt: skip
    server.replies = [(202, json.dumps(answer).encode())]
    results = StowTarget("web", server.url).send(files)
    assert [(r.verdict, r.status) for r in results] == [
        (Verdict.RETRY, "0xA700"),
        (Verdict.DEAD, "0xC122"),
        (Verdict.DONE, "HTTP 202"),
        (Verdict.DONE, "0xB000"),
    ]


@pytest.mark.parametrize(
    ("code", "verdict"),
    [(400, Verdict.DEAD), (409, Verdict.DEAD), (415, Verdict.DEAD), (413, Verdict.DEAD),
     (401, Verdict.DEAD), (403, Verdict.DEAD), (404, Verdict.DEAD),
     (500, Verdict.RETRY), (503, Verdict.RETRY), (408, Verdict.RETRY), (429, Verdict.RETRY)],
)  # fmt: skip
def test_http_errors_apply_to_the_whole_batch(
    server: Recorder, tmp_path: Path, code: int, verdict: Verdict
) -> None:
    files, _ = _files(tmp_path, 2)
    server.replies = [(code, b"no")]
    results = StowTarget("web", server.url).send(files)
    assert [(r.verdict, r.status) for r in results] == [(verdict, f"HTTP {code}")] * 2
    if code in (401, 403):
        assert "credentials" in results[0].message


def test_connection_refused_is_retried(tmp_path: Path) -> None:
    files, _ = _files(tmp_path, 2)
    results = StowTarget("web", f"http://127.0.0.1:{free_port()}/dicom-web", timeout=2).send(files)
    assert [(r.verdict, r.status) for r in results] == [(Verdict.RETRY, "no-status")] * 2


def test_a_silent_archive_times_out_and_is_retried(tmp_path: Path) -> None:
    import socket

    files, _ = _files(tmp_path, 1)
    with socket.socket() as listener:  # accepts the connection, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        results = StowTarget("web", f"http://127.0.0.1:{port}/dw", timeout=0.5).send(files)
    assert [(r.verdict, r.status) for r in results] == [(Verdict.RETRY, "no-status")]


def test_basic_auth_is_sent_and_the_password_never_shows(server: Recorder, tmp_path: Path) -> None:
    files, _ = _files(tmp_path, 1)
    target = StowTarget("web", server.url, username="appliance", password="s3cret-pw")
    server.replies = [(401, b"bad s3cret-pw"), (200, b"")]
    (refused,) = target.send(files)
    (stored,) = target.send(files)
    assert refused.verdict is Verdict.DEAD and stored.verdict is Verdict.DONE
    expected = "Basic " + base64.b64encode(b"appliance:s3cret-pw").decode()
    assert [r["headers"]["Authorization"] for r in server.requests] == [expected] * 2
    assert "s3cret-pw" not in refused.message + repr(target) + target.address
    (offline,) = StowTarget(
        "web", f"http://appliance:s3cret-pw@127.0.0.1:{free_port()}/dw", timeout=2
    ).send(files)
    assert offline.verdict is Verdict.RETRY and "s3cret-pw" not in offline.message


def test_credentials_in_the_url_are_used_and_not_in_the_address(server: Recorder) -> None:
    target = StowTarget("web", server.url.replace("http://", "http://u:p%40ss@"))
    assert target.address == server.url
    assert "p%40ss" not in repr(target)


def test_an_unreadable_file_is_dead_and_the_rest_still_go(server: Recorder, tmp_path: Path) -> None:
    files, _ = _files(tmp_path, 1)
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom")
    results = StowTarget("web", server.url).send([junk, *files])
    assert [r.verdict for r in results] == [Verdict.DEAD, Verdict.DONE]
    body = server.requests[0]["body"]
    assert b"not dicom" not in body and files[0].read_bytes() in body
