"""The hostile-input corpus (security-reliability.md items 12-14, 16, 18).

Every refusal is the exact exception class with its stable ``reason``; through ingest it is
audited (outcome 4, ``detail.refused``), nothing is stored, the audit chain still verifies and
the service still takes a good image afterwards.
"""

from __future__ import annotations

import io
import json
import re
import struct
import warnings
import zlib
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pydicom
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

from appliance.capture import Incoming, Limits, examine
from appliance.capture.decode import Inspection
from appliance.config import Settings
from appliance.domain import Source
from appliance.errors import (
    ApplianceError,
    RejectedInput,
    TooLarge,
    UnsupportedFormat,
    UnsupportedSOPClass,
)
from appliance.runtime.services import Services
from tests.conftest import fundus, jpeg_bytes, op_bytes, outside_files, png_bytes

MAX_INFLATED = 1024 * 1024
MAX_PIXELS = 1_000_000
LIMITS = Limits(max_image_pixels=MAX_PIXELS, max_inflated_bytes=MAX_INFLATED)
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
SOP_CLASS_TAG = b"\x08\x00\x16\x00UI"  # (0008,0016) SOP Class UID, Explicit VR LE
# How a fixed decoder should name a malformed / truncated DICOM file (RejectedInput's default
# reason is "unreadable"; "truncated" would be a fair, more specific choice).
MALFORMED = {"unreadable", "truncated"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared settings, with small caps so the bombs below stay small."""
    return settings.replace(max_inflated_bytes=MAX_INFLATED, max_image_pixels=MAX_PIXELS)


# -- building the corpus ---------------------------------------------------------------------


@cache
def small_op() -> bytes:
    return op_bytes(fundus(seed=3, size=(96, 128)))


@cache
def small_png() -> bytes:
    return png_bytes(fundus(seed=4, size=(48, 64)))


@cache
def small_jpeg() -> bytes:
    return jpeg_bytes(fundus(seed=5, size=(96, 128)))


def _encode(ds: Dataset, *, implicit: bool = False) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = implicit
    write_dataset(fp, ds)
    return fp.getvalue()


def _part10(body: bytes, transfer_syntax: str, sop_instance: str = "1.2.3.4") -> bytes:
    """Preamble + File Meta (always Explicit VR LE) + an already encoded dataset."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_file_meta_info(fp, meta, enforce_standard=True)
    return b"\x00" * 128 + b"DICM" + fp.getvalue() + body


def _sop_common(uid: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = uid
    ds.Modality = "OT"
    return ds


def _image_module(rows: int = 8, columns: int = 8) -> Dataset:
    ds = Dataset()
    ds.StudyInstanceUID = generate_uid()
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelRepresentation = 0
    return ds


def _pixel_data(length: int) -> Dataset:
    ds = Dataset()
    ds.PixelData = bytes(length)
    ds["PixelData"].VR = "OB"
    return ds


def native_sc(delta: int = 0) -> bytes:
    """Secondary Capture, Explicit VR LE, 8x8 RGB: 192 bytes of Pixel Data, plus ``delta``."""
    uid = generate_uid()
    body = _encode(_sop_common(uid)) + _encode(_image_module()) + _encode(_pixel_data(192 + delta))
    return _part10(body, ExplicitVRLittleEndian, uid)


def deflated_sc(zeros: int) -> bytes:
    """Deflated Explicit VR LE Secondary Capture carrying an OB run of ``zeros`` zero bytes.

    The run is compressed in chunks, so a 50 MB run costs a few KB on disk and little memory.
    """
    uid = generate_uid()
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [deflater.compress(_encode(_sop_common(uid)) + _encode(_image_module()))]
    # (0042,0011) Encapsulated Document, OB, explicit length
    parts.append(deflater.compress(struct.pack("<HH2sHI", 0x0042, 0x0011, b"OB", 0, zeros)))
    chunk = bytes(1024 * 1024)
    left = zeros
    while left:
        step = min(left, len(chunk))
        parts.append(deflater.compress(chunk[:step]))
        left -= step
    parts.append(deflater.compress(_encode(_pixel_data(192))))
    parts.append(deflater.flush())
    return _part10(b"".join(parts), DeflatedExplicitVRLittleEndian, uid)


def undefined_length(kind: str) -> bytes:
    """A non-sequence element whose length is 0xFFFFFFFF (and no delimiter ever follows)."""
    uid = generate_uid()
    if kind == "implicit LO":
        bad = struct.pack("<HHI", 0x0010, 0x0020, 0xFFFFFFFF) + b"PATIENT1" * 4  # Patient ID
        body = _encode(_sop_common(uid), implicit=True) + bad
        body += _encode(_image_module(), implicit=True) + _encode(_pixel_data(192), implicit=True)
        return _part10(body, ImplicitVRLittleEndian, uid)
    tag, vr = {"explicit UT": ((0x0040, 0xA160), b"UT"), "explicit OB": ((0x0042, 0x0011), b"OB")}[
        kind
    ]
    bad = struct.pack("<HH2sHI", *tag, vr, 0, 0xFFFFFFFF) + b"text" * 8
    body = _encode(_sop_common(uid)) + _encode(_image_module()) + bad
    body += _encode(_pixel_data(192))
    return _part10(body, ExplicitVRLittleEndian, uid)


def op_edited(edit: Callable[[Dataset], None]) -> bytes:
    """The small OP file, read back, changed by ``edit`` (pydicom's value checks silenced)."""
    ds = pydicom.dcmread(io.BytesIO(small_op()))
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        edit(ds)
        ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _no_pixels(ds: Dataset) -> None:
    del ds.PixelData


def _traversal_uid(ds: Dataset) -> None:
    ds.SOPInstanceUID = "../../x"
    ds.file_meta.MediaStorageSOPInstanceUID = "../../x"


def _ct(ds: Dataset) -> None:
    ds.SOPClassUID = CT_IMAGE
    ds.file_meta.MediaStorageSOPClassUID = CT_IMAGE


def _unknown_transfer_syntax(ds: Dataset) -> None:
    ds.file_meta.TransferSyntaxUID = "1.2.3.4.5.6"


def op_patched(tag: bytes, value: bytes) -> bytes:
    """The small OP file with one short-form Explicit VR element's value bytes replaced."""
    raw = bytearray(small_op())
    at = raw.index(tag)
    length = int.from_bytes(raw[at + 6 : at + 8], "little")
    raw[at + 6 : at + 8 + length] = len(value).to_bytes(2, "little") + value
    return bytes(raw)


def cut_inside_sop_class_uid() -> bytes:
    """The small OP file ending 4 bytes into the SOP Class UID value."""
    return small_op()[: small_op().index(SOP_CLASS_TAG) + 12]


def no_transfer_syntax() -> bytes:
    raw = small_op()
    at = raw.index(b"\x02\x00\x10\x00UI")  # (0002,0010) Transfer Syntax UID → (0002,0011)
    return raw[:at] + b"\x02\x00\x11\x00" + raw[at + 4 :]


def png_declaring(width: int, height: int) -> bytes:
    """A ~100-byte PNG whose IHDR declares ``width`` x ``height`` 1-bit pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    row = b"\x00" + bytes((width + 7) // 8)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(row * 16, 9))
        + chunk(b"IEND", b"")
    )


def png_over_configured_limit() -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (1200, 1000)).save(buffer, "PNG")  # 1.2 MP, a few hundred bytes
    return buffer.getvalue()


CORPUS = [
    pytest.param(
        lambda: small_op()[: len(small_op()) // 2], RejectedInput, MALFORMED,
        id="dicom-truncated-in-half",
    ),
    pytest.param(cut_inside_sop_class_uid, RejectedInput, MALFORMED,
                 id="dicom-truncated-in-dataset-header"),
    pytest.param(lambda: small_op()[:200], RejectedInput, {"bad_meta"},
                 id="dicom-truncated-in-file-meta"),
    pytest.param(lambda: b"this is a text file someone named IMG_0001.dcm\n" * 20,
                 UnsupportedFormat, {"unrecognised_format"}, id="text-named-dcm"),
    pytest.param(lambda: op_edited(_no_pixels), RejectedInput, {"no_pixel_data"},
                 id="dicom-without-pixel-data"),
    pytest.param(lambda: native_sc(-10), RejectedInput, {"pixel_length_mismatch"},
                 id="native-pixel-data-short"),
    pytest.param(lambda: native_sc(+10), RejectedInput, {"pixel_length_mismatch"},
                 id="native-pixel-data-long"),
    pytest.param(lambda: deflated_sc(50 * 1024 * 1024), TooLarge, {"deflate_bomb"},
                 id="deflate-bomb"),
    pytest.param(lambda: png_declaring(20_000, 20_000), TooLarge, {"image_too_large"},
                 id="png-bomb-20000x20000"),
    pytest.param(png_over_configured_limit, TooLarge, {"image_too_large"},
                 id="png-over-configured-pixel-limit"),
    pytest.param(lambda: small_jpeg()[: len(small_jpeg()) // 2], RejectedInput,
                 {"corrupt_image"}, id="jpeg-truncated"),
    pytest.param(lambda: b"\xff\xd8\xff" + bytes(200), RejectedInput, {"corrupt_image"},
                 id="jpeg-garbage-after-soi"),
    pytest.param(lambda: op_edited(_traversal_uid), RejectedInput, {"bad_uid"},
                 id="sop-instance-uid-traversal"),
    pytest.param(lambda: op_edited(_ct), UnsupportedSOPClass, {"sop_class_not_supported"},
                 id="ct-image-storage"),
    pytest.param(lambda: op_edited(_unknown_transfer_syntax), RejectedInput,
                 {"bad_transfer_syntax"}, id="unknown-transfer-syntax"),
    pytest.param(no_transfer_syntax, RejectedInput, {"bad_meta"}, id="no-transfer-syntax"),
    *(
        pytest.param(lambda kind=kind: undefined_length(kind), RejectedInput, MALFORMED,
                     id=f"undefined-length-{kind.replace(' ', '-')}")
        for kind in ("explicit UT", "explicit OB", "implicit LO")
    ),
    pytest.param(lambda: op_patched(b"\x28\x00\x08\x00IS", b"abc "), RejectedInput,
                 {"bad_pixel_module", "unreadable"}, id="number-of-frames-not-a-number"),
    pytest.param(lambda: op_patched(b"\x28\x00\x10\x00US", struct.pack("<HH", 96, 96)),
                 RejectedInput, {"bad_pixel_module", "unreadable"}, id="rows-multi-valued"),
]  # fmt: skip


# -- examine: the exact refusal ----------------------------------------------------------------


@pytest.mark.parametrize(("build", "error", "reasons"), CORPUS)
def test_examine_refuses_with_exact_reason(
    build: Callable[[], bytes], error: type[ApplianceError], reasons: set[str]
) -> None:
    with pytest.raises(ApplianceError) as caught:
        examine(build(), LIMITS)
    assert type(caught.value) is error
    assert caught.value.reason in reasons
    assert caught.value.message


def test_unsupported_sop_class_answers_the_camera_0x0122() -> None:
    with pytest.raises(UnsupportedSOPClass) as caught:
        examine(op_edited(_ct), LIMITS)
    assert caught.value.dimse_status == 0x0122


def test_sizes_of_the_bombs_on_disk_are_small() -> None:
    """The bombs are bombs: tiny files that would inflate far past the caps."""
    assert len(deflated_sc(50 * 1024 * 1024)) < 200 * 1024
    assert len(png_declaring(20_000, 20_000)) < 1024


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(small_op, id="op-jpeg-baseline"),
        pytest.param(native_sc, id="native-explicit-vr-le"),
        pytest.param(lambda: deflated_sc(64 * 1024), id="deflated-under-the-cap"),
        pytest.param(small_png, id="png"),
        pytest.param(small_jpeg, id="jpeg"),
    ],
)
def test_examine_accepts_the_well_formed_controls(build: Callable[[], bytes]) -> None:
    """The builders above make valid files; only the one defect in each case is refused."""
    found = examine(build(), LIMITS)
    assert isinstance(found, Inspection)
    assert found.width > 0 and found.height > 0


# -- ingest: refused, audited, nothing stored, still answering --------------------------------


def _stored_files(services: Services) -> list[Path]:
    return [p for p in (services.settings.data_path / "blobs").rglob("*") if p.is_file()]


def _refusals(services: Services) -> list[tuple[int, str]]:
    found = []
    for row in services.audit.rows():
        detail = json.loads(row["detail"])
        if "refused" in detail:
            found.append((row["outcome"], detail["refused"]))
    return found


def _incoming(data: bytes) -> Incoming:
    return Incoming(data=data, source=Source.UPLOAD, user_id="test-suite", source_address="")


def assert_still_answers(services: Services) -> None:
    assert services.health()["status"] == "ok"
    capture = services.ingestor.ingest(_incoming(jpeg_bytes(fundus(seed=9, size=(96, 128)))))
    assert capture.id > 0 and not capture.duplicate


@pytest.mark.parametrize(("build", "error", "reasons"), CORPUS)
def test_ingest_refuses_audits_and_stores_nothing(
    services: Services,
    build: Callable[[], bytes],
    error: type[ApplianceError],
    reasons: set[str],
) -> None:
    with pytest.raises(ApplianceError) as caught:
        services.ingestor.ingest(_incoming(build()))
    assert type(caught.value) is error
    assert caught.value.reason in reasons
    assert _refusals(services) == [(4, caught.value.reason)]
    assert services.store.scalar("SELECT count(*) FROM captures") == 0
    assert services.store.scalar("SELECT count(*) FROM patients") == 0
    assert services.store.scalar("SELECT count(*) FROM studies") == 0
    assert _stored_files(services) == []
    assert services.audit.verify().ok
    assert_still_answers(services)


def test_over_max_bytes_is_refused_before_parsing(settings: Settings, tmp_path: Path) -> None:
    svc = Services(settings.replace(max_dicom_bytes=1000))
    try:
        with pytest.raises(TooLarge) as caught:
            svc.ingestor.ingest(_incoming(small_op()))
        assert caught.value.reason == "too_large"
        assert _refusals(svc) == [(4, "too_large")]
        assert _stored_files(svc) == []
        assert svc.audit.verify().ok
    finally:
        svc.stop()


def test_patient_id_traversal_is_only_text(services: Services, tmp_path: Path) -> None:
    data = op_bytes(fundus(seed=6, size=(96, 128)), patient_id="../..")
    patient = examine(data, LIMITS).patient
    assert patient is not None and patient.patient_id == "../.."

    capture = services.ingestor.ingest(_incoming(data))

    row = services.store.one(
        "SELECT c.file_path, p.patient_id FROM captures c JOIN patients p ON p.id = c.patient_pk "
        "WHERE c.id = ?",
        (capture.id,),
    )
    assert row is not None
    assert row["patient_id"] == "../.."
    assert re.fullmatch(r"blobs/[0-9a-f]{2}/[0-9a-f]{64}\.dcm", row["file_path"])
    assert services.blobs.read(row["file_path"]) == data
    assert outside_files(tmp_path, services.settings.data_path) == []
    assert not any(".." in part for p in tmp_path.rglob("*") for part in p.parts)
    assert services.audit.verify().ok


# -- fuzzing: examine never fails with anything but an ApplianceError -------------------------


def _mutate(draw: st.DrawFn, base: bytes) -> bytes:
    data = bytearray(base)
    edits = draw(
        st.lists(st.tuples(st.integers(0, len(base) - 1), st.integers(0, 255)), max_size=8)
    )
    for position, value in edits:
        data[position] = value
    cut = draw(st.none() | st.integers(0, len(base)))
    return bytes(data if cut is None else data[:cut])


def _examine_or_refuse(data: bytes) -> None:
    try:
        found = examine(data, LIMITS)
    except ApplianceError as exc:
        assert exc.reason and exc.message
    else:
        assert isinstance(found, Inspection)


FUZZ = hypothesis_settings(max_examples=60, deadline=None, derandomize=True, database=None)


@FUZZ
@given(st.data())
def test_fuzz_op_file(data: st.DataObject) -> None:
    _examine_or_refuse(_mutate(data.draw, small_op()))


@FUZZ
@given(st.data())
def test_fuzz_png_file(data: st.DataObject) -> None:
    _examine_or_refuse(_mutate(data.draw, small_png()))
