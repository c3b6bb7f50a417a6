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

then pynetdicom gets the connection through :class:`GuardedSocket`, which hands it the request
already read and afterwards reads every PDU itself: no PDU over ``max_pdu_bytes``, each within
the network timeout, and every dataset fragment counted (per message against
``max_message_bytes``, all associations together against the ``in_flight_bytes`` budget) as it
arrives; over a limit the association is aborted. The SCP gives the budget back when its handler
has answered. Every refusal is audited (at most once a minute per address and reason, with the
number left out).

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
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pynetdicom import evt
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

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
            _close(tls)  # ``sock`` is detached by now: the TLS socket owns the connection
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
            _close(sock)

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


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class GuardedSocket(AssociationSocket):
    """pynetdicom's socket, reading every PDU under the door's limits.

    The DUL reads a PDU as ``recv(6)`` (header) then ``recv(length)`` (body); the request the
    door already read is handed over first.
    """

    def __init__(
        self, assoc: Any, client_socket: socket.socket, request: bytes, door: FrontDoor
    ) -> None:
        super().__init__(assoc, client_socket=client_socket)
        self.door = door
        self.address = str(assoc.requestor.address)
        self._request = bytearray(request)
        self._lock = threading.Lock()
        self._header_next = True
        self._pdu_type = 0
        self._part = 0  # dataset bytes of the message being received
        self._command = 0  # command bytes of the message being received
        self._held = 0  # bytes this association holds in the budget
        self._complete: deque[int] = deque()  # datasets received, not yet answered

    @property
    def ready(self) -> bool:
        return bool(self._request) or bool(super().ready)

    def recv(self, nr_bytes: int) -> bytearray:
        if self._request:
            data = self._request[:nr_bytes]
            del self._request[:nr_bytes]
        else:
            data = self._read(nr_bytes)
        if self._header_next:
            if len(data) == 6:
                self._pdu_type, length = data[0], struct.unpack(">L", data[2:6])[0]
                if length > self.door.limits.max_pdu_bytes:
                    return self._refuse(
                        "pdu_too_long",
                        f"a PDU declares {length} bytes, over {self.door.limits.max_pdu_bytes}",
                        a_abort(6),
                    )
                self._header_next = length == 0
        else:
            self._header_next = True
            if self._pdu_type == P_DATA_TF and not self._count(data):
                return bytearray()
        return data

    def _read(self, size: int) -> bytearray:
        """``size`` bytes within the network timeout (a trickle does not extend it)."""
        assert self.socket is not None
        deadline = time.monotonic() + self.door.limits.network_timeout
        buffer = bytearray()
        while len(buffer) < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the PDU did not arrive within the network timeout")
            self.socket.settimeout(remaining)
            chunk = self.socket.recv(min(size - len(buffer), 65536))
            if not chunk:
                break
            buffer += chunk
        return buffer

    def _count(self, body: bytearray) -> bool:
        """Count a P-DATA-TF's fragments; False (association aborted) over a limit."""
        offset = 0
        while offset + 6 <= len(body):
            (item_length,) = struct.unpack(">L", body[offset : offset + 4])
            if item_length < 2 or offset + 4 + item_length > len(body):
                return True  # malformed: pynetdicom refuses it
            control, size = body[offset + 5], item_length - 2
            offset += 4 + item_length
            if control & 0x01:  # command fragment
                self._command = 0 if control & 0x02 else self._command + size
                if self._command > COMMAND_MAX_BYTES:
                    self._refuse("command_too_long", "a DIMSE command set over 64 KiB")
                    return False
                continue
            refusal = self._hold(size, control & 0x02 != 0)
            if refusal is not None:
                self._refuse(*refusal)
                return False
        return True

    def _hold(self, size: int, last: bool) -> tuple[str, str] | None:
        """Hold a dataset fragment's bytes in the budget; (reason, message) when over a limit."""
        limits = self.door.limits
        with self._lock:
            if self._held + size > limits.max_message_bytes:
                return "too_large", f"a dataset over {limits.max_message_bytes} bytes (arriving)"
            if not self.door.budget.take(size):
                return (
                    "in_flight_budget",
                    f"the {limits.in_flight_bytes}-byte budget for data in flight is spent",
                )
            self._held += size
            self._part += size
            if last:  # a whole dataset waits for its handler
                self._complete.append(self._part)
                self._part = 0
        return None

    def _refuse(self, reason: str, message: str, answer: bytes | None = None) -> bytearray:
        """Abort the association: its bytes leave the budget at once (they will be dropped),
        A-ABORT is sent and the refusal audited; the DUL then sees the connection end."""
        self.release_all()
        calling_ae = str(getattr(self.assoc.requestor, "ae_title", "") or "").strip()
        self.door.refuse(Refusal(reason, message, self.address, calling_ae))
        try:
            assert self.socket is not None
            self.socket.sendall(answer or a_abort(0))
            self.socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return bytearray()

    def answered(self) -> None:
        """The handler answered the oldest received dataset: its bytes leave the budget."""
        with self._lock:
            if not self._complete:
                return
            size = self._complete.popleft()
            self._held -= size
        self.door.budget.give(size)

    def release_all(self) -> None:
        with self._lock:
            size, self._held, self._part = self._held, 0, 0
            self._complete.clear()
        self.door.budget.give(size)


class GuardedRequestHandler(RequestHandler):
    server: GuardedServer

    def handle(self) -> None:
        door = self.server.door
        address = str(self.client_address[0])
        sock: socket.socket = self.request
        try:
            door.enter(address)
        except Refused as refused:
            door.turn_away(sock, refused)
            return
        guarded: GuardedSocket | None = None
        try:
            deadline = time.monotonic() + door.limits.request_seconds
            try:
                if self.server.tls is not None:
                    sock = door.handshake(sock, self.server.tls, address, deadline)
                    self.request = sock  # what pynetdicom's association will use
                request = door.read_request(sock, address, deadline)
            except Refused as refused:
                if refused.refusal.reason == "closed":  # a port probe: nothing to audit
                    _close(sock)
                else:
                    door.turn_away(sock, refused)
                return
            door.admitted()
            assoc = self._create_association()  # wraps the socket (and queues Evt5) ...
            guarded = GuardedSocket(assoc, sock, request, door)  # ... queues Evt5 again
            assoc.dul.socket = guarded
            assoc.dul.event_queue.get_nowait()  # one transport connection indication
            evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
            assoc.start()
            assoc.join()
        finally:
            door.leave(address, admitted=guarded is not None)
            if guarded is not None:
                guarded.release_all()


class GuardedServer(ThreadedAssociationServer):
    daemon_threads = True  # a connection's thread lives as long as its association
    block_on_close = False
    # The listen backlog (socketserver's default is 5): a burst of connections beyond it is
    # left half-open by the kernel for seconds, so it would be the burst, not the door, that
    # decides who waits. Connections are accepted at once and judged by the door instead.
    request_queue_size = 256

    def __init__(
        self, *args: Any, door: FrontDoor, tls: ssl.SSLContext | None = None, **kwargs: Any
    ) -> None:
        self.door = door
        self.tls = tls  # wrapped per connection by the handler, never in the accepting thread
        kwargs["request_handler"] = GuardedRequestHandler
        super().__init__(*args, **kwargs)


def answered(event: evt.Event) -> None:
    """Tell the door an event's dataset has been answered (a no-op off the guarded path)."""
    sock = getattr(getattr(getattr(event, "assoc", None), "dul", None), "socket", None)
    if isinstance(sock, GuardedSocket):
        sock.answered()
