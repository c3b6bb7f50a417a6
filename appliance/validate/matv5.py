"""A small bounded reader of MATLAB level-5 ``.mat`` files (v5, and v7's compressed form),
enough for the Duke DME set: numeric arrays by name. (scipy.io is not in the appliance's lock.)

Layout (MathWorks, "MAT-File Format", level 5): a 128-byte header (text, subsystem offset,
version 0x0100, endian indicator ``IM`` / ``MI``), then data elements, each an 8-byte tag
(type, byte count; the "small element" form packs both in 4 bytes with the data after) padded
to 8 bytes inside a matrix (top-level elements are not). ``miCOMPRESSED`` (15) holds one
zlib-compressed element; ``miMATRIX`` (14) holds array flags (class), dimensions, the name
and the real part (stored in any numeric type, e.g. a double array written as uint8). Only
the names asked for are decompressed past their first bytes; numeric classes only (cell,
struct, sparse, char and complex arrays are refused by name when asked for); every array is
bounded by ``max_bytes`` before it is inflated. MATLAB 7.3 files are HDF5 and refused (no HDF5
reader in the lock).
"""

from __future__ import annotations

import logging
import struct
import zlib
from pathlib import Path

import numpy as np

LOGGER = logging.getLogger(__name__)

MAX_ARRAY_BYTES = 1 << 30
MI_MATRIX, MI_COMPRESSED = 14, 15
_MI_TYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8",
             12: "i8", 13: "u8"}  # fmt: skip
_MX_CLASSES = {6: "f8", 7: "f4", 8: "i1", 9: "u1", 10: "i2", 11: "u2", 12: "i4", 13: "u4",
               14: "i8", 15: "u8"}  # fmt: skip
_PEEK = 512  # bytes inflated to learn an element's name


class _Reader:
    def __init__(self, data: bytes, order: str, where: str, pad: bool = True):
        self.data, self.order, self.where, self.pos, self.pad = data, order, where, 0, pad

    def tag(self) -> tuple[int, int, int]:
        """(type, byte count, where its data starts); advances past the whole element."""
        if self.pos + 8 > len(self.data):
            raise ValueError(f"{self.where}: truncated data element at byte {self.pos}")
        first, second = struct.unpack_from(self.order + "II", self.data, self.pos)
        if first >> 16:  # small element: type and size in the first 4 bytes
            start, kind, size = self.pos + 4, first & 0xFFFF, first >> 16
            self.pos += 8
            return kind, size, start
        start = self.pos + 8
        self.pos = start + second + (-second % 8 if self.pad else 0)
        return first, second, start

    def element(self) -> tuple[int, bytes]:
        kind, size, start = self.tag()
        if start + size > len(self.data):
            raise ValueError(f"{self.where}: element of {size} bytes runs past the end")
        return kind, self.data[start : start + size]


def _matrix_head(body: bytes, order: str, where: str) -> tuple[int, list[int], str, _Reader]:
    """Class, dimensions, name and a reader positioned at the real part."""
    reader = _Reader(body, order, where)
    _, flags = reader.element()
    _, dims_raw = reader.element()
    _, name_raw = reader.element()
    (flag_word,) = struct.unpack_from(order + "I", flags, 0)
    dims = list(struct.unpack(order + f"{len(dims_raw) // 4}i", dims_raw))
    name = name_raw.decode("ascii", errors="replace")
    mx_class = flag_word & 0xFF
    if flag_word & 0x0800:
        mx_class = -mx_class  # complex: refused by name
    return mx_class, dims, name, reader


def _array(body: bytes, order: str, where: str, max_bytes: int) -> tuple[str, np.ndarray]:
    mx_class, dims, name, reader = _matrix_head(body, order, where)
    if mx_class not in _MX_CLASSES or min(dims, default=0) < 0:
        raise ValueError(f"{where}: {name!r} is not a real numeric array (class {mx_class})")
    count = int(np.prod(dims, dtype=np.int64))
    if count * np.dtype(_MX_CLASSES[mx_class]).itemsize > max_bytes:
        raise ValueError(f"{where}: {name!r} ({dims}) is over {max_bytes} bytes")
    kind, raw = reader.element()
    if kind not in _MI_TYPES:
        raise ValueError(f"{where}: {name!r} stored as unsupported type {kind}")
    stored = np.dtype(order + _MI_TYPES[kind])
    if len(raw) != count * stored.itemsize:
        raise ValueError(f"{where}: {name!r} has {len(raw)} bytes for {count} values")
    values = np.frombuffer(raw, dtype=stored, count=count).astype(_MX_CLASSES[mx_class])
    return name, values.reshape(dims, order="F")


def _inflate(data: bytes, limit: int, where: str) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise ValueError(f"{where}: bad compressed element: {exc}") from exc
    if len(out) > limit:
        raise ValueError(f"{where}: a compressed element inflates past {limit} bytes")
    return out


def _peek_name(data: bytes, order: str, where: str) -> str:
    head = zlib.decompressobj().decompress(data, _PEEK)
    reader = _Reader(head, order, where)
    kind, _, start = reader.tag()
    if kind != MI_MATRIX:
        return ""
    return _matrix_head(head[start:], order, where)[2]


def read_mat(
    path: Path, names: set[str] | None = None, max_bytes: int = MAX_ARRAY_BYTES
) -> dict[str, np.ndarray]:
    """The numeric arrays of a level-5 MAT-file (only ``names`` when given)."""
    path = Path(path)
    where = str(path)
    limit = max(4 * max_bytes, 1 << 20)  # the file: a few arrays of at most max_bytes each
    if path.stat().st_size > limit:
        raise ValueError(f"{where}: over {limit} bytes")
    data = path.read_bytes()
    if len(data) < 128:
        raise ValueError(f"{where}: not a MAT-file (shorter than its 128-byte header)")
    if data[:19] == b"MATLAB 7.3 MAT-file" or data[:8] == b"\x89HDF\r\n\x1a\n":
        raise ValueError(f"{where}: MATLAB 7.3 (HDF5) files need an HDF5 reader, not in the lock")
    indicator = data[126:128]
    if indicator not in (b"IM", b"MI") or not data.startswith(b"MATLAB 5.0"):
        raise ValueError(f"{where}: not a level-5 MAT-file")
    order = "<" if indicator == b"IM" else ">"
    reader = _Reader(data[128:], order, where, pad=False)  # top-level elements are not padded
    found: dict[str, np.ndarray] = {}
    while reader.pos < len(reader.data) and (names is None or len(found) < len(names)):
        kind, body = reader.element()
        if kind == MI_COMPRESSED:
            if names is not None and _peek_name(body, order, where) not in names:
                continue
            inner = _Reader(_inflate(body, max_bytes + _PEEK, where), order, where)
            kind, body = inner.element()
        if kind != MI_MATRIX:
            continue
        if names is not None and _matrix_head(body, order, where)[2] not in names:
            continue
        name, array = _array(body, order, where, max_bytes)
        found[name] = array
    missing = sorted((names or set()) - set(found))
    if missing:
        raise ValueError(f"{where}: no variable {', '.join(map(repr, missing))}")
    LOGGER.debug("read %s from %s", sorted(found), path)
    return found
