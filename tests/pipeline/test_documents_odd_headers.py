"""Finding 2's inputs: a camera's OP pair that ingest accepts but whose headers are odd still
gets its SR, PDF and heatmap SCs, built from what is valid, each passing dciodvfy.

Before, each of these failed to build ("result documents … could not be built", e.g.
``AttributeError: 'PatientBirthDate'`` or ``RecursionError``) or wrote bytes the declared
character set cannot hold; /healthz said ok.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from appliance.capture import Incoming
from appliance.config import Settings
from appliance.dicom.op import OPParameters, new_uid, op_from_jpeg, to_bytes
from appliance.domain import PatientInfo, Source
from tests.conftest import jpeg_bytes, outside_files, require_tool

MODELS = Path(__file__).resolve().parents[2] / "models"


def _nested(keyword: str, depth: int = 1000) -> Dataset:
    item = Dataset()
    item.PatientID = "innermost"
    for _ in range(depth):
        outer = Dataset()
        setattr(outer, keyword, Sequence([item]))
        item = outer
    return item


def no_birth_date(ds: Dataset) -> None:
    del ds.PatientBirthDate


def gb18030(ds: Dataset) -> None:
    ds.SpecificCharacterSet = "GB18030"
    ds.PatientName = "Wang^XiaoMing=王^小明"


def lying_character_set(ds: Dataset) -> None:
    """Says Latin-1; holds UTF-8 with two bytes no character set maps."""
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds["PatientName"] = pydicom.DataElement(0x00100010, "PN", "Zoë^Ünïcode".encode() + b"\xff\xfe")


def unknown_character_set(ds: Dataset) -> None:
    ds.SpecificCharacterSet = "ISO_IR 999"
    ds["PatientName"] = pydicom.DataElement(0x00100010, "PN", b"M\xfcller^Hans")


def traversal_patient_id(ds: Dataset) -> None:
    ds.PatientID = "../../etc"


def nested_patient_sequence(ds: Dataset) -> None:
    ds.OtherPatientIDsSequence = Sequence([_nested("OtherPatientIDsSequence")])


def nested_request_attributes(ds: Dataset) -> None:
    request = _nested("ContentSequence")
    request.RequestedProcedureID = "RP1"
    request.ScheduledProcedureStepID = "SPS1"
    ds.RequestAttributesSequence = Sequence([request])


def _pair(mutate: Callable[[Dataset], None]) -> list[bytes]:
    from appliance.synth.case import render_case
    from appliance.synth.dataset import case_for

    study = new_uid()
    out = []
    for eye in ("R", "L"):
        case = next(
            c for c in (case_for(6160, i, (600, 800)) for i in range(200))
            if c.eye == eye and c.field == "macula" and c.defect is None
        )  # fmt: skip
        ds = op_from_jpeg(
            jpeg_bytes(render_case(case)),
            OPParameters(
                laterality=eye,
                patient=PatientInfo(
                    patient_id="ODD1", patient_name="Test^Patient", birth_date="19600101", sex="F"
                ),
                study_instance_uid=study,
                series_instance_uid=new_uid(),
                sop_instance_uid=new_uid(),
                field="macula",
            ),
        )
        mutate(ds)
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(20000)  # only to write the test file; the appliance runs as shipped
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pydicom warns about the unknown set
                out.append(to_bytes(ds))
        finally:
            sys.setrecursionlimit(limit)
    return out


def _dciodvfy_errors(path: Path) -> list[str]:
    run = subprocess.run(
        [require_tool("dciodvfy"), str(path)], capture_output=True, timeout=60, check=False
    )
    output = (run.stdout + run.stderr).decode("utf-8", errors="replace")
    return [line for line in output.splitlines() if line.startswith("Error")]


@pytest.mark.parametrize(
    "mutate",
    [
        no_birth_date,
        gb18030,
        lying_character_set,
        unknown_character_set,
        traversal_patient_id,
        nested_patient_sequence,
        nested_request_attributes,
    ],
)
def test_odd_received_headers_still_get_valid_documents(
    settings: Settings, tmp_path: Path, mutate: Callable[[Dataset], None]
) -> None:
    from appliance.runtime.services import Services

    services = Services(settings.replace(models_dir=str(MODELS), heatmap_secondary_capture=True))
    services.start(dicom=False, hotfolder=False, worker=False)
    try:
        for data in _pair(mutate):
            services.ingestor.ingest(
                Incoming(data=data, source=Source.DICOM, user_id="ae:CAMERA", calling_ae="CAMERA")
            )
        services.pipeline.drain()
        documents = {
            row["kind"]: row
            for row in services.store.query("SELECT * FROM derived_objects ORDER BY id")
        }
        kinds = [r["kind"] for r in services.store.query("SELECT kind FROM derived_objects")]
        assert sorted(kinds) == ["pdf", "sc", "sc", "sr"]
        assert services.store.query("SELECT * FROM documents_due") == []
        assert services.health()["status"] == "ok"
        made: dict[str, Any] = {}
        for kind, row in documents.items():
            path = services.blobs.resolve(row["file_path"])
            assert _dciodvfy_errors(path) == [], kind
            made[kind] = pydicom.dcmread(path)
        for ds in made.values():
            assert ds.SpecificCharacterSet == "ISO_IR 192"
            assert "PatientBirthDate" in ds  # Type 2: present, empty when unknown
            assert "OtherPatientIDsSequence" not in ds
        sr, pdf = made["sr"], made["pdf"]
        expected = {
            no_birth_date: ("Test^Patient", "ODD1", ""),
            gb18030: ("Wang^XiaoMing=王^小明", "ODD1", "19600101"),
            lying_character_set: ("Zoë^Ünïcode", "ODD1", "19600101"),
            unknown_character_set: ("Müller^Hans", "ODD1", "19600101"),
            traversal_patient_id: ("Test^Patient", "../../etc", "19600101"),
            nested_patient_sequence: ("Test^Patient", "ODD1", "19600101"),
            nested_request_attributes: ("Test^Patient", "ODD1", "19600101"),
        }[mutate]
        for ds in (sr, pdf):
            assert (str(ds.PatientName), ds.PatientID, ds.PatientBirthDate) == expected
        if mutate is nested_request_attributes:
            request = sr.ReferencedRequestSequence[0]
            assert request.RequestedProcedureID == "RP1" and "ContentSequence" not in request
        if mutate is traversal_patient_id:
            data_dir = settings.data_path
            assert outside_files(tmp_path, data_dir) == []
            assert not (data_dir.parent / "etc").exists()
    finally:
        services.stop()
