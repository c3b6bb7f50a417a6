"""The SCP acknowledges only what is safe and sound (security-reliability.md item 32).

Real associations on localhost (pynetdicom as the camera; dcmtk's storescu as another). Each
refusal is the exact DIMSE status with an Error Comment naming the problem, audited, nothing
stored for it, and the service still answers C-ECHO afterwards.
"""

from __future__ import annotations

import io
import json
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    generate_uid,
)
from pynetdicom import AE

from appliance.capture.scp import VERIFICATION
from appliance.config import Settings
from appliance.runtime.services import Services
from tests.conftest import fundus, op_bytes, require_tool

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
PREFIX_64 = "1.2.826.0.1.3680043.10.1234." + "1" * 36  # 64 characters


def send(settings: Settings, *datasets: Dataset | Path, calling: str = "CAMERA1") -> list[Dataset]:
    """C-STORE each dataset (or Part 10 file, sent as it is) on one association."""
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    for item in datasets:
        ds = item if isinstance(item, Dataset) else pydicom.dcmread(item, stop_before_pixels=True)
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", settings.dicom_port, ae_title=settings.dicom_ae_title)
    assert assoc.is_established
    try:
        with warnings.catch_warnings():  # pydicom rightly warns about hostile values
            warnings.simplefilter("ignore", UserWarning)
            return [assoc.send_c_store(item) for item in datasets]
    finally:
        assoc.release()


def echo(settings: Settings) -> int:
    ae = AE(ae_title="CHECK")
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate("127.0.0.1", settings.dicom_port, ae_title=settings.dicom_ae_title)
    assert assoc.is_established
    status = assoc.send_c_echo()
    assoc.release()
    return int(status.Status)


def read(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def with_uid(ds: Dataset, uid: str) -> Dataset:
    with warnings.catch_warnings():  # pydicom rightly warns about a hostile value
        warnings.simplefilter("ignore", UserWarning)
        ds.SOPInstanceUID = uid
    return ds


def events(services: Services, **where: Any) -> list[dict[str, Any]]:
    rows = services.store.query("SELECT * FROM audit_events ORDER BY seq")
    out = []
    for row in rows:
        row = dict(row)
        row["detail"] = json.loads(row["detail"])
        if all(row.get(k, row["detail"].get(k)) == v for k, v in where.items()):
            out.append(row)
    return out


def captures(services: Services) -> int:
    return int(services.store.scalar("SELECT count(*) FROM captures"))


def refused(services: Services, settings: Settings, ds: Dataset | Path, reason: str) -> Dataset:
    """Send ``ds``; assert 0xC000 with an Error Comment, the audit, nothing stored, and that
    the SCP still answers."""
    before = captures(services)
    (status,) = send(settings, ds)
    assert status.Status == 0xC000, status
    assert status.ErrorComment
    assert events(services, refused=reason), f"no audit event with refused={reason}"
    assert captures(services) == before
    assert echo(settings) == 0
    return status


@pytest.fixture
def small(settings: Settings) -> Iterator[tuple[Settings, Services]]:
    """A service with small pixel and frame limits, so the images over them stay small."""
    small = settings.replace(max_image_pixels=1_000_000, max_image_frames=4)
    services = Services(small)
    services.start(hotfolder=False, worker=False)
    try:
        yield small, services
    finally:
        services.stop()


# -- finding 3: UIDs ------------------------------------------------------------------------


def storescu(settings: Settings, path: Path) -> str:
    """Send a file with dcmtk's storescu (it sends UIDs pynetdicom's SCU will not)."""
    sent = subprocess.run(
        [require_tool("storescu"), "-v", "-xy", "-aet", "CAMERA2", "-aec"]
        + [settings.dicom_ae_title, "127.0.0.1", str(settings.dicom_port), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return sent.stdout + sent.stderr


def test_uids_sharing_their_first_64_characters_are_both_refused(
    settings: Settings, services: Services, tmp_path: Path
) -> None:
    """Both were answered 0x0000 and only the first kept: the UID was cut to 64 characters."""
    for n, seed in (("1", 1), ("2", 2)):
        ds = read(op_bytes(fundus(seed=seed)))
        path = tmp_path / f"long{n}.dcm"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = PREFIX_64 + n
            ds.save_as(path)
        assert "Error: CannotUnderstand" in storescu(settings, path)
        assert echo(settings) == 0
    assert captures(services) == 0
    refusals = events(services, refused="bad_uid")
    assert [e["detail"]["message"] for e in refusals] == [
        "SOP Instance UID is 65 characters long, over 64"
    ] * 2


@pytest.mark.parametrize(
    ("uid", "comment"),
    [
        ("1.2.840.012", "SOP Instance UID has an empty or zero-padded component"),
        ("1.2.840.", "SOP Instance UID has an empty or zero-padded component"),
        ("1.2.840.1a", "SOP Instance UID holds characters other than digits and dots"),
    ],
)
def test_uid_form_is_checked(
    settings: Settings, services: Services, uid: str, comment: str
) -> None:
    ds = with_uid(read(op_bytes()), uid)
    assert refused(services, settings, ds, "bad_uid").ErrorComment == comment


def test_a_64_character_uid_is_taken(settings: Settings, services: Services) -> None:
    ds = read(op_bytes())
    ds.SOPInstanceUID = PREFIX_64
    assert send(settings, ds)[0].Status == 0x0000
    held = services.store.one("SELECT sop_instance_uid FROM captures")
    assert held["sop_instance_uid"] == PREFIX_64


def test_a_known_uid_with_other_content_is_a_conflict_and_the_first_copy_stays(
    settings: Settings, services: Services
) -> None:
    uid = generate_uid()
    first = read(op_bytes(fundus(seed=1), patient_id="PAT-A", sop_instance_uid=uid))
    other = read(op_bytes(fundus(seed=2), patient_id="PAT-B", sop_instance_uid=uid))
    assert send(settings, first)[0].Status == 0x0000
    kept = services.store.one("SELECT * FROM captures")
    status = refused(services, settings, other, "uid_conflict")
    assert status.ErrorComment == "SOP Instance UID already held with other content (first kept)"
    assert services.store.query("SELECT id, content_sha256, file_path FROM captures") == [
        {k: kept[k] for k in ("id", "content_sha256", "file_path")}
    ]
    stored = read((settings.data_path / kept["file_path"]).read_bytes())
    assert stored.PatientID == "PAT-A" and stored.PixelData == first.PixelData
    (alert,) = events(services, refused="uid_conflict")
    assert alert["event_id"] == "110113" and alert["outcome"] == 8  # security alert, serious
    assert json.loads(alert["sop_instance_uids"]) == [uid]
    assert alert["detail"]["capture_id"] == kept["id"]
    assert alert["detail"]["held_sha256"] == kept["content_sha256"]
    assert services.audit.verify().ok


def test_an_identical_resend_through_another_sender_is_a_success(
    settings: Settings, services: Services, tmp_path: Path
) -> None:
    """storescu writes another File Meta than pynetdicom: the same object all the same."""
    path = tmp_path / "camera.dcm"
    path.write_bytes(op_bytes())
    assert send(settings, read(path.read_bytes()))[0].Status == 0x0000
    output = storescu(settings, path)
    assert "Received Store Response (Success)" in output, output
    assert captures(services) == 1
    resend = events(services, duplicate=True)
    assert resend and resend[-1]["outcome"] == 0 and resend[-1]["ae_title"] == "CAMERA2"


# -- finding 6: pixel data decoded before success --------------------------------------------


def _with_jpeg(jpeg: bytes, *, rows: int | None = None, columns: int | None = None) -> Dataset:
    ds = read(op_bytes(fundus(seed=3, size=(96, 128))))
    ds.PixelData = encapsulate([jpeg])
    if rows is not None:
        ds.Rows, ds.Columns = rows, columns
    return ds


def _camera_jpeg() -> bytes:
    ds = read(op_bytes(fundus(seed=3, size=(96, 128))))
    return next(generate_frames(ds.PixelData, number_of_frames=1))


@pytest.mark.parametrize("damage", ["cut_in_half", "huffman_table_broken"])
def test_a_corrupt_jpeg_inside_dicom_is_refused(
    settings: Settings, services: Services, damage: str
) -> None:
    jpeg = _camera_jpeg()
    if damage == "cut_in_half":
        jpeg = jpeg[: len(jpeg) // 2]
    else:
        jpeg = jpeg.replace(b"\xff\xc4", b"\xff\xc4\x00\x00", 1)
    status = refused(services, settings, _with_jpeg(jpeg), "undecodable_pixels")
    assert status.ErrorComment.startswith("the pixel data cannot be decoded")


def test_a_jpeg_transfer_syntax_over_native_pixels_is_refused(
    settings: Settings, services: Services, tmp_path: Path
) -> None:
    ds = _native(96, 128)
    del ds.file_meta
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)  # native bytes, Explicit VR Little Endian ...
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = JPEGBaseline8Bit  # ... under a meta that says JPEG Baseline
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    head = DicomBytesIO()
    head.is_little_endian, head.is_implicit_VR = True, False
    write_file_meta_info(head, meta, enforce_standard=True)
    path = tmp_path / "lie.dcm"
    path.write_bytes(b"\x00" * 128 + b"DICM" + head.getvalue() + body.getvalue())
    status = refused(services, settings, path, "pixel_encoding_mismatch")
    assert status.ErrorComment.startswith("the Pixel Data is native but the transfer syntax")


def test_a_huge_header_over_a_small_jpeg_is_refused(settings: Settings, services: Services) -> None:
    ds = _with_jpeg(_camera_jpeg(), rows=15000, columns=15000)
    status = refused(services, settings, ds, "image_too_large")
    assert status.ErrorComment.startswith("the image is 15000x15000 pixels, over the limit")
    ds = _with_jpeg(_camera_jpeg(), rows=3000, columns=4000)  # under the limit, still a lie
    status = refused(services, settings, ds, "pixel_header_mismatch")
    assert status.ErrorComment.startswith("frame 1 is 128x96 with 3 component(s) where the")


def _native(rows: int, columns: int, frames: int = 1) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "NATIVE1"
    ds.Modality = "OT"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = bytes(rows * columns * frames)
    ds["PixelData"].VR = "OB"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def test_uncompressed_images_over_the_pixel_and_frame_limits_are_refused(
    small: tuple[Settings, Services],
) -> None:
    """The limit is per frame, as on the other paths (it was 4x the limit over all frames)."""
    settings, services = small
    status = refused(services, settings, _native(1000, 1100), "image_too_large")
    assert status.ErrorComment.startswith("the image is 1100x1000 pixels, over the limit of")
    status = refused(services, settings, _native(100, 100, frames=5), "too_many_frames")
    assert status.ErrorComment.startswith("the image has 5 frames, over the limit of 4")
    assert send(settings, _native(1000, 1000, frames=4))[0].Status == 0x0000


# -- finding 9 (part): refused callers audited; identity conflicts flagged -------------------


def test_an_unknown_calling_ae_is_rejected_and_audited(settings: Settings, tmp_path: Path) -> None:
    restricted = settings.replace(
        dicom_allowed_calling_aes=("CAMERA1",), data_dir=str(tmp_path / "r")
    )
    services = Services(restricted)
    services.start(hotfolder=False, worker=False)
    try:
        ae = AE(ae_title="INTRUDER")
        ae.add_requested_context(VERIFICATION)
        assoc = ae.associate("127.0.0.1", restricted.dicom_port, ae_title="SCREENING")
        assert assoc.is_rejected
        (alert,) = events(services, refused="calling_ae_not_allowed")
        assert alert["event_id"] == "110113" and alert["outcome"] == 8
        assert alert["ae_title"] == "INTRUDER" and alert["source_address"] == "127.0.0.1"
        assert send(restricted, read(op_bytes()))[0].Status == 0x0000
    finally:
        services.stop()


def _named(name: str, patient_id: str = "PAT-ID-1", sex: str = "F") -> Dataset:
    ds = read(op_bytes(fundus(seed=len(name)), patient_id=patient_id))
    ds.PatientName, ds.PatientSex = name, sex
    return ds


def test_same_patient_id_with_another_name_is_flagged(
    settings: Settings, services: Services
) -> None:
    assert send(settings, _named("Smith^Anne"))[0].Status == 0x0000
    assert send(settings, _named("SMITH^ANNE^^"))[0].Status == 0x0000  # the same, as read
    assert send(settings, _named("Jones^Bob", sex="M"))[0].Status == 0x0000
    rows = services.store.query("SELECT * FROM captures ORDER BY id")
    assert [r["identity_conflict"] for r in rows[:2]] == [None, None]
    conflict = json.loads(rows[2]["identity_conflict"])
    assert conflict == {
        "patient_name": {"held": "Smith^Anne", "received": "Jones^Bob"},
        "sex": {"held": "F", "received": "M"},
    }
    assert len({r["patient_pk"] for r in rows}) == 1  # filed under the patient held ...
    (alert,) = events(services, alert="identity_conflict")  # ... and flagged
    assert alert["event_id"] == "110113" and alert["patient_id"] == "PAT-ID-1"
    assert alert["detail"]["fields"] == ["patient_name", "sex"]
    assert alert["detail"]["capture_id"] == rows[2]["id"]
    exposition = services.metrics.exposition().decode()
    assert 'appliance_identity_conflicts_total{source="dicom"} 1.0' in exposition
    assert services.audit.verify().ok
