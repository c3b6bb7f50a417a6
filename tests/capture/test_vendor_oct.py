"""Heidelberg .vol exports dropped in the hot folder: converted to an OPT object, stored,
measured, due to be forwarded; odd files refused with a reason, audited, nothing lost.

The .vol files are written by oct-vol (Charité's reader/writer, independent of eyepy, which the
appliance reads them with) from synthetic volumes with known thickness (appliance.synth.oct).
Heidelberg stores float intensities; the synthetic 8-bit volume is written on Heyex's log
display scale (the inverse of the mapping the appliance reads with), so the volume the
appliance measures is the generator's volume, and its CST the generator's truth.

Heidelberg .e2e is not tested: no independent .e2e writer exists, and the appliance refuses
.e2e files with a plain reason.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import io
import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from OCTVol import OCTVol

from appliance.capture.decode import OPT_SOP_CLASS
from appliance.capture.oct import read_oct
from appliance.capture.opt_write import VALIDATOR_CONFLICTS
from appliance.capture.pixels import Limits
from appliance.capture.vendor_oct import opt_bytes, opt_header, read_header, read_vol
from appliance.config import Settings
from appliance.destinations import Destination
from appliance.domain import PatientInfo
from appliance.errors import RejectedInput, TooLarge
from appliance.runtime.services import Services
from appliance.synth.oct import GEOMETRIES, OctRendering, healthy_case, render_oct
from appliance.visits import ImageRecord
from tests.capture.test_hotfolder import find, image, refusals
from tests.conftest import free_port, require_tool, wait_for

SOON = 5.0
CST_TOLERANCE_UM = 10.0  # as tests/inference/test_oct_measure.py for a healthy small volume
SPECTRALIS_THRESHOLD_UM = 305.0  # appliance/outcome/rules/default.toml [[oct.device]]
PATIENT = "VOL-PAT-1"
_CASE = healthy_case(11, GEOMETRIES["small"])
DOB_DAYS = (datetime.date(1960, 1, 1) - datetime.date(1899, 12, 30)).days


@pytest.fixture(scope="module")
def rendered() -> OctRendering:
    return render_oct(_CASE)


def heyex_float(volume: np.ndarray) -> np.ndarray:
    """8-bit display values back to Heidelberg's stored float intensities (log scale)."""
    x = volume.astype(np.float64) / 255.0
    return (np.exp(x * 8.285 - 8.3) - 2.44e-4).astype(np.float32)


def write_vol(
    path: Path,
    volume: np.ndarray,
    spacing_mm: tuple[float, float, float],
    eye: str,
    patient_id: str = PATIENT,
    bottom_first: bool = False,
    **header: Any,
) -> Path:
    """A Spectralis volume scan written by oct-vol (``header`` overrides header fields)."""
    frames, rows, width = volume.shape
    bscan_header = 61440
    vol = OCTVol.__new__(OCTVol)  # oct-vol builds its object from a file; fill it instead
    exam = datetime.datetime(2026, 12, 1, 9, 30) - datetime.datetime(1601, 1, 1)
    vol.header = {
        "version": "HSF-OCT-103", "size_x": np.int32(width), "num_b_scans": np.int32(frames),
        "size_z": np.int32(rows), "scale_x": np.float64(spacing_mm[2]),
        "distance": np.float64(spacing_mm[0]), "scale_z": np.float64(spacing_mm[1]),
        "size_x_slo": np.int32(32), "size_y_slo": np.int32(32),
        "scale_x_slo": np.float64(0.0114), "scale_y_slo": np.float64(0.0114),
        "field_size_slo": np.int32(30), "scan_focus": np.float64(0.0),
        "scan_position": {"R": "OD", "L": "OS"}[eye],
        "unconverted_exam_time": np.uint64(int(exam.total_seconds()) * 10_000_000),
        "scan_pattern": np.int32(3), "b_scan_hdr_size": np.int32(bscan_header), "id": "4711",
        "reference_id": "", "pid": np.int32(77), "patient_id": patient_id,
        "padding": np.zeros(3, np.int8),
        "unconverted_dob": np.float64(DOB_DAYS),
        "vid": np.int32(5), "visit_id": "", "unconverted_visit_date": np.float64(0),
        "grid_type": np.int32(0), "grid_offset": np.int32(0), "spare": np.zeros(1832, np.int8),
        **header,
    }  # fmt: skip
    vol.slo = np.zeros((32, 32), np.uint8)
    y = np.arange(frames, dtype=np.float64) * spacing_mm[0]  # localiser y: top B-scan first
    y = y[::-1].copy() if bottom_first else y
    vol.b_scan_header = {
        "version": np.array([list("HSF-BS-103\0\0")] * frames).T,
        "b_scan_hdr_size": np.full(frames, bscan_header, np.int32),
        "start_x": np.zeros(frames), "start_y": y,
        "end_x": np.full(frames, (width - 1) * spacing_mm[2]), "end_y": y.copy(),
        "num_seg": np.zeros(frames, np.int32), "off_seg": np.full(frames, 256, np.int32),
        "quality": np.full(frames, 30.0, np.float32), "shift": np.zeros(frames, np.int32),
        "spare": np.zeros((192, frames), np.int8),
    }  # fmt: skip
    vol.b_scans = np.transpose(heyex_float(volume), (1, 2, 0))  # oct-vol: (rows, width, frames)
    vol.thickness_grid = {}
    vol.write_vol(str(path))
    return path


def _record(services: Services, capture_id: int) -> ImageRecord:
    row = wait_for(
        lambda: services.store.one(
            "SELECT payload FROM results WHERE capture_pk = ? AND kind = 'screening'",
            (capture_id,),
        ),
        timeout=60,
    )
    return ImageRecord.parse(row["payload"])


def test_a_vol_export_is_stored_measured_and_due_to_be_forwarded(
    settings: Settings, tmp_path: Path, rendered: OctRendering
) -> None:
    archive = Destination("pacs", "127.0.0.1", free_port(), "NOBODY", timeout=2)
    services = Services(settings.replace(destinations=(archive,)))
    services.start(dicom=False)
    try:
        inbox = services.settings.inbox_path
        source = write_vol(tmp_path / "scan.vol", rendered.volume, rendered.spacing_mm, "R")
        original = source.read_bytes()
        (inbox / "Spectralis_0001.vol").write_bytes(original)

        row = wait_for(lambda: services.store.one("SELECT * FROM captures"), SOON)
        assert row["source"] == "hotfolder" and row["sop_class_uid"] == OPT_SOP_CLASS
        assert row["media_type"] == "application/dicom" and row["laterality"] == "R"
        patient = services.store.one("SELECT * FROM patients WHERE id = ?", (row["patient_pk"],))
        assert patient["patient_id"] == PATIENT and patient["birth_date"] == "19600101"

        moved = wait_for(lambda: find(inbox / "processed", "Spectralis_0001.vol"), SOON)
        assert moved.read_bytes() == original  # the export itself, kept as it came
        arrival = next(
            json.loads(e["detail"])
            for e in services.audit.rows()
            if json.loads(e["detail"]).get("capture_id") == row["id"]
        )
        assert arrival["converted_from"] == "heidelberg_vol"
        assert arrival["original_sha256"] == hashlib.sha256(original).hexdigest()
        assert arrival["original_bytes"] == len(original)

        record = _record(services, row["id"])
        assert record.data["status"] == "measured" and record.gradable is True
        scan = record.oct
        assert scan is not None and scan.finding is not None
        assert scan.shape == rendered.volume.shape
        assert scan.spacing_mm == pytest.approx(rendered.spacing_mm, abs=1e-6)  # DS: 6 decimals
        assert scan.finding["device"] == "Heidelberg Engineering Spectralis"
        assert scan.finding["cst_um"] == pytest.approx(_CASE.cst_um, abs=CST_TOLERANCE_UM)

        outcome = wait_for(lambda: services.store.one("SELECT payload FROM visit_outcomes"))
        right = next(e for e in json.loads(outcome["payload"])["eyes"] if e["eye"] == "R")
        assert right["oct_capture_ids"] == [row["id"]]
        assert right["cst_threshold_um"] == SPECTRALIS_THRESHOLD_UM  # the device's own
        job = wait_for(
            lambda: services.store.one(
                "SELECT kind, sop_instance_uid FROM outbox_jobs WHERE file_path = ?",
                (row["file_path"],),
            )
        )
        assert job["kind"] == "received" and job["sop_instance_uid"] == row["sop_instance_uid"]
        assert services.audit.verify().ok
    finally:
        services.stop()


def test_the_sidecar_names_the_patient_and_a_different_id_is_refused(
    services: Services, tmp_path: Path, rendered: OctRendering
) -> None:
    inbox = services.settings.inbox_path
    small = rendered.volume[:5]  # enough to be read; the measurement is the first test's
    sidecar = {"patient_id": PATIENT, "patient_name": "Roe^Ann", "sex": "F"}
    (inbox / "named.json").write_text(json.dumps(sidecar), encoding="utf-8")
    write_vol(inbox / "named.vol", small, rendered.spacing_mm, "L")
    row = wait_for(lambda: services.store.one("SELECT * FROM captures"), SOON)
    patient = services.store.one("SELECT * FROM patients WHERE id = ?", (row["patient_pk"],))
    assert (patient["patient_id"], patient["patient_name"]) == (PATIENT, "Roe^Ann")
    assert row["laterality"] == "L"
    assert wait_for(lambda: find(inbox / "processed", "named.json"), SOON)

    other = {"patient_id": "SOMEONE-ELSE"}
    (inbox / "other.json").write_text(json.dumps(other), encoding="utf-8")
    write_vol(inbox / "other.vol", small[::-1].copy(), rendered.spacing_mm, "L")
    note = wait_for(lambda: find(inbox / "rejected", "other.vol.reason.txt"), SOON)
    assert note.read_text().startswith("identity_conflict: the export names another Patient ID")
    assert services.store.scalar("SELECT COUNT(*) FROM captures") == 1


def test_the_same_export_again_is_already_received_and_under_another_patient_refused(
    services: Services, tmp_path: Path, rendered: OctRendering
) -> None:
    inbox = services.settings.inbox_path
    data = write_vol(tmp_path / "a.vol", rendered.volume[:5], rendered.spacing_mm, "R",
                     patient_id="").read_bytes()  # fmt: skip
    for stem, patient in (("first", "P-A"), ("again", "P-A"), ("other", "P-B")):
        (inbox / f"{stem}.json").write_text(json.dumps({"patient_id": patient}), "utf-8")
        (inbox / f"{stem}.vol").write_bytes(data)
        folder = "rejected" if stem == "other" else "processed"
        assert wait_for(lambda stem=stem, folder=folder: find(inbox / folder, f"{stem}.vol"), SOON)
    rows = services.store.query("SELECT c.id, p.patient_id FROM captures c JOIN patients p "
                                "ON p.id = c.patient_pk")  # fmt: skip
    assert [r["patient_id"] for r in rows] == ["P-A"]  # one OPT, its first patient
    again = [json.loads(e["detail"]) for e in services.audit.rows()]
    assert any(d.get("duplicate") and d.get("capture_id") == rows[0]["id"] for d in again)
    note = find(inbox / "rejected", "other.vol.reason.txt")
    assert note is not None and note.read_text().startswith("uid_conflict:")


def test_both_eyes_exports_of_one_exam_are_one_visit(
    services: Services, tmp_path: Path, rendered: OctRendering
) -> None:
    """Without a sidecar or station selection the study is the patient's exam day: the right
    and left eyes' exports of one exam share it (one visit, one outcome for both eyes); another
    patient's export of the same day has its own."""
    inbox = services.settings.inbox_path
    small = rendered.volume[:5]
    write_vol(inbox / "od.vol", small, rendered.spacing_mm, "R")
    write_vol(inbox / "os.vol", small[::-1].copy(), rendered.spacing_mm, "L")
    write_vol(inbox / "else.vol", small, rendered.spacing_mm, "R", patient_id="VOL-PAT-2")
    for name in ("od.vol", "os.vol", "else.vol"):
        assert wait_for(lambda name=name: find(inbox / "processed", name), SOON)
    rows = services.store.query(
        "SELECT c.laterality, p.patient_id, s.study_instance_uid FROM captures c "
        "JOIN patients p ON p.id = c.patient_pk JOIN studies s ON s.id = c.study_pk"
    )
    study = {(r["patient_id"], r["laterality"]): r["study_instance_uid"] for r in rows}
    assert sorted(study) == [(PATIENT, "L"), (PATIENT, "R"), ("VOL-PAT-2", "R")]
    assert study[(PATIENT, "R")] == study[(PATIENT, "L")]
    assert study[("VOL-PAT-2", "R")] != study[(PATIENT, "R")]


def test_a_sidecar_study_of_another_patient_is_refused(
    services: Services, tmp_path: Path, rendered: OctRendering
) -> None:
    """A sidecar that gives only a study (here one held by another patient) must not file the
    export's own patient into it: a sidecar naming a study names its patient too."""
    inbox = services.settings.inbox_path
    small = rendered.volume[:5]
    write_vol(inbox / "first.vol", small, rendered.spacing_mm, "R", patient_id="OWNER-1")
    assert wait_for(lambda: find(inbox / "processed", "first.vol"), SOON)
    held = services.store.scalar("SELECT study_instance_uid FROM studies")
    (inbox / "intruder.json").write_text(json.dumps({"study_instance_uid": held}), "utf-8")
    write_vol(inbox / "intruder.vol", small[::-1].copy(), rendered.spacing_mm, "L")
    note = wait_for(lambda: find(inbox / "rejected", "intruder.vol.reason.txt"), SOON)
    assert note.read_text().startswith("bad_sidecar: patient_id is required")
    assert services.store.scalar("SELECT COUNT(*) FROM captures") == 1


def _header_bytes(good: bytes, **fields: Any) -> bytes:
    """``good`` with header fields overwritten at their .vol offsets."""
    offsets = {
        "size_x": (12, "<I"), "frames": (16, "<I"), "size_z": (20, "<I"), "scale_x": (24, "<d"),
        "distance": (32, "<d"), "scan_pattern": (96, "<i"),
    }  # fmt: skip
    data = bytearray(good)
    for name, value in fields.items():
        offset, fmt = offsets[name]
        struct.pack_into(fmt, data, offset, value)
    return bytes(data)


def _bscan_header_size(good: bytes, value: int) -> bytes:
    """``good`` with its first B-scan's own header size changed (after the 32x32 localiser)."""
    data = bytearray(good)
    struct.pack_into("<I", data, 2048 + 32 * 32 + 12, value)
    return bytes(data)


def test_odd_files_are_refused_with_a_reason_and_audited(
    services: Services, tmp_path: Path, rendered: OctRendering
) -> None:
    inbox = services.settings.inbox_path
    good = write_vol(tmp_path / "good.vol", rendered.volume[:4], rendered.spacing_mm, "R")
    data = good.read_bytes()
    frames = rendered.volume[:4].shape[0]
    odd = {
        "truncated.vol": (data[: len(data) - 5000], "vol_size_mismatch"),
        "more_frames.vol": (_header_bytes(data, frames=frames + 3), "vol_size_mismatch"),
        "fewer_frames.vol": (_header_bytes(data, frames=frames - 1), "vol_size_mismatch"),
        "zero.vol": (_header_bytes(data, size_x=0), "bad_vol_header"),
        "huge.vol": (_header_bytes(data, frames=100_000), "too_many_frames"),
        "wide.vol": (_header_bytes(data, size_x=200_000, size_z=200_000), "image_too_large"),
        "flat.vol": (_header_bytes(data, distance=0.0), "bad_vol_geometry"),
        "nan.vol": (_header_bytes(data, scale_x=float("nan")), "bad_vol_geometry"),
        "circle.vol": (_header_bytes(data, scan_pattern=2), "not_a_volume"),
        "bscan.vol": (_bscan_header_size(data, 9999), "bad_vol_bscan"),
        "magic.vol": (b"HSF-XYZ-103" + data[11:], "unsupported_format"),
        "photo.vol": (image(seed=5), "unsupported_format"),
        "scan.e2e": (b"CMDb" + b"\0" * 4000, "unsupported_format"),
    }
    for name, (content, _) in odd.items():
        (inbox / name).write_bytes(content)
    for name, (content, reason) in odd.items():
        note = wait_for(lambda name=name: find(inbox / "rejected", name + ".reason.txt"), SOON)
        assert note.read_text().split(":", 1)[0] == reason, name
        kept = find(inbox / "rejected", name)
        assert kept is not None and kept.read_bytes() == content  # nothing lost
    said = [r["detail"] for r in refusals(services)]
    assert sorted(d["refused"] for d in said) == sorted(reason for _, reason in odd.values())
    assert sum(d.get("format") == "heidelberg_vol" for d in said) == len(odd) - 1  # not .e2e
    assert services.store.scalar("SELECT COUNT(*) FROM captures") == 0
    # the folder still works: a photograph and a good export are taken afterwards
    (inbox / "after.jpg").write_bytes(image(seed=6))
    (inbox / "after.vol").write_bytes(data)
    assert wait_for(lambda: find(inbox / "processed", "after.vol"), SOON)
    assert wait_for(lambda: find(inbox / "processed", "after.jpg"), SOON)
    assert services.store.scalar("SELECT COUNT(*) FROM captures") == 2
    assert services.audit.verify().ok


def test_the_header_is_refused_before_anything_is_read(tmp_path: Path) -> None:
    volume = np.full((4, 80, 80), 40, np.uint8)
    data = write_vol(tmp_path / "a.vol", volume, (0.25, 0.0039, 0.011), "R").read_bytes()
    header = read_header(data[:2048], len(data), Limits())
    assert (header.frames, header.size_z, header.size_x, header.eye) == (4, 80, 80, "R")
    assert header.spacing_mm == (0.25, 0.0039, 0.011) and header.patient_id == PATIENT
    assert header.acquired == datetime.datetime(2026, 12, 1, 9, 30)
    with pytest.raises(TooLarge) as too_large:  # 4 x 80 x 80 over a 20 000-byte budget
        read_header(
            data[:2048], len(data), dataclasses.replace(Limits(), max_inflated_bytes=20_000)
        )
    assert too_large.value.reason == "volume_too_large"
    with pytest.raises(RejectedInput) as lying:  # one byte more than the header describes
        read_header(data[:2048], len(data) + 64 * 1024 + 1, Limits())
    assert lying.value.reason == "vol_size_mismatch"
    assert "the file holds" in lying.value.message


def test_the_opt_made_of_an_export_is_what_eyepy_reads_and_dciodvfy_accepts(
    tmp_path: Path, rendered: OctRendering
) -> None:
    from eyepy.io.he.vol_reader import HeVolReader

    dciodvfy = require_tool("dciodvfy")
    volume = rendered.volume[:8]
    path = write_vol(tmp_path / "a.vol", volume, rendered.spacing_mm, "L", bottom_first=True)
    scan = read_vol(path, Limits(), 1 << 30)
    whole = HeVolReader(path).volume.data  # eyepy's own reader, the whole file at once
    assert np.array_equal(scan.volume[::-1], whole)  # read one B-scan at a time, same values
    assert np.array_equal(scan.volume, volume[::-1])  # the lowest B-scan came first: turned
    assert scan.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    patient = PatientInfo(patient_id=PATIENT, patient_name="Roe^Ann", sex="F")
    data = opt_bytes(scan, opt_header(scan, patient, ("1.2.826.0.1.3680043.8.498.7", "")), None)
    ds = pydicom.dcmread(io.BytesIO(data))
    assert (ds.PatientID, ds.PatientName, ds.PatientBirthDate) == (PATIENT, "Roe^Ann", "19600101")
    assert ds.StudyInstanceUID == "1.2.826.0.1.3680043.8.498.7"
    assert ds.AcquisitionDateTime == "20261201093000"
    # provenance: the device made the scan, the appliance made this object of its export
    [converter] = ds.ContributingEquipmentSequence
    assert converter.PurposeOfReferenceCodeSequence[0].CodeValue == "109103"
    assert "Heidelberg .vol" in converter.ContributionDescription
    assert ds.Manufacturer == "Heidelberg Engineering"
    read = read_oct(data, Limits())
    assert read.problem is None and read.laterality == "L"
    assert read.device == "Heidelberg Engineering Spectralis"
    assert read.spacing_mm == pytest.approx(rendered.spacing_mm, abs=1e-6)
    assert read.volume is not None and np.array_equal(read.volume, volume[::-1])
    (tmp_path / "opt.dcm").write_bytes(data)
    run = subprocess.run(
        [dciodvfy, str(tmp_path / "opt.dcm")], capture_output=True, text=True, timeout=120
    )
    output = run.stdout + run.stderr
    errors = [line.removeprefix("Error - ") for line in output.splitlines()
              if line.startswith("Error")]  # fmt: skip
    assert sorted(errors) == sorted(VALIDATOR_CONFLICTS), output
    with pytest.raises(RejectedInput) as other_eye:
        opt_bytes(scan, opt_header(scan, patient, ("", "")), "R")
    assert other_eye.value.reason == "bad_sidecar"


def test_eyepy_is_not_imported_until_a_vol_arrives() -> None:
    """`appliance serve` imports the CLI, the services and the web app: none of them eyepy or
    what it pulls in, so the appliance's start and memory stay as they were."""
    code = (
        "import sys, appliance.cli, appliance.runtime.services, web.app\n"
        "heavy = {'eyepy', 'skimage', 'scipy', 'construct', 'imageio', 'networkx', 'OCTVol'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
