"""Forwarding to a real archive: Debian's Orthanc with the DICOMweb plugin, on loopback ports."""

from __future__ import annotations

import io
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from appliance.outbox.dimse import DimseTarget
from appliance.outbox.policy import Verdict
from appliance.outbox.stow import StowTarget
from tests.conftest import fundus, op_bytes
from tests.orthanc_server import Orthanc

pytestmark = pytest.mark.tool("Orthanc")


@cache
def _image() -> np.ndarray:
    return fundus(size=(192, 256))


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    with Orthanc(tmp_path / "orthanc") as server:
        yield server


def _files(tmp_path: Path, count: int, tag: str) -> tuple[list[Path], list[str]]:
    paths, uids = [], []
    for n in range(count):
        data = op_bytes(_image())
        path = tmp_path / f"{tag}{n}.dcm"
        path.write_bytes(data)
        paths.append(path)
        uids.append(str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID))
    return paths, uids


def _dimse(orthanc: Orthanc) -> DimseTarget:
    return DimseTarget("pacs", "127.0.0.1", orthanc.dicom_port, "ORTHANC", "SCREENING", timeout=5)


def _stow(orthanc: Orthanc) -> StowTarget:
    return StowTarget("web", orthanc.url + "/dicom-web", timeout=5)


def _pixels(data: bytes) -> bytes:
    return bytes(pydicom.dcmread(io.BytesIO(data)).PixelData)


def test_c_store_to_orthanc(orthanc: Orthanc, tmp_path: Path) -> None:
    files, uids = _files(tmp_path, 3, "dimse")
    results = _dimse(orthanc).send(files)
    assert [(r.verdict, r.status) for r in results] == [(Verdict.DONE, "0x0000")] * 3
    assert orthanc.sop_uids() == set(uids)
    for path, uid in zip(files, uids, strict=True):
        assert _pixels(orthanc.file(uid)) == _pixels(path.read_bytes())


def test_stow_rs_to_orthanc_and_a_resend_is_not_a_duplicate(
    orthanc: Orthanc, tmp_path: Path
) -> None:
    files, uids = _files(tmp_path, 3, "stow")
    results = _stow(orthanc).send(files)
    assert [r.verdict for r in results] == [Verdict.DONE] * 3, results
    assert orthanc.sop_uids() == set(uids)
    for path, uid in zip(files, uids, strict=True):
        assert _pixels(orthanc.file(uid)) == _pixels(path.read_bytes())
    again = _stow(orthanc).send(files[:1]) + _dimse(orthanc).send(files[1:2])
    assert [r.verdict for r in again] == [Verdict.DONE] * 2, again
    assert len(orthanc.instances()) == 3 and orthanc.sop_uids() == set(uids)


def test_an_outage_is_retried_and_a_restarted_archive_takes_the_files(
    orthanc: Orthanc, tmp_path: Path
) -> None:
    files, uids = _files(tmp_path, 2, "outage")
    orthanc.stop()
    dimse, stow = _dimse(orthanc), _stow(orthanc)
    down = dimse.send(files[:1]) + stow.send(files[1:])
    assert [(r.verdict, r.status) for r in down] == [(Verdict.RETRY, "no-status")] * 2, down
    with Orthanc(
        orthanc.root, dicom_port=orthanc.dicom_port, http_port=orthanc.http_port
    ) as restarted:
        up = dimse.send(files[:1]) + stow.send(files[1:])
        assert [r.verdict for r in up] == [Verdict.DONE] * 2, up
        assert restarted.sop_uids() == set(uids)


def test_the_running_appliance_forwards_to_orthanc_over_both_protocols(
    orthanc: Orthanc, settings: Any
) -> None:
    """Camera → appliance SCP path → outbox → Orthanc, over C-STORE and STOW-RS at once."""
    from appliance.capture import Incoming
    from appliance.config import Destination
    from appliance.domain import Source
    from appliance.runtime.services import Services
    from tests.conftest import wait_for

    configured = settings.replace(
        destinations=(
            Destination(name="pacs", host="127.0.0.1", port=orthanc.dicom_port, ae_title="ORTHANC"),
            Destination(name="web", kind="stow", url=orthanc.url + "/dicom-web"),
        )
    )
    services = Services(configured)
    services.start(dicom=False, hotfolder=False)
    try:
        data = op_bytes(fundus(seed=31, size=(240, 320)))
        uid = str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID)
        services.ingestor.ingest(Incoming(data=data, source=Source.DICOM, user_id="ae:CAM"))
        wait_for(
            lambda: (
                services.store.scalar("SELECT count(*) FROM outbox_jobs WHERE state = 'delivered'")
                == 2
            ),
            timeout=30,
        )
        assert orthanc.sop_uids() == {uid}
        assert _pixels(orthanc.file(uid)) == _pixels(data)
    finally:
        services.stop()


def test_a_camera_jpeg_reaches_orthanc_as_a_valid_op_object(
    orthanc: Orthanc, settings: Any, tmp_path: Path
) -> None:
    """Hot-folder/upload JPEG → OP wrapped without re-encoding → Orthanc; dciodvfy clean."""
    import subprocess

    from appliance.capture import Incoming
    from appliance.config import Destination
    from appliance.domain import Source
    from appliance.runtime.services import Services
    from tests.conftest import jpeg_bytes, require_tool, wait_for

    configured = settings.replace(
        destinations=(
            Destination(name="pacs", host="127.0.0.1", port=orthanc.dicom_port, ae_title="ORTHANC"),
        )
    )
    services = Services(configured)
    services.start(dicom=False, hotfolder=False)
    try:
        jpeg = jpeg_bytes(fundus(seed=41, size=(480, 640), eye="L"))
        fields = {"patient_id": "OP-1", "patient_name": "Doe^Jane", "laterality": "L"}
        services.ingestor.ingest(
            Incoming(data=jpeg, source=Source.UPLOAD, user_id="tester", fields=fields)
        )
        wait_for(
            lambda: (
                services.store.scalar("SELECT count(*) FROM outbox_jobs WHERE state = 'delivered'")
                == 1
            ),
            timeout=30,
        )
        derived = services.store.one("SELECT * FROM derived_objects")
        assert derived["kind"] == "op"
        assert orthanc.sop_uids() == {derived["sop_instance_uid"]}
        stored = orthanc.file(derived["sop_instance_uid"])
        ds = pydicom.dcmread(io.BytesIO(stored))
        assert ds.PatientID == "OP-1" and ds.ImageLaterality == "L" and ds.Modality == "OP"
        assert pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1).__next__() == jpeg
        path = tmp_path / "from-orthanc.dcm"
        path.write_bytes(stored)
        run = subprocess.run([require_tool("dciodvfy"), str(path)], capture_output=True, text=True)
        errors = [
            line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")
        ]
        assert errors == []
    finally:
        services.stop()


def test_a_complete_visit_sends_ops_sr_and_pdf_to_orthanc(
    orthanc: Orthanc, settings: Any, tmp_path: Path
) -> None:
    """Both eyes photographed → OP ×2, TID 1500 SR and Encapsulated PDF, all dciodvfy clean."""
    import subprocess

    from appliance.capture import Incoming
    from appliance.config import Destination
    from appliance.domain import Source
    from appliance.runtime.services import Services
    from appliance.synth.case import render_case
    from appliance.synth.dataset import case_for
    from tests.conftest import jpeg_bytes, require_tool, wait_for

    models = Path(__file__).resolve().parents[2] / "models"
    configured = settings.replace(
        models_dir=str(models),
        destinations=(
            Destination(name="pacs", host="127.0.0.1", port=orthanc.dicom_port, ae_title="ORTHANC"),
        ),
    )
    services = Services(configured)
    services.start(dicom=False, hotfolder=False)
    try:
        for eye in ("L", "R"):
            case = next(
                c for c in (case_for(9190, i, (600, 800)) for i in range(300))
                if c.eye == eye and c.field == "macula" and c.defect is None
            )  # fmt: skip
            services.ingestor.ingest(
                Incoming(
                    data=jpeg_bytes(render_case(case)),
                    source=Source.UPLOAD,
                    user_id="tester",
                    fields={"patient_id": "VISIT-9", "patient_name": "Roe^Ann", "laterality": eye},
                )
            )
        wait_for(
            lambda: (
                services.store.scalar("SELECT count(*) FROM outbox_jobs WHERE state = 'delivered'")
                == 4
            ),
            timeout=60,
        )
        kinds = {r["kind"]: r for r in services.store.query("SELECT * FROM derived_objects")}
        assert set(kinds) == {"op", "sr", "pdf"}
        assert services.store.scalar("SELECT count(*) FROM derived_objects") == 4
        assert len(orthanc.sop_uids()) == 4
        for kind in ("sr", "pdf"):
            data = orthanc.file(kinds[kind]["sop_instance_uid"])
            path = tmp_path / f"{kind}.dcm"
            path.write_bytes(data)
            run = subprocess.run(
                [require_tool("dciodvfy"), str(path)], capture_output=True, text=True
            )
            output = run.stdout + run.stderr
            assert [line for line in output.splitlines() if line.startswith("Error")] == [], output
            ds = pydicom.dcmread(io.BytesIO(data))
            assert ds.PatientID == "VISIT-9"
        sr = pydicom.dcmread(io.BytesIO(orthanc.file(kinds["sr"]["sop_instance_uid"])))
        assert sr.VerificationFlag == "UNVERIFIED"
    finally:
        services.stop()
