"""C-STORE to an archive, each file sent as stored (no re-encoding), streamed from disk.

A :class:`DimseSession` keeps one association open across the batches of one forwarding pass
(opened on the first batch, opened again when a batch needs a presentation context the open
one lacks or the archive dropped it), so a backlog costs one association rather than one per
batch; each batch is still acknowledged in the database before the next is leased. The
forwarder runs ``lanes`` such sessions to one archive at the same time (default 2), so one
instance travels while the archive stores another: pynetdicom waits out every C-STORE
response on its own.

Never raises for network trouble: every job gets a :class:`SendResult` (no answer → retry; a
file that cannot be read, or whose SOP class / transfer syntax the archive refused → dead).
The socket is set ``TCP_NODELAY`` — otherwise the last segment of every C-STORE waits for the
archive's delayed ACK (up to ~40 ms per instance) — and the association's event loop polls
every 0.2 ms instead of pynetdicom's 1 ms; ``appliance bench forward`` measured both.

With ``tls`` the association runs over DICOM TLS (``appliance/tls.py``): the archive's
certificate and host name are checked, and a refused certificate (expired, untrusted, another
name) is retried with the reason in words, e.g. "TLS: the peer's certificate was refused:
certificate has expired".
"""

from __future__ import annotations

import contextlib
import logging
import socket
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from pydicom.filereader import read_file_meta_info
from pynetdicom import AE, _config, evt

from appliance.outbox.policy import SendResult, Verdict, classify_dimse
from appliance.tls import TlsClient, client_context

LOGGER = logging.getLogger(__name__)
DUL_POLL_SECONDS = 0.0002
# send_c_store(path) then streams the stored bytes after the file meta in PDU-sized chunks
# instead of decoding the whole file and encoding it again (pynetdicom's default): the archive
# gets exactly what was stored, and it costs about half the CPU. It needs the file's own
# transfer syntax accepted, which is the only one proposed for it. Process-wide; nothing in
# the appliance relies on the decoding behaviour.
_config.STORE_SEND_CHUNKED_DATASET = True
MAX_CONTEXTS = 128  # presentation contexts one association may propose (odd IDs 1..255)


def _on_connect(event: Any) -> None:
    """No Nagle delay on the association's socket; a shorter DUL poll."""
    with contextlib.suppress(AttributeError, OSError):
        event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if hasattr(event.assoc.dul, "_run_loop_delay"):
        event.assoc.dul._run_loop_delay = DUL_POLL_SECONDS


@dataclass(frozen=True)
class DimseTarget:
    name: str
    host: str
    port: int
    ae_title: str
    calling_ae: str
    timeout: float = 30.0
    lanes: int = 2  # associations the forwarder keeps sending over at the same time
    storage_commitment: bool = False  # delivered jobs await the archive's commitment
    tls: TlsClient | None = None  # DICOM TLS to the archive (and for Storage Commitment)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def session(self) -> DimseSession:
        return DimseSession(self)

    def send(self, files: list[Path]) -> list[SendResult]:
        """One batch over an association of its own."""
        with self.session() as session:
            return session.send(files)


def send_files(target: DimseTarget, files: list[Path]) -> list[SendResult]:
    return target.send(files)


class DimseSession:
    """One association to an archive, kept open between batches until :meth:`close`."""

    def __init__(self, target: DimseTarget) -> None:
        self.target = target
        self.assoc: Any = None
        self.contexts: set[tuple[str, str]] = set()
        self.associations = 0  # how many this session opened

    def __enter__(self) -> DimseSession:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        assoc, self.assoc = self.assoc, None
        if assoc is not None and assoc.is_established:
            with contextlib.suppress(Exception):
                assoc.release()

    def send(self, files: list[Path]) -> list[SendResult]:
        results: list[SendResult | None] = [None] * len(files)
        pairs: dict[int, tuple[str, str]] = {}
        for index, path in enumerate(files):
            try:
                meta = read_file_meta_info(path)
                pairs[index] = (str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))
            except Exception as exc:  # gone or not Part 10: resending will not help
                results[index] = SendResult(
                    Verdict.DEAD, "unreadable", f"not sent, {type(exc).__name__}: {exc}"
                )
        failure = self._ready(set(pairs.values())) if pairs else None
        for index, pair in pairs.items():
            results[index] = failure or self._store(files[index], pair)
        return [r if r is not None else SendResult(Verdict.RETRY, "no-status") for r in results]

    def _ready(self, needed: set[tuple[str, str]]) -> SendResult | None:
        """None when an association proposing ``needed`` is open, else why not (a retry)."""
        if self.assoc is not None and self.assoc.is_established and needed <= self.contexts:
            return None
        self.close()
        wanted = sorted(needed) + sorted(self.contexts - needed)  # what the last one had, too
        target = self.target
        ae = AE(ae_title=target.calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = target.timeout
        for sop_class, syntax in wanted[:MAX_CONTEXTS]:
            ae.add_requested_context(sop_class, [syntax])
        try:
            context = client_context(target.tls) if target.tls is not None else None
            assoc = ae.associate(
                target.host,
                target.port,
                ae_title=target.ae_title,
                evt_handlers=[(evt.EVT_CONN_OPEN, _on_connect)],
                tls_args=(context, target.host) if context is not None else None,
            )
        except Exception as exc:  # bad address, unreadable TLS files: the archive is unreachable
            return SendResult(Verdict.RETRY, "no-status", f"cannot connect: {exc}")
        if not assoc.is_established:
            reason = "association rejected" if assoc.is_rejected else "archive unreachable"
            if context is not None and context.failure:
                reason = context.failure
            return SendResult(Verdict.RETRY, "no-status", reason)
        self.assoc = assoc
        self.contexts = set(wanted[:MAX_CONTEXTS])
        self.associations += 1
        return None

    def _store(self, path: Path, pair: tuple[str, str]) -> SendResult:
        assoc = self.assoc
        if assoc is None or not assoc.is_established:
            return SendResult(Verdict.RETRY, "no-status", "association lost")
        accepted = {
            (str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in assoc.accepted_contexts
        }
        if pair not in accepted:  # never re-encoded, so resending will not help
            return classify_dimse(
                0x0122, f"the archive does not accept {pair[0]} in transfer syntax {pair[1]}"
            )
        try:
            status = assoc.send_c_store(path)  # streamed from the file as stored
        except Exception as exc:
            return SendResult(Verdict.RETRY, "no-status", f"{type(exc).__name__}: {exc}")
        code = status.get("Status") if status is not None and len(status) else None
        comment = str(status.get("ErrorComment", "")) if status is not None else ""
        return classify_dimse(None if code is None else int(code), comment)
