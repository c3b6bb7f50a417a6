"""DICOMweb STOW-RS to an archive: one ``POST {url}/studies`` per batch, each file sent as stored.

The body is ``multipart/related; type="application/dicom"`` with one Part-10 file per part,
streamed from disk (never decoded or re-encoded). Outcomes (../shared/docs/dicom-ophthalmic.md):

* 200 → every instance done; 202 → per instance from the DICOM JSON answer: the Failed SOP
  Sequence (0008,1198) with Failure Reason (0008,1197) — A7xx retried, the rest (A9xx, C122,
  0110, …) dead-lettered — and the Referenced SOP Sequence (0008,1199) done (Warning Reason
  (0008,1196) kept as the status);
* 400 / 409 / 415 / 413 and other 4xx → all dead; 401 / 403 → all dead (credentials);
* 5xx / 408 / 429, network errors and timeouts → all retried.

Never raises for network trouble. Talks to the archive directly (no proxy, no redirects), and
never puts the password in a log line or a :class:`SendResult`.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import ssl
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydicom.filereader import read_file_meta_info

from appliance.outbox.policy import SendResult, Verdict

LOGGER = logging.getLogger(__name__)

FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"
WARNING_REASON = "00081196"

CHUNK = 1024 * 1024
MAX_RESPONSE = 16 * 1024 * 1024
RETRY_HTTP = frozenset({408, 429})
DEAD_CREDENTIALS = frozenset({401, 403})


@dataclass(frozen=True)
class StowTarget:
    name: str
    url: str  # base URL of the DICOMweb service, e.g. http://127.0.0.1:8042/dicom-web
    ae_title: str = ""
    username: str = ""
    password: str = ""
    timeout: float = 30.0
    lanes: int = 1  # requests the forwarder has in flight at the same time

    def __repr__(self) -> str:  # the dataclass default would print the password
        return f"StowTarget(name={self.name!r}, url={self.address!r})"

    @property
    def address(self) -> str:
        """The URL without credentials (safe for logs and the audit trail)."""
        parts = urlsplit(self.url)
        netloc = parts.hostname or ""
        if ":" in netloc:  # IPv6 literal
            netloc = f"[{netloc}]"
        if parts.port is not None:
            netloc = f"{netloc}:{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))

    def send(self, files: list[Path]) -> list[SendResult]:
        return send_files(self, files)

    def session(self) -> StowSession:
        return StowSession(self)


class StowSession:
    """STOW-RS needs no association: each batch is one request on its own connection."""

    def __init__(self, target: StowTarget) -> None:
        self.target = target

    def send(self, files: list[Path]) -> list[SendResult]:
        return send_files(self.target, files)

    def close(self) -> None:
        pass


def send_files(target: StowTarget, files: list[Path]) -> list[SendResult]:
    """One STOW-RS request for ``files``; a :class:`SendResult` per file, in order."""
    results: list[SendResult | None] = [None] * len(files)
    uids: dict[int, str] = {}
    for index, path in enumerate(files):
        try:
            uids[index] = str(read_file_meta_info(path).MediaStorageSOPInstanceUID)
        except Exception as exc:  # not a Part-10 file or gone: resending will not help
            results[index] = SendResult(
                Verdict.DEAD, "unreadable", f"not sent, {type(exc).__name__}: {exc}"
            )
    if not uids:
        return [r for r in results if r is not None]
    sent = [files[i] for i in uids]
    try:
        code, reason, body = _post(target, sent)
    except Exception as exc:  # connection refused, reset, timeout, TLS, bad URL …
        message = _scrub(f"cannot reach {target.address}: {type(exc).__name__}: {exc}", target)
        LOGGER.warning("STOW-RS to %s failed: %s", target.name, message)
        outcome = SendResult(Verdict.RETRY, "no-status", message)
        return [r if r is not None else outcome for r in results]
    status = f"HTTP {code}"
    if code in (200, 202):
        answers = _per_instance(code, body)
        for index, uid in uids.items():
            results[index] = answers.get(uid) or (
                SendResult(Verdict.DONE, status)
                if code == 200
                else SendResult(Verdict.RETRY, status, "instance not acknowledged by the archive")
            )
    else:
        outcome = _classify_http(code, _scrub(f"{reason} {_snippet(body)}".strip(), target))
        LOGGER.warning("STOW-RS to %s answered %s", target.name, outcome.status)
        for index in uids:
            results[index] = outcome
    return [r if r is not None else SendResult(Verdict.RETRY, "no-status") for r in results]


def _classify_http(code: int, detail: str) -> SendResult:
    status = f"HTTP {code}"
    if code in DEAD_CREDENTIALS:
        return SendResult(
            Verdict.DEAD, status, f"archive refused the credentials (check user/password): {detail}"
        )
    if code == 413:
        return SendResult(Verdict.DEAD, status, f"request too large for the archive: {detail}")
    if code >= 500 or code in RETRY_HTTP:
        return SendResult(Verdict.RETRY, status, detail or "archive unavailable")
    return SendResult(Verdict.DEAD, status, detail or "refused by the archive")


def _post(target: StowTarget, files: list[Path]) -> tuple[int, str, bytes]:
    parts = urlsplit(target.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("the STOW-RS URL must be http(s)://host[:port]/path")
    boundary = f"stow-{uuid.uuid4().hex}"
    heads = [
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode("ascii") for _ in files
    ]
    tail = f"--{boundary}--\r\n".encode("ascii")
    length = sum(len(h) + p.stat().st_size + 2 for h, p in zip(heads, files, strict=True))
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json",
        "Content-Length": str(length + len(tail)),
    }
    user, password = _credentials(target)
    if user or password:
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        headers["Authorization"] = f"Basic {token}"
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=target.timeout, context=ssl.create_default_context()
        )
    else:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=target.timeout)
    path = quote(parts.path.rstrip("/"), safe="/%:@!$&'()*+,;=-._~") + "/studies"
    try:
        connection.request("POST", path, body=_body(heads, files, tail), headers=headers)
        response = connection.getresponse()
        return response.status, response.reason, response.read(MAX_RESPONSE)
    finally:
        connection.close()


def _body(heads: list[bytes], files: list[Path], tail: bytes) -> Iterator[bytes]:
    for head, path in zip(heads, files, strict=True):
        yield head
        with path.open("rb") as stream:
            while chunk := stream.read(CHUNK):
                yield chunk
        yield b"\r\n"
    yield tail


def _credentials(target: StowTarget) -> tuple[str, str]:
    if target.username or target.password:
        return target.username, target.password
    parts = urlsplit(target.url)  # http://user:pass@host/… also works
    return unquote(parts.username or ""), unquote(parts.password or "")


def _scrub(text: str, target: StowTarget) -> str:
    _, password = _credentials(target)
    return text.replace(password, "***") if password else text


def _snippet(body: bytes) -> str:
    return body[:200].decode("utf-8", "replace").strip()


def _per_instance(code: int, body: bytes) -> dict[str, SendResult]:
    """The per-instance answers in a 200/202 DICOM JSON response (empty when there are none)."""
    try:
        document: Any = json.loads(body) if body.strip() else {}
    except ValueError:
        return {}
    if isinstance(document, list):  # some servers wrap the dataset in a list
        document = document[0] if document and isinstance(document[0], dict) else {}
    if not isinstance(document, dict):
        return {}
    answers: dict[str, SendResult] = {}
    for item in _items(document, REFERENCED_SOP_SEQUENCE):
        uid = _first(item, REFERENCED_SOP_INSTANCE_UID)
        if uid is None:
            continue
        warning = _code(_first(item, WARNING_REASON))
        if warning is None:
            answers[str(uid)] = SendResult(Verdict.DONE, f"HTTP {code}")
        else:
            answers[str(uid)] = SendResult(
                Verdict.DONE, f"0x{warning:04X}", "stored with a warning"
            )
    for item in _items(document, FAILED_SOP_SEQUENCE):
        uid = _first(item, REFERENCED_SOP_INSTANCE_UID)
        if uid is None:
            continue
        reason = _code(_first(item, FAILURE_REASON))
        if reason is None:
            answers[str(uid)] = SendResult(Verdict.DEAD, f"HTTP {code}", "failed, no reason given")
        elif (reason & 0xFF00) == 0xA700:
            answers[str(uid)] = SendResult(
                Verdict.RETRY, f"0x{reason:04X}", "archive out of resources"
            )
        else:
            answers[str(uid)] = SendResult(Verdict.DEAD, f"0x{reason:04X}", _failure_text(reason))
    return answers


def _failure_text(reason: int) -> str:
    if (reason & 0xFF00) == 0xA900:
        return "data set does not match the SOP class"
    if reason == 0xC122:
        return "transfer syntax not supported"
    if reason == 0x0110:
        return "processing failure"
    return "refused by the archive"


def _items(document: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    element = document.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return [v for v in values if isinstance(v, dict)] if isinstance(values, list) else []


def _first(item: dict[str, Any], tag: str) -> Any:
    element = item.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return values[0] if isinstance(values, list) and values else None


def _code(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = str(value).strip()
    try:
        return int(text, 0) if text.lower().startswith("0x") else int(text, 16)
    except ValueError:
        return None
