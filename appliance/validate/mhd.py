"""A small bounded MetaImage (``.mhd`` header + ``.raw`` data) reader, enough for RETOUCH.

The header is text, ``Key = Value`` per line (ITK MetaIO). Read: ``NDims`` (2 or 3),
``DimSize`` (x y z: fastest first), ``ElementType`` (``MET_UCHAR``, ``MET_CHAR``,
``MET_USHORT``, ``MET_SHORT``, ``MET_UINT``, ``MET_INT``, ``MET_FLOAT``, ``MET_DOUBLE``),
``ElementSpacing`` (mm, x y z), ``BinaryDataByteOrderMSB`` / ``ElementByteOrderMSB``,
``HeaderSize`` and ``ElementDataFile`` (a file beside the header). Refused with a precise
``ValueError``: compressed data, several channels, ``LOCAL`` / list data files, a data file
outside the header's folder, a header over 64 KiB, a volume over ``max_bytes`` and a data file
shorter than the header says. The array comes back as numpy (z, y, x).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LOGGER = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 1024
MAX_DATA_BYTES = 1 << 30
ELEMENT_TYPES = {
    "MET_UCHAR": "u1", "MET_CHAR": "i1", "MET_USHORT": "u2", "MET_SHORT": "i2",
    "MET_UINT": "u4", "MET_INT": "i4", "MET_FLOAT": "f4", "MET_DOUBLE": "f8",
}  # fmt: skip
_TRUE = {"true", "1", "yes"}


@dataclass(frozen=True)
class MetaImage:
    array: np.ndarray  # (z, y, x) for 3-D, (y, x) for 2-D
    spacing_mm: tuple[float, ...]  # as written: x, y(, z)
    header: dict[str, str]
    data_file: Path


def read_header(path: Path) -> dict[str, str]:
    """The ``.mhd`` header's fields (keys as written)."""
    path = Path(path)
    if path.stat().st_size > MAX_HEADER_BYTES:
        raise ValueError(f"{path}: header over {MAX_HEADER_BYTES} bytes")
    fields: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="latin-1").splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"{path}: line {number}: expected 'Key = Value', got {line!r}")
        fields[key.strip()] = value.strip()
    return fields


def _ints(path: Path, fields: dict[str, str], key: str, count: int) -> list[int]:
    try:
        values = [int(v) for v in fields[key].split()]
    except (KeyError, ValueError):
        raise ValueError(
            f"{path}: {key} must be {count} integers, got {fields.get(key)!r}"
        ) from None
    if len(values) != count or min(values) < 1:
        raise ValueError(f"{path}: {key} must be {count} integers >= 1, got {fields[key]!r}")
    return values


def _spacing(path: Path, fields: dict[str, str], ndims: int) -> tuple[float, ...]:
    text = fields.get("ElementSpacing") or fields.get("ElementSize") or " ".join(["1"] * ndims)
    try:
        values = tuple(float(v) for v in text.split())
    except ValueError:
        raise ValueError(f"{path}: ElementSpacing must be numbers, got {text!r}") from None
    if len(values) != ndims or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"{path}: ElementSpacing must be {ndims} positive numbers, got {text!r}")
    return values


def _data_file(path: Path, fields: dict[str, str]) -> Path:
    name = fields.get("ElementDataFile", "")
    if not name or name.upper() == "LOCAL" or name.upper().startswith("LIST") or "%" in name:
        raise ValueError(f"{path}: ElementDataFile {name!r} is not supported (a separate file)")
    data = (path.parent / name).resolve()
    if not data.is_relative_to(path.parent.resolve()):
        raise ValueError(f"{path}: ElementDataFile {name!r} points outside {path.parent}")
    if not data.is_file():
        raise ValueError(f"{path}: data file {name!r} not found")
    return data


def read_mhd(path: Path, max_bytes: int = MAX_DATA_BYTES) -> MetaImage:
    """Read a MetaImage volume; see the module docstring for what is refused."""
    path = Path(path)
    fields = read_header(path)
    if fields.get("CompressedData", "False").lower() in _TRUE:
        raise ValueError(f"{path}: compressed MetaImage data is not supported")
    if int(fields.get("ElementNumberOfChannels", "1")) != 1:
        raise ValueError(f"{path}: only one channel per element is supported")
    ndims = _ints(path, fields, "NDims", 1)[0]
    if ndims not in (2, 3):
        raise ValueError(f"{path}: NDims must be 2 or 3, got {ndims}")
    dims = _ints(path, fields, "DimSize", ndims)
    kind = fields.get("ElementType", "")
    if kind not in ELEMENT_TYPES:
        raise ValueError(f"{path}: ElementType {kind!r} is not one of {sorted(ELEMENT_TYPES)}")
    msb = fields.get("BinaryDataByteOrderMSB") or fields.get("ElementByteOrderMSB") or "False"
    dtype = np.dtype(ELEMENT_TYPES[kind]).newbyteorder(">" if msb.lower() in _TRUE else "<")
    count = math.prod(dims)
    wanted = count * dtype.itemsize
    if wanted > max_bytes:
        raise ValueError(f"{path}: {wanted} bytes of data, over the limit of {max_bytes}")
    data = _data_file(path, fields)
    size = data.stat().st_size
    offset = int(fields.get("HeaderSize", "0"))
    offset = size - wanted if offset == -1 else offset
    if offset < 0 or size < offset + wanted:
        raise ValueError(f"{data}: {size} bytes, but the header needs {wanted} from {offset}")
    with data.open("rb") as handle:
        handle.seek(offset)
        raw = handle.read(wanted)
    array = np.frombuffer(raw, dtype=dtype, count=count).reshape(dims[::-1])
    LOGGER.debug("read %s: %s %s", path, kind, array.shape)
    return MetaImage(
        array.astype(dtype.newbyteorder("=")), _spacing(path, fields, ndims), fields, data
    )
