"""A raw DICOM Upper Layer client for the front-door tests: it sends exactly the bytes an
attacker (or a broken camera) would, which pynetdicom as an SCU refuses to do."""

from __future__ import annotations

import io
import socket
import struct
import time

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pynetdicom.dsutils import encode

APPLICATION_CONTEXT = b"1.2.840.10008.3.1.1.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
HEADER_CLAIMING_4GB = bytes.fromhex("0100FFFFFFF0")  # A-ASSOCIATE-RQ of 4 GiB - 16


def _item(item_type: int, value: bytes) -> bytes:
    return bytes((item_type, 0)) + struct.pack(">H", len(value)) + value


def _ae(title: str) -> bytes:
    return title.encode("ascii").ljust(16)[:16]


def associate_rq(
    calling: str, called: str, abstract_syntax: str, transfer_syntaxes: tuple[str, ...]
) -> bytes:
    context = (
        bytes((1, 0, 0, 0))  # presentation context ID 1
        + _item(0x30, abstract_syntax.encode())
        + b"".join(_item(0x40, ts.encode()) for ts in transfer_syntaxes)
    )
    user = _item(0x51, struct.pack(">L", 16384)) + _item(0x52, b"1.2.826.0.1.3680043.9.9999")
    body = (
        b"\x00\x01\x00\x00"
        + _ae(called)
        + _ae(calling)
        + bytes(32)
        + _item(0x10, APPLICATION_CONTEXT)
        + _item(0x20, context)
        + _item(0x50, user)
    )
    return b"\x01\x00" + struct.pack(">L", len(body)) + body


def p_data(context_id: int, control: int, payload: bytes) -> bytes:
    """One P-DATA-TF PDU with one PDV: control bit 0 command, bit 1 last fragment."""
    item = struct.pack(">L", len(payload) + 2) + bytes((context_id, control)) + payload
    return b"\x04\x00" + struct.pack(">L", len(item)) + item


def c_store_command(sop_class: str, sop_instance: str) -> bytes:
    ds = Dataset()
    ds.AffectedSOPClassUID = sop_class
    ds.CommandField = 0x0001
    ds.MessageID = 1
    ds.Priority = 0
    ds.CommandDataSetType = 0x0001
    ds.AffectedSOPInstanceUID = sop_instance
    body = encode(ds, True, True)
    assert body is not None
    return b"\x00\x00\x00\x00" + struct.pack("<LL", 4, len(body)) + body


def read_pdu(sock: socket.socket, timeout: float = 10.0) -> tuple[int, bytes] | None:
    """(type, body) of the next PDU, or None when the connection ends first."""
    deadline = time.monotonic() + timeout
    header = _read(sock, 6, deadline)
    if len(header) < 6:
        return None
    body = _read(sock, struct.unpack(">L", header[2:6])[0], deadline)
    return header[0], body


def _read(sock: socket.socket, size: int, deadline: float) -> bytes:
    out = bytearray()
    while len(out) < size:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            chunk = sock.recv(size - len(out))
        except TimeoutError:
            raise AssertionError("no answer from the SCP in time") from None
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    return bytes(out)


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def associate(
    port: int,
    calling: str,
    called: str,
    abstract_syntax: str,
    source: str = "127.0.0.1",
    transfer_syntax: str = EXPLICIT_LE,
) -> socket.socket:
    """A connection with an accepted association (presentation context 1)."""
    sock = connect(port, source)
    sock.sendall(associate_rq(calling, called, abstract_syntax, (transfer_syntax,)))
    answer = read_pdu(sock)
    assert answer is not None and answer[0] == 0x02, f"association not accepted: {answer!r}"
    return sock


def wait_closed(sock: socket.socket, timeout: float) -> bytes:
    """Everything the SCP sends until it closes the connection (fails after ``timeout``)."""
    deadline = time.monotonic() + timeout
    received = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"the SCP kept the connection open for {timeout} s")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:  # reset: closed
            return bytes(received)
        if not chunk:
            return bytes(received)
        received += chunk


def stream(sock: socket.socket, chunks: int, chunk: bytes) -> int:
    """Send ``chunk`` up to ``chunks`` times; the bytes sent before the SCP cut it off."""
    sent = 0
    sock.settimeout(10)
    try:
        for _ in range(chunks):
            sock.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass
    return sent


def a_abort_bytes(reason: int) -> bytes:
    """A-ABORT from the service provider (source 2) with ``reason``."""
    return bytes.fromhex("070000000004") + bytes((0, 0, 2, reason))


# A-ASSOCIATE-RJ: rejected-transient, service-provider (presentation), local-limit-exceeded
RJ_LOCAL_LIMIT = bytes.fromhex("030000000004") + bytes((0, 2, 3, 2))


def c_store(sock: socket.socket, sop_class: str, sop_instance: str, dataset: bytes) -> Dataset:
    """Send one C-STORE (dataset already encoded) on context 1; the response command set."""
    sock.sendall(p_data(1, 0x03, c_store_command(sop_class, sop_instance)))
    step = 60000
    for start in range(0, len(dataset), step):
        last = 0x02 if start + step >= len(dataset) else 0x00
        sock.sendall(p_data(1, last, dataset[start : start + step]))
    while True:
        pdu = read_pdu(sock, timeout=60)
        assert pdu is not None and pdu[0] == 0x04, f"no C-STORE response: {pdu!r}"
        body = pdu[1]
        if body[5] & 0x01:  # a command PDV (the response is small: one PDV, one PDU)
            return read_dataset(io.BytesIO(body[6:]), is_implicit_VR=True, is_little_endian=True)
