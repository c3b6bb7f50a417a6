"""A Heidelberg Spectralis ``.vol`` export from the hot folder, turned into the OPT object a
camera would send (``capture/opt_write.py``), so it is stored, measured and forwarded like one.

The file is read in two steps, each bounded before anything is allocated:

1. the 2048-byte file header, read here with :mod:`struct`: the ``HSF-OCT-`` magic; A-scans,
   B-scans and samples per A-scan against the limits an OPT object meets at ingest
   (``capture/pixels.py`` ``Limits``: pixels per frame, frames, decoded bytes); the file's
   length against the length the header implies (a truncated file or a header that lies about
   its data is refused); the spacing (lateral, axial, between B-scans) within the plausible
   range ``capture/oct.py`` measures; a volume scan (not a line, circle or star); the eye;
2. then each B-scan record, one at a time, by eyepy (MIT; imported only now, so the appliance's
   start and memory do not carry it): its header and its float intensities, mapped to 8 bits
   with eyepy's ``from_vol_intensity`` (Heyex's log display scale). Memory is the 8-bit volume
   plus one B-scan.

Identity: a sidecar's fields, else the station's selection, else the Patient ID (and birth
date) in the export's header; a sidecar or selection naming another Patient ID than the export,
or another eye, is refused (a wrong-patient volume must not be filed). Geometry (spacing, the
eye from ScanPosition), the exam time and the device (Heidelberg Engineering Spectralis, whose
CST threshold the rule file knows) are carried into the OPT. Every refusal is a
:class:`RejectedInput` with a plain message; the hot folder moves the file to ``rejected/``.

Only ``.vol`` is read. Heidelberg ``.e2e`` exports are refused with a plain reason (eyepy reads
them, but no independent writer exists to test that reading here); the ``.xml`` export (an XML
file with one image file per B-scan) is not taken either.
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import io
import math
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from appliance.capture.oct import AXIAL_MM, FRAME_MM, LATERAL_MM, MIN_FRAMES, MIN_SIZE
from appliance.capture.opt_write import OptHeader, name_based_uid, opt_dataset
from appliance.capture.pixels import Limits, check_limits
from appliance.domain import PatientInfo
from appliance.errors import RejectedInput, TooLarge, UnsupportedFormat

SUFFIXES = (".vol",)
REFUSED_SUFFIXES = {
    ".e2e": "Heidelberg .e2e exports are not read; export the volume from Heyex as .vol",
    ".sdb": "Heidelberg .sdb exports are not read; export the volume from Heyex as .vol",
}
FORMAT = "heidelberg_vol"
MANUFACTURER = "Heidelberg Engineering"
MODEL = "Spectralis"
WAVELENGTH_NM = 870.0  # Spectralis SD-OCT light source
CONVERTED_FROM = "converted from a Heidelberg .vol export, 8-bit display scale"
DEVICE_SERIAL = "unknown"  # Type 1 in the OPT; a .vol does not name the device's serial number
HEADER_BYTES = 2048
BSCAN_FIXED_BYTES = 256  # the part of a B-scan header before its segmentation lines
MAX_BSCAN_HEADER_BYTES = 1024 * 1024
# After the last B-scan an export may carry its thickness grids (a few hundred bytes each);
# more than this beyond what the header describes means the header does not match the data.
MAX_TRAILER_BYTES = 64 * 1024
_HEADER = struct.Struct("<12s3I3d2I2dId4sQiI16s16sI24sdI24sdII")
_MAGIC = b"HSF-OCT-"
_EYES = {"OD": "R", "OS": "L"}
_VOLUME_PATTERNS = (3, 4)  # Heyex ScanPattern: 3 volume, 4 fast volume
_PATTERNS = {1: "a single line scan", 2: "a circle scan", 5: "a radial (star) scan"}
_EPOCH_1601 = datetime.datetime(1601, 1, 1)
_EPOCH_1899 = datetime.date(1899, 12, 30)


@dataclass(frozen=True)
class VolHeader:
    """What the file header says, as checked (sizes in samples, spacing in mm)."""

    version: str
    size_x: int  # A-scans per B-scan
    frames: int  # B-scans
    size_z: int  # samples per A-scan
    spacing_mm: tuple[float, float, float]  # (between B-scans, axial, lateral)
    slo_bytes: int
    bscan_header_bytes: int
    eye: str | None  # "R" / "L"
    patient_id: str
    birth_date: str  # YYYYMMDD or ""
    acquired: datetime.datetime | None

    @property
    def record_bytes(self) -> int:
        return self.bscan_header_bytes + self.size_x * self.size_z * 4

    @property
    def expected_bytes(self) -> int:
        return HEADER_BYTES + self.slo_bytes + self.frames * self.record_bytes


@dataclass(frozen=True)
class VolScan:
    header: VolHeader
    volume: np.ndarray  # uint8 (frames, rows, A-scans), the top B-scan first
    sha256: str
    size_bytes: int


def _text(raw: bytes) -> str:
    value = raw.split(b"\0", 1)[0].decode("ascii", "replace")
    return "".join(ch for ch in value if ch.isprintable()).strip()[:64]


def _birth_date(days: float) -> str:
    if not math.isfinite(days) or not 1 <= days <= 80_000:  # 1900 … 2118
        return ""
    return (_EPOCH_1899 + datetime.timedelta(days=int(days))).strftime("%Y%m%d")


def _acquired(ticks: int) -> datetime.datetime | None:
    """ExamTime: 100 ns units since 1601-01-01; None when absent or implausible."""
    try:
        when = _EPOCH_1601 + datetime.timedelta(microseconds=ticks // 10)
    except OverflowError:
        return None
    return when if 1990 <= when.year <= 2200 else None


def bad(message: str, reason: str = "bad_vol_header") -> RejectedInput:
    return RejectedInput(message, reason=reason)


def read_header(raw: bytes, file_bytes: int, limits: Limits) -> VolHeader:
    """The file header of a ``.vol`` of ``file_bytes``, checked; RejectedInput says why not."""
    if len(raw) < HEADER_BYTES or not raw.startswith(_MAGIC):
        raise UnsupportedFormat(
            "not a Heidelberg .vol export (the file does not start with an HSF-OCT header)"
        )
    f = _HEADER.unpack_from(raw)
    size_x, frames, size_z, lateral, between, axial, slo_x, slo_y = f[1:9]
    position, exam_ticks, pattern, bscan_header = f[13], f[14], f[15], f[16]
    if pattern not in _VOLUME_PATTERNS:
        what = _PATTERNS.get(pattern, f"scan pattern {pattern}")
        raise bad(f"the export is {what}, not a macular volume", "not_a_volume")
    if min(size_x, frames, size_z) == 0:
        raise bad(f"the .vol header gives {frames} B-scans of {size_x} A-scans x {size_z} samples")
    check_limits(size_z, size_x, frames, limits)
    decoded = frames * size_z * size_x
    if decoded > limits.max_inflated_bytes:
        raise TooLarge(
            f"the volume holds {decoded} samples, over the limit of {limits.max_inflated_bytes}",
            reason="volume_too_large",
        )
    if frames < MIN_FRAMES or size_x < MIN_SIZE or size_z < MIN_SIZE:
        raise bad(
            f"the volume ({frames} B-scans of {size_x}x{size_z}) is too small to measure: at "
            f"least {MIN_FRAMES} B-scans of {MIN_SIZE}x{MIN_SIZE}",
            "not_a_volume",
        )
    if slo_x * slo_y > limits.max_image_pixels:
        raise bad(f"the .vol header gives a {slo_x}x{slo_y} localiser image")
    if not BSCAN_FIXED_BYTES <= bscan_header <= MAX_BSCAN_HEADER_BYTES:
        raise bad(f"the .vol header gives a B-scan header of {bscan_header} bytes")
    for name, value, (low, high) in (
        ("distance between B-scans", between, FRAME_MM),
        ("axial pixel size", axial, AXIAL_MM),
        ("lateral pixel size", lateral, LATERAL_MM),
    ):
        if not (math.isfinite(value) and low <= value <= high):
            raise bad(f"the {name} ({value:.6g} mm) is outside {low}-{high} mm", "bad_vol_geometry")
    header = VolHeader(
        version=_text(f[0]), size_x=size_x, frames=frames, size_z=size_z,
        spacing_mm=(float(between), float(axial), float(lateral)), slo_bytes=slo_x * slo_y,
        bscan_header_bytes=bscan_header, eye=_EYES.get(_text(position).upper()),
        patient_id=_text(f[20]), birth_date=_birth_date(f[21]), acquired=_acquired(exam_ticks),
    )  # fmt: skip
    expected = header.expected_bytes
    if not expected <= file_bytes <= expected + MAX_TRAILER_BYTES:
        raise bad(
            f"the .vol header describes {expected} bytes ({frames} B-scans of {size_x}x{size_z}), "
            f"the file holds {file_bytes}: it is truncated or its header does not match its data",
            "vol_size_mismatch",
        )
    return header


def _read_exactly(fh: io.BufferedReader, count: int, digest: Any, what: str) -> bytes:
    data = fh.read(count)
    if len(data) != count:
        raise bad(f"the file ended inside {what}", "vol_size_mismatch")
    digest.update(data)
    return data


def _bscans(
    fh: io.BufferedReader, header: VolHeader, digest: Any
) -> tuple[np.ndarray, list[float]]:
    """Every B-scan, one record at a time, as 8 bits; and each one's start y on the localiser.
    eyepy parses each B-scan header and maps the float intensities; one record buffer and one
    float buffer are reused, so memory is the 8-bit volume and little more."""
    import construct  # imported only when a .vol arrives, with eyepy
    from eyepy.core.utils import from_vol_intensity
    from eyepy.io.he.vol_reader import bscan_format

    head = construct.Struct(*bscan_format.subcons[:-1])  # all but the B-scan's pixels
    size = (header.size_z, header.size_x)
    volume = np.empty((header.frames, *size), dtype=np.uint8)
    record = bytearray(header.record_bytes)
    work = np.empty(size, dtype=np.float32)
    start_y: list[float] = []
    for index in range(header.frames):
        if fh.readinto(record) != len(record):
            raise bad(f"the file ended inside B-scan {index + 1}", "vol_size_mismatch")
        digest.update(record)
        try:
            parsed = head.parse(
                bytes(record[: header.bscan_header_bytes]), size_x=size[1], size_y=size[0]
            )
            if int(parsed.bscan_hdr_size) != header.bscan_header_bytes:
                raise ValueError("its header size differs from the file header's")
            pixels = np.frombuffer(record, "<f4", size[0] * size[1], header.bscan_header_bytes)
            np.copyto(work, pixels.reshape(size))
            np.nan_to_num(work, copy=False, nan=0.0)
            volume[index] = from_vol_intensity(work)
            start_y.append(float(parsed.start_y))
        except Exception as exc:  # construct and numpy raise many kinds on damaged records
            raise bad(
                f"B-scan {index + 1} of the .vol cannot be read: {type(exc).__name__}: {exc}"[:300],
                "bad_vol_bscan",
            ) from None
    return volume, start_y


def read_vol(path: Path, limits: Limits, max_bytes: int) -> VolScan:
    """The checked header and 8-bit volume of the ``.vol`` at ``path`` (never a link)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            link = "the file became a symbolic link; links are never followed"
            raise bad(link, "not_a_file") from None
        raise
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise bad("only regular files are taken", "not_a_file")
        if info.st_size > max_bytes:
            raise TooLarge(f"the file is {info.st_size} bytes, over the {max_bytes}-byte limit")
        digest = hashlib.sha256()
        raw = _read_exactly(fh, min(HEADER_BYTES, info.st_size), digest, "the file header")
        header = read_header(raw, info.st_size, limits)
        _read_exactly(fh, header.slo_bytes, digest, "the localiser image")
        volume, start_y = _bscans(fh, header, digest)
        trailer = fh.read(MAX_TRAILER_BYTES + 1)
        if len(trailer) > MAX_TRAILER_BYTES:
            raise bad("the file grew while it was read", "vol_size_mismatch")
        digest.update(trailer)
        size = HEADER_BYTES + header.slo_bytes + header.frames * header.record_bytes + len(trailer)
    if start_y[0] > start_y[-1]:  # the first B-scan is the lowest on the localiser
        volume = volume[::-1]
    return VolScan(header, np.ascontiguousarray(volume), digest.hexdigest(), size)


def opt_header(scan: VolScan, patient: PatientInfo | None, study: tuple[str, str]) -> OptHeader:
    """The OPT's header: ``patient`` (from a sidecar or the station) or the export's own ID;
    ``study``: (Study Instance UID, Accession Number); when none is given, the study is the
    patient's exam day (a UID derived from the patient and the exam date, so the right and left
    eyes' exports of one exam are one visit; a new one per file only without an exam date or a
    Patient ID). Its other UIDs are derived from the export's SHA-256: the same export dropped
    again makes the same object ("already received"), or, filed under another identity, one
    refused as other content under a held UID."""
    header = scan.header
    if patient is not None and header.patient_id and patient.patient_id != header.patient_id:
        raise bad(
            "the export names another Patient ID than the one chosen for it (sidecar or "
            "station selection); check the patient before dropping the file again",
            "identity_conflict",
        )
    if patient is None:
        patient = PatientInfo(patient_id=header.patient_id, birth_date=header.birth_date)
    if not study[0] and header.acquired is not None and patient.patient_id:
        # no study given: the patient's exam that day, so both eyes' exports are one visit
        exam = f"{patient.issuer}|{patient.patient_id}|{header.acquired.date().isoformat()}"
        study = (name_based_uid(exam, "heidelberg vol exam study"), study[1])
    return OptHeader(
        patient_id=patient.patient_id, patient_name=patient.patient_name,
        birth_date=patient.birth_date or header.birth_date, sex=patient.sex,
        issuer=patient.issuer, study_instance_uid=study[0], accession_number=study[1],
        manufacturer=MANUFACTURER, model=MODEL, software_versions=header.version,
        device_serial=DEVICE_SERIAL,
        acquired=header.acquired, wavelength_nm=WAVELENGTH_NM, uid_seed=scan.sha256,
        converted_from=CONVERTED_FROM,
    )  # fmt: skip


def opt_bytes(scan: VolScan, opt: OptHeader, laterality: str | None) -> bytes:
    """The OPT object (Part 10, uncompressed) of ``scan``; ``laterality`` a sidecar's, if any."""
    eye = scan.header.eye
    if laterality and eye and laterality != eye:
        raise bad("the sidecar names the other eye than the export's scan position", "bad_sidecar")
    eye = eye or laterality
    if eye is None:
        raise bad("the export does not say which eye (its scan position is neither OD nor OS)")
    ds = opt_dataset(scan.volume, scan.header.spacing_mm, eye, opt)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
