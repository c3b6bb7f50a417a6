"""Odd OPT headers from a camera, over real associations to a served appliance.

Each case changes one thing in a well-formed synthetic OPT (appliance/synth/oct/dicom.py) and
sends it with pynetdicom as the camera (a truncated dataset goes as raw bytes). The appliance
must answer each with the right DIMSE status and then: either refuse it (0xC000 with an Error
Comment, an audit event naming the reason, nothing stored), or store it, forward it as
received to the archive (a pynetdicom SCP here) and say plainly whether it was measured and,
when not, why. The worker must neither stop, nor loop, nor hold up the next capture; the SCP
must still answer.

Covered elsewhere, not repeated here: geometry read back in-process (tests/capture/
test_oct_read.py: no spacing, absurd axial size, no distance between B-scans, no eye, too
narrow, too few B-scans, decoded-size limit); a corrupt JPEG / native pixels under a JPEG
syntax / huge header over a small JPEG / pixel and frame limits / other content under a held
UID for photographs (tests/capture/test_scp_integrity.py); compressed OPTs from dcmtk's
storescu (tests/pipeline/test_oct_end_to_end.py).
"""

from __future__ import annotations

import copy
import io
import json
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE

from appliance.capture.decode import dataset_identity
from appliance.capture.scp import VERIFICATION
from appliance.config import Destination, Settings
from appliance.pipeline import due
from appliance.synth.oct import GEOMETRIES, OctCase, render_oct
from appliance.synth.oct.dicom import OPT_SOP_CLASS, OptHeader, encode_opt, opt_dataset
from tests.capture import dul_client as dul
from tests.conftest import free_port, wait_for
from tests.pipeline.test_documents_odd_headers import _dciodvfy_errors
from tests.pipeline.uid_archive import UidArchive

MEASURED = "OCT measured"
NOT_ANALYSED = "OCT received and stored; not analysed: "
# what a person must never be shown in place of a reason
NOT_PLAIN = ("Error", "Exception", "Traceback", "None mm", "object of type")


@cache
def _rendered() -> tuple[bytes, tuple[float, float, float]]:
    case = OctCase(
        seed=21, geometry=GEOMETRIES["small"], eye="R", thickening_um=0.0, cysts=0, srf_um=0.0,
        fluid_in_centre=False, drusen=0, defect=None, defect_strength=0.0,
    )  # fmt: skip
    rendered = render_oct(case)
    return rendered.volume.tobytes(), rendered.spacing_mm


@cache
def _baseline_cst() -> float:
    """The central subfield thickness (µm) of the undamaged volume, measured in-process."""
    from appliance.capture.pixels import Limits
    from appliance.pipeline.oct import analyse_oct

    buffer = io.BytesIO()
    _opt().save_as(buffer, enforce_file_format=True)
    finding = analyse_oct(buffer.getvalue(), Limits(), None).finding
    assert finding is not None and finding.cst_um is not None
    return finding.cst_um


def _volume() -> np.ndarray:
    data, _ = _rendered()
    return np.frombuffer(data, np.uint8).reshape(25, 256, 256).copy()


def _opt(header: OptHeader | None = None) -> Dataset:
    return opt_dataset(_volume(), _rendered()[1], "R", header)


def _measures(ds: Dataset) -> Dataset:
    return ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]


def _raw_ds(ds: Dataset, keyword: str, text: bytes) -> None:
    """Put a DS value on the wire exactly as ``text`` (pydicom would refuse to write it)."""
    tag = Tag(keyword)
    del ds[tag]
    ds[tag] = RawDataElement(tag, "DS", len(text), text, 0, False, True)  # type: ignore[assignment]


# -- the damage, one per case -------------------------------------------------------------
def frames(n: int) -> Callable[[Dataset], None]:
    def damage(ds: Dataset) -> None:
        ds.NumberOfFrames = n

    return damage


def zero_frames_over_one(ds: Dataset) -> None:
    ds.NumberOfFrames = 0
    ds.PixelData = _volume()[0].tobytes()


def rows(n: int) -> Callable[[Dataset], None]:
    def damage(ds: Dataset) -> None:
        ds.Rows = n

    return damage


def huge(ds: Dataset) -> None:
    ds.Rows = ds.Columns = 65535


def sixteen_bits(signed: bool) -> Callable[[Dataset], None]:
    def damage(ds: Dataset) -> None:
        volume = _volume().astype(np.int32) * 16
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.PixelRepresentation = 1 if signed else 0
        dtype = np.int16 if signed else np.uint16
        values = volume - 2048 if signed else volume
        ds.PixelData = np.ascontiguousarray(values.astype(dtype)).tobytes()

    return damage


def monochrome1(ds: Dataset) -> None:
    """White is 0: the same B-scans stored inverted."""
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.PixelData = (255 - _volume()).tobytes()


def palette(ds: Dataset) -> None:
    ds.PhotometricInterpretation = "PALETTE COLOR"


def colour(ds: Dataset) -> None:
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.PixelData = np.repeat(_volume()[..., None], 3, axis=3).tobytes()


def pixel_spacing(*text: bytes) -> Callable[[Dataset], None]:
    def damage(ds: Dataset) -> None:
        if not text:
            del _measures(ds).PixelSpacing
        else:
            _raw_ds(_measures(ds), "PixelSpacing", text[0])

    return damage


def no_frame_distance(ds: Dataset) -> None:
    _measures(ds).SliceThickness = 0
    del _measures(ds).SpacingBetweenSlices
    for item in ds.PerFrameFunctionalGroupsSequence:
        del item.PlanePositionSequence


def slice_thickness_zero(ds: Dataset) -> None:
    _measures(ds).SliceThickness = 0
    _measures(ds).SpacingBetweenSlices = 0  # the frames' Plane Positions still place them


def per_frame_measures_disagree(ds: Dataset) -> None:
    shared = ds.SharedFunctionalGroupsSequence[0]
    measures = shared.PixelMeasuresSequence[0]
    del shared.PixelMeasuresSequence
    for index, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        own = copy.deepcopy(measures)
        if index >= 12:  # the second half of the scan at another resolution
            own.PixelSpacing = [0.0039, 0.0117]
        item.PixelMeasuresSequence = Sequence([own])


def image_laterality(value: str | None) -> Callable[[Dataset], None]:
    def damage(ds: Dataset) -> None:
        if value is None:
            del ds.ImageLaterality
        else:
            ds.ImageLaterality = value

    return damage


def no_laterality_lower_case_frame(ds: Dataset) -> None:
    del ds.ImageLaterality
    ds.SharedFunctionalGroupsSequence[0].FrameAnatomySequence[0].FrameLaterality = "l"


def series_laterality(value: str, image: bool) -> Callable[[Dataset], None]:
    """The series' Laterality set; the image's own attributes kept, or removed."""

    def damage(ds: Dataset) -> None:
        ds.Laterality = value
        if not image:
            del ds.ImageLaterality
            del ds.SharedFunctionalGroupsSequence[0].FrameAnatomySequence[0].FrameLaterality

    return damage


def frame_laterality_mixed(keep_image: bool) -> Callable[[Dataset], None]:
    def damage(ds: Dataset) -> None:
        shared = ds.SharedFunctionalGroupsSequence[0]
        anatomy = shared.FrameAnatomySequence[0]
        del shared.FrameAnatomySequence
        for index, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
            own = copy.deepcopy(anatomy)
            own.FrameLaterality = "R" if index < 12 else "L"
            item.FrameAnatomySequence = Sequence([own])
        if not keep_image:
            del ds.ImageLaterality

    return damage


def odd_manufacturer(ds: Dataset) -> None:
    ds.Manufacturer = "Zeiß Médical 株式会社 " + "Ω" * 90  # non-ASCII and far over 64 characters
    ds.ManufacturerModelName = "\u202eMODEL\u202c\x1b[31m"  # bidi override and an escape


def charset(value: str) -> Callable[[Dataset], None]:
    def damage(ds: Dataset) -> None:
        ds.SpecificCharacterSet = value

    return damage


def latin1_says_utf8(ds: Dataset) -> None:
    """Specific Character Set says UTF-8 but the names are Latin-1 bytes (a lying camera)."""
    ds.SpecificCharacterSet = "ISO_IR 192"
    for keyword, value in (("PatientName", "Müller^Zoë"), ("Manufacturer", "Hôpital OCT")):
        tag = Tag(keyword)
        vr = "PN" if keyword == "PatientName" else "LO"
        del ds[tag]
        raw = value.encode("latin-1")
        ds[tag] = RawDataElement(tag, vr, len(raw), raw, 0, False, True)  # type: ignore[assignment]


# -- what each case must end in -------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    id: str
    damage: Callable[[Dataset], None]
    status: int  # what the camera hears
    says: str = ""  # refused: the audited reason; stored: the start of the record's message
    problem: str = ""  # stored, not analysed: words the message must hold
    eye: str | None = None  # measured: the eye
    encoding: str = "uncompressed"


CASES = [
    # refused at the door: the camera hears 0xC000 with a comment, nothing is stored
    Case("frames-more-than-pixels", frames(30), 0xC000, "pixel_length_mismatch"),
    Case("frames-fewer-than-pixels", frames(20), 0xC000, "pixel_length_mismatch"),
    Case("frames-zero-over-a-volume", frames(0), 0xC000, "pixel_length_mismatch"),
    Case("rows-zero", rows(0), 0xC000, "bad_pixel_module"),
    Case("rows-and-columns-huge", huge, 0xC000, "image_too_large"),
    Case("jpegls-frames-more-than-fragments", frames(30), 0xC000, "undecodable_pixels",
         encoding="jpegls"),
    Case("jpegls-frames-fewer-than-fragments", frames(20), 0xC000, "undecodable_pixels",
         encoding="jpegls"),
    # stored, forwarded, measured
    Case("sixteen-bits-twelve-stored", sixteen_bits(False), 0x0000, MEASURED, eye="R"),
    Case("sixteen-bits-signed", sixteen_bits(True), 0x0000, MEASURED, eye="R"),
    Case("monochrome1-inverted", monochrome1, 0x0000, MEASURED, eye="R"),
    Case("slice-thickness-zero-positions-kept", slice_thickness_zero, 0x0000, MEASURED, eye="R"),
    Case("image-laterality-missing", image_laterality(None), 0x0000, MEASURED, eye="R"),
    Case("image-laterality-lower-case", image_laterality("r"), 0x0000, MEASURED, eye="R"),
    Case("frame-laterality-lower-case-only", no_laterality_lower_case_frame, 0x0000, MEASURED,
         eye="L"),
    Case("series-laterality-b-image-says-r", series_laterality("B", True), 0x0000, MEASURED,
         eye="R"),
    Case("series-laterality-only", series_laterality("L", False), 0x0000, MEASURED, eye="L"),
    Case("manufacturer-non-ascii-long", odd_manufacturer, 0x0000, MEASURED, eye="R"),
    Case("charset-unknown", charset("ISO_IR 999"), 0x0000, MEASURED, eye="R"),
    Case("charset-iso-2022", charset("ISO 2022 IR 6\\ISO 2022 IR 87"), 0x0000, MEASURED,
         eye="R"),
    Case("charset-lies", latin1_says_utf8, 0x0000, MEASURED, eye="R"),
    # stored, forwarded, not measured, and why in plain words
    Case("zero-frames-over-one-frame", zero_frames_over_one, 0x0000, NOT_ANALYSED,
         "too small to measure"),
    Case("colour-b-scans", colour, 0x0000, NOT_ANALYSED, "3 samples per pixel"),
    Case("palette-colour", palette, 0x0000, NOT_ANALYSED, "PALETTE COLOR, not greyscale"),
    Case("pixel-spacing-missing", pixel_spacing(), 0x0000, NOT_ANALYSED, "no Pixel Spacing"),
    Case("pixel-spacing-zero", pixel_spacing(b"0\\0"), 0x0000, NOT_ANALYSED,
         "axial pixel size (0.0 mm) is outside"),
    Case("pixel-spacing-negative", pixel_spacing(b"-0.0075\\-0.0235"), 0x0000, NOT_ANALYSED,
         "axial pixel size (-0.0075 mm) is outside"),
    Case("pixel-spacing-nan", pixel_spacing(b"NaN\\NaN"), 0x0000, NOT_ANALYSED,
         "Pixel Spacing is not two numbers"),
    Case("pixel-spacing-text", pixel_spacing(b"abc\\abc "), 0x0000, NOT_ANALYSED,
         "Pixel Spacing is not two numbers"),
    Case("pixel-spacing-one-value", pixel_spacing(b"0.0075"), 0x0000, NOT_ANALYSED,
         "Pixel Spacing is not two numbers"),
    Case("slice-thickness-zero-nothing-else", no_frame_distance, 0x0000, NOT_ANALYSED,
         "no distance between B-scans"),
    Case("per-frame-pixel-measures-disagree", per_frame_measures_disagree, 0x0000,
         NOT_ANALYSED, "B-scans do not all have the same Pixel Spacing"),
    Case("image-laterality-both", image_laterality("B"), 0x0000, NOT_ANALYSED,
         "names both eyes"),
    Case("frame-laterality-mixed", frame_laterality_mixed(True), 0x0000, NOT_ANALYSED,
         "names both eyes"),
    Case("frame-laterality-mixed-no-image-laterality", frame_laterality_mixed(False), 0x0000,
         NOT_ANALYSED, "names both eyes"),
]  # fmt: skip


@pytest.fixture
def archive() -> Iterator[UidArchive]:
    server = UidArchive(free_port()).start()
    yield server
    server.stop()


@pytest.fixture
def settings(settings: Settings, archive: UidArchive) -> Settings:
    return settings.replace(
        destinations=(Destination("pacs", "127.0.0.1", archive.port, "ARCHIVE", timeout=5),),
        outbox_backoff_seconds=0.05,
        outbox_backoff_cap_seconds=0.2,
        documents_quiet_seconds=0.5,  # the volume's visit gets its SR and PDF
    )


def _send(settings: Settings, ds: Dataset) -> Dataset:
    ae = AE(ae_title="OCTCAM")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(OPT_SOP_CLASS, str(ds.file_meta.TransferSyntaxUID))
    assoc = ae.associate("127.0.0.1", settings.dicom_port, ae_title=settings.dicom_ae_title)
    assert assoc.is_established
    try:
        answer = assoc.send_c_store(ds)
    finally:
        assoc.release()
    assert "Status" in answer, "no C-STORE response"
    return answer


def _send_as_encoded(settings: Settings, data: bytes) -> Dataset:
    """One C-STORE of a Part 10 file's dataset, byte for byte as the camera encoded it (a
    pynetdicom SCU would re-encode it, and refuses some of these odd values)."""
    fp = io.BytesIO(data)
    read_preamble(fp, False)
    meta = _read_file_meta_info(fp)
    sock = dul.associate(
        settings.dicom_port, "OCTCAM", settings.dicom_ae_title, OPT_SOP_CLASS,
        transfer_syntax=str(meta.TransferSyntaxUID),
    )  # fmt: skip
    try:
        uid = str(meta.MediaStorageSOPInstanceUID)
        return dul.c_store(sock, OPT_SOP_CLASS, uid, data[fp.tell() :])
    finally:
        sock.close()


def _echo(settings: Settings) -> int:
    ae = AE(ae_title="CHECK")
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate("127.0.0.1", settings.dicom_port, ae_title=settings.dicom_ae_title)
    assert assoc.is_established
    try:
        return int(assoc.send_c_echo().Status)
    finally:
        assoc.release()


def _encoded(case: Case) -> bytes:
    """The case's object as the camera encodes it (pydicom's warnings about the values the
    case breaks on purpose are not the test's subject)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _damaged(case)


def _damaged(case: Case) -> bytes:
    ds = _opt()
    if case.encoding == "uncompressed":
        case.damage(ds)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
    else:  # damage the encoded object (its header; the codestreams as the camera made them)
        encoded = pydicom.dcmread(io.BytesIO(encode_opt(ds, case.encoding)))
        case.damage(encoded)
        buffer = io.BytesIO()
        encoded.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _uid_and_pixels(data: bytes) -> tuple[str, bytes]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(data))
        return str(ds.SOPInstanceUID), bytes(ds.PixelData)


def _refused_event(services: Any, uid: str) -> dict[str, Any]:
    rows = services.store.query(
        "SELECT outcome, detail, sop_instance_uids FROM audit_events "
        "WHERE json_extract(detail, '$.refused') IS NOT NULL ORDER BY seq DESC"
    )
    assert rows, "no audit event for the refusal"
    return {**json.loads(rows[0]["detail"]), "outcome": rows[0]["outcome"]}


def _settled(services: Any, uid: str) -> dict[str, Any]:
    """The capture once the worker has finished with it (its result and its outbox job)."""
    return wait_for(
        lambda: services.store.one(
            "SELECT c.id, c.status, c.status_reason, c.file_path, r.payload FROM captures c "
            "JOIN results r ON r.capture_pk = c.id WHERE c.sop_instance_uid = ?",
            (uid,),
        ),
        timeout=90,
    )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_an_odd_opt_header_gets_the_right_answer_and_loses_nothing(
    settings: Settings, services: Any, archive: UidArchive, case: Case
) -> None:
    data = _encoded(case)
    uid, pixels = _uid_and_pixels(data)
    answer = _send_as_encoded(settings, data)
    assert int(answer.Status) == case.status, answer
    if case.status != 0x0000:
        comment = str(answer.get("ErrorComment", ""))
        assert comment and not any(word in comment for word in NOT_PLAIN), comment
        event = _refused_event(services, uid)
        assert event["refused"] == case.says and event["source"] == "dicom"
        assert services.store.query("SELECT id FROM captures") == []  # nothing stored
        assert _echo(settings) == 0x0000  # and the door still answers
        return
    row = _settled(services, uid)
    record = json.loads(row["payload"])
    assert row["status"] == "processed", row["status_reason"]
    message = str(record["message"])
    assert message.startswith(case.says), message
    assert case.problem in message and not any(word in message for word in NOT_PLAIN), message
    finding = (record.get("oct") or {}).get("finding")
    if case.eye is not None:  # the same B-scans however encoded: the same thickness
        assert record["status"] == "measured" and finding["laterality"] == case.eye
        assert finding["cst_um"] == pytest.approx(_baseline_cst(), abs=1.0)
    else:
        assert record["status"] == "not_analysed" and finding is None
    # forwarded as received: the archive holds the camera's bytes, once
    wait_for(lambda: uid in archive.uids(), timeout=30)
    stored = services.blobs.read(row["file_path"])
    assert dataset_identity(stored) == dataset_identity(data)  # kept as received
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert bytes(archive.stored[uid].PixelData) == pixels
    assert archive.deliveries[uid] == 1
    # and what was made from it: its thickness map when measured, the visit's SR and PDF (for
    # a volume not measured, the SR with a "not analysed" group, and the PDF)
    kinds = {"opm", "sr", "pdf"} if case.eye is not None else {"sr", "pdf"}
    made = wait_for(lambda: _made(services, kinds), timeout=60)
    wait_for(lambda: set(made) <= archive.uids(), timeout=30)
    if case.eye is not None:
        assert due.counts(services.store)["dead"] == 0
    assert services.pipeline.pending() == 0 and _echo(settings) == 0x0000
    assert services.audit.verify().ok


def _made(services: Any, kinds: set[str]) -> dict[str, str] | None:
    """The derived objects' UIDs and kinds once every kind in ``kinds`` is among them."""
    rows = services.store.query("SELECT kind, sop_instance_uid FROM derived_objects")
    made = {r["sop_instance_uid"]: r["kind"] for r in rows}
    return made if set(made.values()) >= kinds else None


def test_a_truncated_opt_dataset_is_refused_and_audited(settings: Settings, services: Any) -> None:
    ds = _opt()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    whole = buffer.getvalue()
    body = whole[whole.index(b"\x08\x00\x16\x00") :]  # the dataset after the File Meta
    uid = str(ds.SOPInstanceUID)
    sock = dul.associate(
        settings.dicom_port, "OCTCAM", settings.dicom_ae_title, OPT_SOP_CLASS,
        transfer_syntax=ExplicitVRLittleEndian,
    )  # fmt: skip
    try:
        answer = dul.c_store(sock, OPT_SOP_CLASS, uid, body[: len(body) * 2 // 3])
    finally:
        sock.close()
    assert int(answer.Status) == 0xC000 and "truncated" in str(answer.ErrorComment)
    assert _refused_event(services, uid)["refused"] == "truncated"
    assert services.store.query("SELECT id FROM captures") == []
    assert _echo(settings) == 0x0000


def test_one_undecodable_frame_in_an_encapsulated_volume_is_refused(
    settings: Settings, services: Any
) -> None:
    encoded = pydicom.dcmread(io.BytesIO(encode_opt(_opt(), "jpegls")))
    fragments = list(generate_frames(encoded.PixelData, number_of_frames=25))
    fragments[7] = fragments[7][:40] + bytes(len(fragments[7]) - 40)  # frame 8's scan zeroed
    encoded.PixelData = encapsulate(fragments)
    answer = _send(settings, encoded)
    assert int(answer.Status) == 0xC000 and "cannot be decoded" in str(answer.ErrorComment)
    assert _refused_event(services, str(encoded.SOPInstanceUID))["refused"] == "undecodable_pixels"
    assert services.store.query("SELECT id FROM captures") == []
    assert _echo(settings) == 0x0000


def test_a_held_opt_uid_with_other_content_is_refused_and_the_first_copy_stays(
    settings: Settings, services: Any, archive: UidArchive
) -> None:
    first = pydicom.dcmread(io.BytesIO(_encoded(Case("first", lambda ds: None, 0))))
    uid = str(first.SOPInstanceUID)
    assert int(_send(settings, first).Status) == 0x0000
    row = _settled(services, uid)
    other = copy.deepcopy(first)
    pixels = bytearray(other.PixelData)
    pixels[:4096] = bytes(4096)
    other.PixelData = bytes(pixels)
    answer = _send(settings, other)
    assert int(answer.Status) == 0xC000
    event = _refused_event(services, uid)
    assert event["refused"] == "uid_conflict" and event["outcome"] == 8  # serious failure
    assert [r["id"] for r in services.store.query("SELECT id FROM captures")] == [row["id"]]
    stored = pydicom.dcmread(services.blobs.resolve(row["file_path"]))
    assert bytes(stored.PixelData) == bytes(first.PixelData)
    assert len(services.store.query("SELECT id FROM results")) == 1  # analysed once
    wait_for(lambda: uid in archive.uids(), timeout=30)
    assert bytes(archive.stored[uid].PixelData) == bytes(first.PixelData)
    assert archive.deliveries[uid] == 1


def test_the_sr_of_a_visit_with_nothing_measured(settings: Settings) -> None:
    """A visit whose only image is an OPT that could not be measured still gets its SR: one
    "not analysed" group with the OPT as source (highdicom refuses an SR without a group)."""
    import time

    from appliance.capture import Incoming
    from appliance.domain import Source
    from appliance.runtime.services import Services

    services = Services(settings.replace(destinations=()))
    services.start(dicom=False, hotfolder=False, worker=False)
    try:
        data = _encoded(Case("no-spacing", pixel_spacing(), 0))
        incoming = Incoming(data=data, source=Source.DICOM, user_id="ae:OCT", calling_ae="OCT")
        services.ingestor.ingest(incoming)
        services.pipeline.drain()
        services.pipeline.quiet_seconds = 60.0
        for day in range(1, 5):  # the quiet sweep, then every retry of what failed
            services.pipeline.issue_quiet_visits(now=time.time() + day * 86400)
        assert due.counts(services.store) == {"due": 0, "dead": 0}
        assert _made(services, {"sr", "pdf"}) is not None
        [row] = services.store.query("SELECT file_path FROM derived_objects WHERE kind = 'sr'")
        path = services.blobs.resolve(row["file_path"])
        assert _dciodvfy_errors(path) == []
        sr = pydicom.dcmread(path)
        opt_uid = str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID)
        groups = [
            item for item in sr.ContentSequence
            if item.ValueType == "CONTAINER" and "ContentSequence" in item
            and item.ConceptNameCodeSequence[0].CodeValue == "126010"  # Imaging Measurements
        ]  # fmt: skip
        [group] = [g for item in groups for g in item.ContentSequence if g.ValueType == "CONTAINER"]
        said = {
            (i.ConceptNameCodeSequence[0].CodeValue, i.ConceptCodeSequence[0].CodeValue)
            for i in group.ContentSequence if i.ValueType == "CODE"
        }  # fmt: skip
        assert ("RS004", "RS025") in said  # gradability: not analysed
        sources = [
            i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
            for i in group.ContentSequence if i.ValueType == "IMAGE"
        ]  # fmt: skip
        assert sources == [opt_uid]
    finally:
        services.stop()


DCMTK_CASES = {c.id: c for c in CASES}


@pytest.mark.parametrize(
    "name", ["frames-more-than-pixels", "pixel-spacing-one-value", "sixteen-bits-signed"]
)
def test_dcmtk_storescu_as_the_camera_hears_the_same(
    settings: Settings, services: Any, archive: UidArchive, tmp_path: Any, name: str
) -> None:
    """dcmtk's storescu, an independent camera, sends the file: the same status, and a stored
    volume is analysed as with pynetdicom."""
    import subprocess

    from tests.conftest import require_tool

    storescu = require_tool("storescu")
    case = DCMTK_CASES[name]
    path = tmp_path / f"{name}.dcm"
    path.write_bytes(_encoded(case))
    uid, _ = _uid_and_pixels(path.read_bytes())
    sent = subprocess.run(
        [storescu, "-v", "-aet", "OCTCAM", "-aec", settings.dicom_ae_title,
         "127.0.0.1", str(settings.dicom_port), str(path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    said = sent.stdout + sent.stderr
    if case.status == 0x0000:
        assert sent.returncode == 0 and "(Success)" in said, said
        record = json.loads(_settled(services, uid)["payload"])
        assert record["status"] == ("measured" if case.eye else "not_analysed")
        assert case.problem in record["message"]
        wait_for(lambda: uid in archive.uids(), timeout=30)
    else:
        assert "Error: CannotUnderstand" in said, said
        assert _refused_event(services, uid)["refused"] == case.says
        assert services.store.query("SELECT id FROM captures") == []
    assert _echo(settings) == 0x0000
