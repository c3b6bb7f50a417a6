"""The DICOM front door: what a TCP connection may cost before and after pynetdicom reads it.

pynetdicom reads a PDU by trusting its declared length (up to 4 GiB, into memory, with no
deadline), checks the calling AE only after the whole A-ASSOCIATE-RQ is in, and counts only
associations, not connections. So a connection passes here first, on its own thread:

1. per-address and pending-connection limits (refused: A-ASSOCIATE-RJ, transient, local limit
   exceeded);
2. the A-ASSOCIATE-RQ read here, whole, within ``request_seconds`` and at most
   ``max_pdu_bytes`` long (otherwise A-ABORT or close);
3. the calling AE checked against the allow-list before anything large is read
   (A-ASSOCIATE-RJ, permanent, calling AE not recognised);

then pynetdicom gets the connection through ``GuardedSocket`` (``guarded.py``), which hands it
the request already read and afterwards reads every PDU itself: no PDU over ``max_pdu_bytes``,
each within the network timeout, and every dataset fragment counted (per message against
``max_message_bytes``, all associations together against the ``in_flight_bytes`` budget) as it
arrives; over a limit the association is aborted. The SCP gives the budget back when its
handler has answered. Every refusal is audited (at most once a minute per address and reason,
with the number left out).

With DICOM TLS (``GuardedServer(tls=context)``, the SCP's TLS port) the socket is wrapped on
the connection's own thread, not in the accepting one (pynetdicom's ``get_request`` would run
a blocking handshake there, so one silent client would stop every other from connecting): the
handshake and then the A-ASSOCIATE-RQ, read from the TLS socket, must both finish within
``request_seconds``. A failed handshake is refused (audited, closed); a client certificate
missing or untrusted where one is required is a Security Alert.

This works through pynetdicom's documented extension points (``make_server(server_class=...)``,
``AssociationServer(request_handler=...)``) and a subclass of its ``AssociationSocket``.
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

LOGGER = logging.getLogger(__name__)

A_ASSOCIATE_RQ, P_DATA_TF = 0x01, 0x04
RQ_FIXED_BYTES = 68  # protocol version, reserved, called AE, calling AE, 32 reserved
COMMAND_MAX_BYTES = 64 * 1024  # a DIMSE command set is a few hundred bytes
AUDIT_EVERY_SECONDS = 60.0
DRAIN_SECONDS = 0.5  # after a refusal, read what the peer sent so it sees our answer, not a reset
# OpenSSL's reasons for a client certificate that is missing or fails verification
CLIENT_CERTIFICATE_REASONS = frozenset(
    {
        "PEER_DID_NOT_RETURN_A_CERTIFICATE",
        "CERTIFICATE_VERIFY_FAILED",
        "NO_CERTIFICATE_RETURNED",
        "CERTIFICATE_REQUIRED",
    }
)


def associate_rj(result: int, source: int, reason: int) -> bytes:
    return b"\x03\x00" + struct.pack(">L", 4) + bytes((0, result, source, reason))


def a_abort(reason: int = 0) -> bytes:
    """A-ABORT from the service provider (source 2); reason 0 not specified, 1 unrecognised PDU,
    2 unexpected PDU, 6 invalid PDU parameter value."""
    return b"\x07\x00" + struct.pack(">L", 4) + bytes((0, 0, 2, reason))


RJ_LOCAL_LIMIT = associate_rj(2, 3, 2)  # transient; service provider (presentation); limit
RJ_CALLING_AE = associate_rj(1, 1, 3)  # permanent; service user; calling AE not recognised


@dataclass(frozen=True)
class DoorLimits:
    request_seconds: float = 5.0
    max_pdu_bytes: int = 262144
    per_address: int = 10
    max_pending: int = 64
    in_flight_bytes: int = 1024 * 1024 * 1024
    max_message_bytes: int = 512 * 1024 * 1024
    network_timeout: float = 60.0
    allowed_calling_aes: tuple[str, ...] = ()
    tls_required_aes: tuple[str, ...] = ()  # calling AEs refused on the plain port


@dataclass(frozen=True)
class Refusal:
    reason: str  # stable code, kept in the audit trail
    message: str
    address: str = ""
    calling_ae: str = ""
    serious: bool = False  # a security alert rather than a limit reached


class Refused(Exception):
    def __init__(self, refusal: Refusal, answer: bytes = b"") -> None:
        super().__init__(refusal.message)
        self.refusal = refusal
        self.answer = answer  # the PDU sent before closing (RJ or A-ABORT), if any


# (refusal, refusals of the same kind from the same address left unaudited before it)
RefusalHandler = Callable[[Refusal, int], None]


class Budget:
    """Bytes of received datasets not yet answered, all associations together."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def take(self, size: int) -> bool:
        with self._lock:
            if self.used + size > self.limit:
                return False
            self.used += size
            return True

    def give(self, size: int) -> None:
        with self._lock:
            self.used = max(0, self.used - size)


class FrontDoor:
    def __init__(self, limits: DoorLimits, on_refusal: RefusalHandler) -> None:
        self.limits = limits
        self.budget = Budget(limits.in_flight_bytes)
        self._on_refusal = on_refusal
        self._lock = threading.Lock()
        self._per_address: dict[str, int] = defaultdict(int)
        self._pending = 0
        self._audited: dict[tuple[str, str], tuple[float, int]] = {}

    # -- counting connections -------------------------------------------------------------
    def enter(self, address: str) -> None:
        with self._lock:
            if self._per_address[address] >= self.limits.per_address:
                raise Refused(
                    Refusal(
                        "address_limit",
                        f"more than {self.limits.per_address} connections from one address",
                        address,
                    ),
                    RJ_LOCAL_LIMIT,
                )
            if self._pending >= self.limits.max_pending:
                raise Refused(
                    Refusal(
                        "pending_limit",
                        f"more than {self.limits.max_pending} connections not yet associated",
                        address,
                    ),
                    RJ_LOCAL_LIMIT,
                )
            self._per_address[address] += 1
            self._pending += 1

    def admitted(self) -> None:
        with self._lock:
            self._pending -= 1

    def leave(self, address: str, *, admitted: bool) -> None:
        with self._lock:
            if not admitted:
                self._pending -= 1
            self._per_address[address] -= 1
            if self._per_address[address] <= 0:
                del self._per_address[address]

    def connections(self, address: str) -> int:
        with self._lock:
            return self._per_address.get(address, 0)

    # -- the association request --------------------------------------------------------
    def handshake(
        self, sock: socket.socket, context: ssl.SSLContext, address: str, deadline: float
    ) -> ssl.SSLSocket:
        """The TLS handshake, finished before ``deadline`` (the request's own deadline)."""
        tls = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        try:
            self._handshake(tls, address, deadline)
        except Refused:
            close(tls)  # ``sock`` is detached by now: the TLS socket owns the connection
            raise
        return tls

    def _handshake(self, tls: ssl.SSLSocket, address: str, deadline: float) -> None:
        seconds = self.limits.request_seconds
        try:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            tls.settimeout(remaining)
            tls.do_handshake()
        except TimeoutError:
            raise Refused(
                Refusal("request_timeout", f"no TLS handshake within {seconds:g} s", address)
            ) from None
        except ssl.SSLEOFError:
            raise Refused(Refusal("closed", "closed during the TLS handshake", address)) from None
        except ssl.SSLError as exc:
            reason = str(exc.reason or exc)
            if reason in CLIENT_CERTIFICATE_REASONS or isinstance(
                exc, ssl.SSLCertVerificationError
            ):
                raise Refused(
                    Refusal(
                        "tls_client_certificate",
                        f"TLS client certificate missing or not trusted ({reason})",
                        address,
                        serious=True,
                    )
                ) from None
            raise Refused(
                Refusal("tls_handshake", f"TLS handshake failed ({reason})", address)
            ) from None
        except OSError as exc:
            raise Refused(Refusal("closed", f"connection error: {exc}", address)) from None

    def read_request(
        self, sock: socket.socket, address: str, deadline: float | None = None
    ) -> bytes:
        """The whole A-ASSOCIATE-RQ PDU, read within the deadline, from an allowed caller
        (one that must use TLS only over TLS)."""
        limits = self.limits
        if deadline is None:
            deadline = time.monotonic() + limits.request_seconds
        header = _read_exact(sock, 6, deadline, address, limits.request_seconds)
        pdu_type, length = header[0], struct.unpack(">L", header[2:6])[0]
        if pdu_type != A_ASSOCIATE_RQ:
            raise Refused(
                Refusal(
                    "not_an_association_request",
                    f"the first PDU is of type 0x{pdu_type:02X}, not an A-ASSOCIATE-RQ",
                    address,
                ),
                a_abort(2),
            )
        if not RQ_FIXED_BYTES <= length <= limits.max_pdu_bytes:
            raise Refused(
                Refusal(
                    "pdu_too_long" if length > limits.max_pdu_bytes else "malformed_request",
                    f"the A-ASSOCIATE-RQ declares {length} bytes "
                    f"(accepted: {RQ_FIXED_BYTES}-{limits.max_pdu_bytes})",
                    address,
                ),
                a_abort(6),
            )
        body = _read_exact(sock, length, deadline, address, limits.request_seconds)
        calling_ae = body[20:36].decode("ascii", "replace").strip(" \x00")
        allowed = limits.allowed_calling_aes
        if allowed and calling_ae not in allowed:
            raise Refused(
                Refusal(
                    "calling_ae_not_allowed",
                    f"calling AE {calling_ae!r} is not on the allow-list",
                    address,
                    calling_ae,
                    serious=True,
                ),
                RJ_CALLING_AE,
            )
        if calling_ae in limits.tls_required_aes and not isinstance(sock, ssl.SSLSocket):
            raise Refused(
                Refusal(
                    "tls_required",
                    f"calling AE {calling_ae!r} must use the TLS port",
                    address,
                    calling_ae,
                    serious=True,
                ),
                RJ_CALLING_AE,
            )
        return bytes(header + body)

    def turn_away(self, sock: socket.socket, refused: Refused) -> None:
        """Audit, answer (RJ or A-ABORT) and close; reading briefly so the peer sees the
        answer rather than a connection reset."""
        self.refuse(refused.refusal)
        try:
            if refused.answer:
                sock.settimeout(DRAIN_SECONDS)
                sock.sendall(refused.answer)
                sock.shutdown(socket.SHUT_WR)
                deadline = time.monotonic() + DRAIN_SECONDS
                drained = 0
                while drained < self.limits.max_pdu_bytes and time.monotonic() < deadline:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    drained += len(chunk)
        except OSError:
            pass
        finally:
            close(sock)

    # -- auditing, throttled --------------------------------------------------------------
    def refuse(self, refusal: Refusal) -> None:
        LOGGER.warning("DICOM connection from %s refused: %s", refusal.address, refusal.message)
        key = (refusal.address, refusal.reason)
        now = time.monotonic()
        with self._lock:
            last, left_out = self._audited.get(key, (-AUDIT_EVERY_SECONDS, 0))
            if now - last < AUDIT_EVERY_SECONDS:
                self._audited[key] = (last, left_out + 1)
                return
            if len(self._audited) > 4096:  # bounded: an old entry only delays one audit
                self._audited.clear()
            self._audited[key] = (now, 0)
        try:
            self._on_refusal(refusal, left_out)
        except Exception:
            LOGGER.exception("could not audit a refused DICOM connection")


def _read_exact(
    sock: socket.socket, size: int, deadline: float, address: str, seconds: float
) -> bytearray:
    buffer = bytearray()
    try:
        while len(buffer) < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            sock.settimeout(remaining)
            chunk = sock.recv(min(size - len(buffer), 65536))
            if not chunk:
                raise Refused(Refusal("closed", "the peer closed the connection", address))
            buffer += chunk
    except TimeoutError:
        raise Refused(
            Refusal("request_timeout", f"no complete A-ASSOCIATE-RQ within {seconds:g} s", address)
        ) from None
    except OSError as exc:
        raise Refused(Refusal("closed", f"connection error: {exc}", address)) from None
    return buffer


def close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
