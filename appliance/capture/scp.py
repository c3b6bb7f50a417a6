"""DICOM C-STORE / C-ECHO SCP for the camera (pynetdicom).

The C-STORE handler keeps the encoded dataset exactly as received (Part 10 file built from the
raw bytes on the wire), hands it to the ingestor (check, store, audit) and returns a status.
Decoding pixels and analysis happen later on the pipeline worker, off the association thread.
Handlers never raise: every failure becomes a DIMSE status with an Error Comment.

Before pynetdicom sees a connection it passes the front door (``frontdoor.py``): connection
limits per address, a deadline and a size cap for the A-ASSOCIATE-RQ, the calling-AE check,
a PDU length cap and a budget for data in flight. Its refusals are audited here as Security
Alerts, as are associations pynetdicom itself rejects.

With a TLS context (``tls``) the SCP also listens on ``tls_port`` (default 2762, the IANA
DICOM-TLS port), behind the same front door and the same limits: a second port rather than
TLS-only, because cameras that cannot do TLS keep storing over plain DIMSE on ``port``
(``plain=False`` closes that; ``tls_required_aes`` names the cameras refused on it, so a
TLS camera's AE title cannot be used over plain DIMSE). The door runs the handshake on the
connection's thread, under the request deadline.

Given ``on_commitment_report`` (service.py wires the outbox's), the SCP also accepts Storage
Commitment Push Model associations from an archive — with SCP/SCU role selection, since the
archive opens them to send N-EVENT-REPORT — and hands each report's Event Type ID, Event
Information, calling AE and address to that callback, whose return value is the status.
"""

from __future__ import annotations

import io
import logging
import ssl
import threading
from collections.abc import Callable
from typing import Any

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, evt
from pynetdicom.presentation import StoragePresentationContexts
from pynetdicom.utils import make_target

from appliance.audit import Outcome, events
from appliance.capture.frontdoor import DoorLimits, FrontDoor, Refusal
from appliance.capture.guarded import GuardedServer, answered
from appliance.capture.ingest import Incoming, Ingestor
from appliance.domain import Source
from appliance.errors import ApplianceError

LOGGER = logging.getLogger(__name__)
VERIFICATION = "1.2.840.10008.1.1"
STORAGE_COMMITMENT_PUSH = "1.2.840.10008.1.20.1"
# (Event Type ID, Event Information, calling AE, address) → DIMSE status
CommitmentReportHandler = Callable[[int, Dataset, str, str], int]
DUL_POLL_SECONDS = 0.0002

TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLossless,
    RLELossless,
    JPEG2000Lossless,
    JPEG2000,
    JPEGLSLossless,
    JPEGLSNearLossless,
]


def status(code: int, comment: str = "") -> Dataset:
    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = comment[:64]
    return ds


class StorageSCP:
    def __init__(
        self,
        ingestor: Ingestor,
        *,
        ae_title: str,
        host: str,
        port: int,
        allowed_calling_aes: tuple[str, ...] = (),
        acse_timeout: float = 30,
        dimse_timeout: float = 60,
        network_timeout: float = 60,
        on_commitment_report: CommitmentReportHandler | None = None,
        request_seconds: float = 5.0,
        max_pdu_bytes: int = 262144,
        max_associations: int = 32,
        max_associations_per_address: int = 10,
        in_flight_bytes: int = 1024 * 1024 * 1024,
        max_message_bytes: int = 512 * 1024 * 1024,
        tls: ssl.SSLContext | None = None,
        tls_port: int = 2762,
        plain: bool = True,
        tls_required_aes: tuple[str, ...] = (),
    ) -> None:
        if (not plain or tls_required_aes) and tls is None:
            raise ValueError(
                "dicom_tls_only and dicom_tls_required_aes need dicom_tls_cert and dicom_tls_key"
            )
        if not 16384 <= max_pdu_bytes <= 16 * 1024 * 1024:
            raise ValueError("dicom_max_pdu_bytes must lie between 16384 and 16777216")
        if in_flight_bytes < max_message_bytes:
            LOGGER.warning(
                "dicom_in_flight_bytes (%d) is below max_dicom_bytes (%d): the largest "
                "instances cannot arrive",
                in_flight_bytes,
                max_message_bytes,
            )
        self.ingestor = ingestor
        self.on_commitment_report = on_commitment_report
        self.address = (host, port)
        self.tls = tls
        self.tls_address = (host, tls_port)
        self.plain = plain
        self.ae = AE(ae_title=ae_title)
        self.ae.acse_timeout = acse_timeout
        self.ae.dimse_timeout = dimse_timeout
        self.ae.network_timeout = network_timeout
        self.ae.maximum_associations = max_associations
        self.ae.maximum_pdu_size = max_pdu_bytes  # advertised; the door refuses longer PDUs
        self.door = FrontDoor(
            DoorLimits(
                request_seconds=request_seconds,
                max_pdu_bytes=max_pdu_bytes,
                per_address=max_associations_per_address,
                max_pending=2 * max_associations,
                in_flight_bytes=in_flight_bytes,
                max_message_bytes=max_message_bytes,
                network_timeout=network_timeout,
                allowed_calling_aes=tuple(allowed_calling_aes),
                tls_required_aes=tuple(tls_required_aes),
            ),
            self.on_refusal,
        )
        if allowed_calling_aes:
            self.ae.require_calling_aet = list(allowed_calling_aes)
        # Accept every storage SOP class at negotiation, so a camera sending something we cannot
        # analyse gets a clear 0x0122 status on its C-STORE rather than a refused context.
        for context in StoragePresentationContexts:
            self.ae.add_supported_context(str(context.abstract_syntax), TRANSFER_SYNTAXES)
        self.ae.add_supported_context(VERIFICATION)
        if on_commitment_report is not None:
            self.ae.add_supported_context(
                STORAGE_COMMITMENT_PUSH,
                [ExplicitVRLittleEndian, ImplicitVRLittleEndian],
                scu_role=True,
                scp_role=True,
            )
        self._server: Any = None
        self._tls_server: Any = None

    @property
    def port(self) -> int:
        if self._server is None:
            return self.address[1]
        return int(self._server.server_address[1])

    @property
    def tls_port(self) -> int:
        if self._tls_server is None:
            return self.tls_address[1]
        return int(self._tls_server.server_address[1])

    def start(self) -> None:
        handlers: list[Any] = [
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_CONN_OPEN, self.on_connect),
            (evt.EVT_REJECTED, self.on_rejected),
        ]
        if self.on_commitment_report is not None:
            handlers.append((evt.EVT_N_EVENT_REPORT, self.on_event_report))
        if self.plain:
            self._server = self._serve(self.address, handlers, None)
            LOGGER.info(
                "DICOM SCP %s listening on %s:%d", self.ae.ae_title, self.address[0], self.port
            )
        if self.tls is not None:
            self._tls_server = self._serve(self.tls_address, handlers, self.tls)
            LOGGER.info(
                "DICOM TLS SCP %s listening on %s:%d",
                self.ae.ae_title,
                self.tls_address[0],
                self.tls_port,
            )

    def _serve(
        self, address: tuple[str, int], handlers: list[Any], tls: ssl.SSLContext | None
    ) -> Any:
        """start_server without blocking, with the guarded server class in front; the TLS
        context goes to the door (never to pynetdicom, which would handshake while accepting)."""
        server = self.ae.make_server(
            address, evt_handlers=handlers, server_class=GuardedServer, door=self.door, tls=tls
        )
        name = "AcceptorServer-guarded" + ("-tls" if tls is not None else "")
        thread = threading.Thread(target=make_target(server.serve_forever), name=name, daemon=True)
        thread.start()
        self.ae._servers.append(server)
        return server

    def stop(self) -> None:
        for server in (self._server, self._tls_server):
            if server is not None:
                server.shutdown()
        self._server = self._tls_server = None

    def on_connect(self, event: evt.Event) -> None:
        # pynetdicom's transport loop sleeps 1 ms between polls; at camera rates that sleep, not
        # our storing, bounds throughput. 0.2 ms keeps idle CPU negligible (measured in bench).
        dul = getattr(event.assoc, "dul", None)
        if dul is not None and hasattr(dul, "_run_loop_delay"):
            dul._run_loop_delay = DUL_POLL_SECONDS

    def on_echo(self, event: evt.Event) -> int:
        return 0x0000

    def on_rejected(self, event: evt.Event) -> None:
        """An association pynetdicom rejected (e.g. its association limit): audited."""
        rj = event.assoc.acceptor.primitive
        result = getattr(rj, "result_str", "") if rj is not None else ""
        self.door.refuse(
            Refusal(
                "association_rejected",
                f"association rejected: {result} / {getattr(rj, 'reason_str', '')}"[:200],
                str(event.assoc.requestor.address),
                str(event.assoc.requestor.ae_title).strip(),
            )
        )

    def on_refusal(self, refusal: Refusal, left_out: int) -> None:
        """Audit a refused connection or association (the door throttles these)."""
        metrics = self.ingestor.metrics
        if metrics is not None:
            metrics.refused.labels(source=str(Source.DICOM), reason=refusal.reason).inc()
        self.ingestor.audit.log(
            events.security_alert(
                {
                    "refused": refusal.reason,
                    "message": refusal.message,
                    "source": str(Source.DICOM),
                    "left_out": left_out,  # the same refusals from this address since the last
                },
                events.Who(
                    f"ae:{refusal.calling_ae}" if refusal.calling_ae else "unknown",
                    refusal.address,
                    refusal.calling_ae,
                ),
                outcome=Outcome.SERIOUS_FAILURE if refusal.serious else Outcome.MINOR_FAILURE,
            )
        )

    def on_event_report(self, event: evt.Event) -> tuple[int, None]:
        """A Storage Commitment result from an archive, passed to the callback."""
        calling_ae = str(event.assoc.requestor.ae_title).strip()
        try:
            if str(event.request.AffectedSOPClassUID) != STORAGE_COMMITMENT_PUSH:
                return 0x0118, None  # no such SOP class
            callback = self.on_commitment_report
            if callback is None:
                return 0x0110, None
            info = event.event_information
            code = callback(
                int(event.event_type or 0), info, calling_ae, str(event.assoc.requestor.address)
            )
        except Exception:
            LOGGER.exception("unexpected failure handling an N-EVENT-REPORT")
            code = 0x0110
        finally:
            answered(event)
        return code, None

    def on_store(self, event: evt.Event) -> Dataset | int:
        try:
            return self._store(event)
        finally:
            answered(event)  # the dataset's bytes leave the in-flight budget

    def _store(self, event: evt.Event) -> Dataset | int:
        calling_ae = str(event.assoc.requestor.ae_title).strip()
        address = str(event.assoc.requestor.address)
        try:
            data = part10_bytes(event)
        except Exception as exc:
            LOGGER.warning("could not read the C-STORE request: %s", type(exc).__name__)
            return status(0xC000, "cannot read the request dataset")
        item = Incoming(
            data=data,
            source=Source.DICOM,
            user_id=f"ae:{calling_ae}",
            calling_ae=calling_ae,
            source_address=address,
        )
        try:
            capture = self.ingestor.ingest(item)
        except ApplianceError as exc:
            return status(exc.dimse_status, exc.message)
        except Exception:
            LOGGER.exception("unexpected failure storing a C-STORE dataset")
            return status(0xA700, "internal error; resend later")
        if capture.duplicate:
            LOGGER.info("C-STORE of an instance already held (capture %d)", capture.id)
        return 0x0000


def part10_bytes(event: evt.Event) -> bytes:
    """The received dataset as a Part 10 file, without decoding or re-encoding it."""
    stream = getattr(event.request, "DataSet", None)
    if not isinstance(stream, io.BytesIO):
        raise ValueError("the C-STORE request carries no dataset")
    buffer = DicomBytesIO()
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, event.file_meta, enforce_standard=True)
    buffer.write(stream.getvalue())
    return bytes(buffer.getvalue())
