"""pynetdicom's side of the front door: the server, its request handler and its socket.

:class:`GuardedServer` hands each connection to :class:`GuardedRequestHandler`, which lets it
through the :class:`~appliance.capture.frontdoor.FrontDoor` (limits, TLS handshake, the
A-ASSOCIATE-RQ under a deadline, the calling AE) on the connection's own thread, then gives
pynetdicom a :class:`GuardedSocket` that reads every later PDU under the door's limits and
counts dataset bytes against the budgets as they arrive. :func:`answered` gives a dataset's
bytes back once the SCP has answered it.
"""

from __future__ import annotations

import socket
import ssl
import struct
import threading
import time
from collections import deque
from typing import Any

from pynetdicom import evt
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from appliance.capture.frontdoor import (
    COMMAND_MAX_BYTES,
    P_DATA_TF,
    FrontDoor,
    Refusal,
    Refused,
    a_abort,
    close,
)


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
                    close(sock)
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
