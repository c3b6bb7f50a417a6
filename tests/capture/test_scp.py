"""The C-STORE SCP against real associations: pynetdicom as a camera, and dcmtk's tools."""

from __future__ import annotations

import io
import json
import subprocess
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from appliance.capture.scp import VERIFICATION as Verification
from appliance.config import Settings
from appliance.dicom.op import OP_8BIT, new_uid
from tests.conftest import op_bytes, require_tool, wait_for


def _send(settings: Settings, *datasets: Dataset, calling: str = "CAMERA1") -> list[Any]:
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    for ds in datasets:
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", settings.dicom_port, ae_title=settings.dicom_ae_title)
    assert assoc.is_established
    try:
        return [assoc.send_c_store(ds) for ds in datasets]
    finally:
        assoc.release()


def _echo(settings: Settings) -> int:
    ae = AE(ae_title="CHECK")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", settings.dicom_port, ae_title=settings.dicom_ae_title)
    assert assoc.is_established
    status = assoc.send_c_echo()
    assoc.release()
    return int(status.Status)


def _ds(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def _last_event(services: Any) -> dict[str, Any]:
    row = services.store.one("SELECT * FROM audit_events ORDER BY seq DESC LIMIT 1")
    row["detail"] = json.loads(row["detail"])
    return row


def test_store_op_gives_a_capture_and_a_quality_report(settings: Settings, services: Any) -> None:
    data = op_bytes(laterality="L", patient_id="PAT-42")
    ds = _ds(data)
    (status,) = _send(settings, ds)
    assert status.Status == 0x0000
    capture = services.store.one(
        "SELECT * FROM captures WHERE sop_instance_uid = ?", (ds.SOPInstanceUID,)
    )
    assert capture["source"] == "dicom" and capture["laterality"] == "L"
    assert capture["laterality_source"] == "dicom" and capture["calling_ae"] == "CAMERA1"
    stored = (settings.data_path / capture["file_path"]).read_bytes()
    assert _ds(stored).PixelData == ds.PixelData  # kept as received, not re-encoded
    patient = services.store.one("SELECT * FROM patients WHERE id = ?", (capture["patient_pk"],))
    assert patient["patient_id"] == "PAT-42"
    report = wait_for(
        lambda: services.store.one(
            "SELECT * FROM quality_reports WHERE capture_pk = ?", (capture["id"],)
        )
    )
    assert report["gradable"] == 1, report["reasons"]
    result = services.store.one(
        "SELECT payload FROM results WHERE capture_pk = ?", (capture["id"],)
    )
    assert json.loads(result["payload"])["status"] == "no_model"
    transferred = services.store.one(
        "SELECT * FROM audit_events WHERE event_id = '110104' AND outcome = 0 "
        "ORDER BY seq DESC LIMIT 1"
    )
    assert transferred["ae_title"] == "CAMERA1" and transferred["patient_id"] == "PAT-42"
    assert json.loads(transferred["sop_instance_uids"]) == [ds.SOPInstanceUID]
    assert services.audit.verify().ok


def test_identical_resend_is_success_without_a_second_copy(
    settings: Settings, services: Any
) -> None:
    ds = _ds(op_bytes())
    statuses = _send(settings, ds, ds)
    assert [s.Status for s in statuses] == [0, 0]
    assert services.store.scalar("SELECT count(*) FROM captures") == 1


def test_unsupported_sop_class_is_0122(settings: Settings, services: Any) -> None:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = new_uid()
    ds.StudyInstanceUID = new_uid()
    ds.PatientID = "CT1"
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.SamplesPerPixel, ds.PixelRepresentation = 1, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = np.zeros((4, 4), np.uint16).tobytes()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    (status,) = _send(settings, ds)
    assert status.Status == 0x0122
    assert "not one the appliance analyses" in status.ErrorComment or status.ErrorComment
    event = _last_event(services)
    assert event["outcome"] == 4 and event["detail"]["refused"] == "sop_class_not_supported"
    assert services.store.scalar("SELECT count(*) FROM captures") == 0
    assert _echo(settings) == 0


def test_dataset_without_pixel_data_is_c000(settings: Settings, services: Any) -> None:
    ds = _ds(op_bytes())
    del ds.PixelData
    (status,) = _send(settings, ds)
    assert status.Status == 0xC000
    assert _last_event(services)["detail"]["refused"] == "no_pixel_data"
    assert _echo(settings) == 0


def test_full_disk_is_a700_and_recovers(settings: Settings, services: Any) -> None:
    services.blobs.min_free_bytes = 10**18  # the disk "fills up"
    ds = _ds(op_bytes())
    (status,) = _send(settings, ds)
    assert status.Status == 0xA700
    assert _last_event(services)["detail"]["refused"] == "disk_full"
    assert not list((settings.data_path / "blobs").rglob("*.dcm"))
    assert services.store.integrity_check() == ["ok"]
    services.blobs.min_free_bytes = 0  # space freed: the camera's retry succeeds
    (status,) = _send(settings, ds)
    assert status.Status == 0x0000
    assert services.store.scalar("SELECT count(*) FROM captures") == 1


def test_sop_instance_uid_with_path_traversal_is_refused(
    settings: Settings, services: Any, tmp_path: Path
) -> None:
    ds = _ds(op_bytes())
    with warnings.catch_warnings():  # pydicom rightly warns about the hostile value
        warnings.simplefilter("ignore", UserWarning)
        ds.SOPInstanceUID = "../../x"
        ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3"
        (status,) = _send(settings, ds)
    assert status.Status == 0xC000
    assert _last_event(services)["detail"]["refused"] == "bad_uid"
    outside = [p for p in tmp_path.rglob("x*") if p.is_file()]
    assert outside == []
    assert _echo(settings) == 0


def test_calling_ae_allow_list(settings: Settings, tmp_path: Path) -> None:
    from appliance.runtime.services import Services

    restricted = settings.replace(
        dicom_allowed_calling_aes=("CAMERA1",), data_dir=str(tmp_path / "r")
    )
    services = Services(restricted)
    services.start(hotfolder=False, worker=False)
    try:
        ae = AE(ae_title="INTRUDER")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", restricted.dicom_port, ae_title=restricted.dicom_ae_title)
        assert assoc.is_rejected
        assert _send(restricted, _ds(op_bytes()))[0].Status == 0
    finally:
        services.stop()


def test_dcmtk_storescu_and_echoscu_as_the_camera(
    settings: Settings, services: Any, tmp_path: Path
) -> None:
    storescu = require_tool("storescu")
    echoscu = require_tool("echoscu")
    port = str(settings.dicom_port)
    echo = subprocess.run(
        [echoscu, "-aec", settings.dicom_ae_title, "127.0.0.1", port],
        capture_output=True,
        timeout=30,
    )
    assert echo.returncode == 0, echo.stderr
    path = tmp_path / "camera.dcm"
    path.write_bytes(op_bytes(laterality="R", patient_id="DCMTK1"))
    sop_uid = _ds(path.read_bytes()).SOPInstanceUID
    sent = subprocess.run(
        [
            storescu,
            "-xy",  # offer the JPEG the camera holds, as a JPEG camera does
            "-aet",
            "FUNDUSCAM",
            "-aec",
            settings.dicom_ae_title,
            "127.0.0.1",
            port,
            str(path),
        ],
        capture_output=True,
        timeout=60,
    )
    assert sent.returncode == 0, sent.stderr
    capture = services.store.one("SELECT * FROM captures WHERE sop_instance_uid = ?", (sop_uid,))
    assert capture["calling_ae"] == "FUNDUSCAM"
    wait_for(
        lambda: services.store.one(
            "SELECT 1 FROM quality_reports WHERE capture_pk = ?", (capture["id"],)
        )
    )


def test_dcmtk_storescu_sees_the_refusal_status(
    settings: Settings, services: Any, tmp_path: Path
) -> None:
    storescu = require_tool("storescu")
    ds = _ds(op_bytes())
    del ds.PixelData
    path = tmp_path / "nopixels.dcm"
    ds.save_as(path)
    sent = subprocess.run(
        [
            storescu,
            "-v",
            "-xy",
            "-aec",
            settings.dicom_ae_title,
            "127.0.0.1",
            str(settings.dicom_port),
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Error: CannotUnderstand" in sent.stdout + sent.stderr
    assert _echo(settings) == 0


def test_jpeg_baseline_context_is_accepted(settings: Settings, services: Any) -> None:
    ds = _ds(op_bytes())
    assert ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    assert ds.SOPClassUID == OP_8BIT
    assert _send(settings, ds)[0].Status == 0


@pytest.mark.parametrize("n", [8])
def test_parallel_cameras(settings: Settings, services: Any, n: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    datasets = [_ds(op_bytes(patient_id=f"PAR{i}")) for i in range(n)]
    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(lambda ds: _send(settings, ds, calling="CAM")[0].Status, datasets))
    assert results == [0] * n
    assert services.store.scalar("SELECT count(*) FROM captures") == n
    assert services.audit.verify().ok
