"""An OCT volume in the visit's documents: one Ophthalmic Thickness Map per gradable measured
volume, made with its analysis, exactly once (a crash, a failed build, a rebuild: one object,
the same UIDs), queued to every destination; the OCT's groups in the SR and its section in the
PDF, also for a visit with OCT only; fluid in the centre only where the outcome decided it."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import numpy as np
import pydicom
import pytest

from appliance.capture import Incoming
from appliance.config import Destination, Settings
from appliance.dicom.thickness_map import OPHTHALMIC_THICKNESS_MAP, decode_thickness
from appliance.domain import OctFinding, Source
from appliance.pipeline import due, oct_documents
from appliance.pipeline.oct import thickness_map, visit_scans
from appliance.synth.oct.dicom import OptHeader
from tests.conftest import free_port, require_tool
from tests.pipeline.test_documents_due import Crash, crash_at
from tests.pipeline.test_oct_pipeline import opt_bytes

ROOT = "1.2.826.0.1.3680043.8.498."
CST = "57109-1"


def _open(settings: Settings) -> Any:
    from appliance.runtime.services import Services

    services = Services(
        settings.replace(
            uid_root=ROOT,
            documents_quiet_seconds=600.0,
            destinations=(
                Destination("pacs", "127.0.0.1", free_port(), "NOBODY", timeout=2),
                Destination(
                    "web", "", 0, "", kind="stow", url=f"http://127.0.0.1:{free_port()}/dw"
                ),
            ),
        )
    )
    services.start(dicom=False, hotfolder=False, worker=False)
    return services


def _ingest(services: Any, patient: str, eye: str = "R", **options: Any) -> int:
    header = OptHeader(patient_id=patient, study_instance_uid=ROOT + "16." + patient[-1])
    data = opt_bytes(eye, header=header, **options)
    incoming = Incoming(data=data, source=Source.DICOM, user_id="ae:OCT", calling_ae="OCT")
    return int(services.ingestor.ingest(incoming).id)


def _objects(services: Any, kind: str) -> list[dict[str, Any]]:
    return services.store.query("SELECT * FROM derived_objects WHERE kind = ?", (kind,))


def _jobs(services: Any, uid: str) -> list[str]:
    rows = services.store.query(
        "SELECT destination FROM outbox_jobs WHERE sop_instance_uid = ?", (uid,)
    )
    return sorted(r["destination"] for r in rows)


def test_a_gradable_volume_gets_one_thickness_map_with_its_analysis(settings: Settings) -> None:
    services = _open(settings)
    try:
        capture_id = _ingest(services, "MAP-1")
        services.pipeline.drain()
        [row] = _objects(services, "opm")
        [scan] = visit_scans(services.store, "c.id = ?", (capture_id,))
        assert row["capture_pk"] == capture_id and row["sop_class_uid"] == OPHTHALMIC_THICKNESS_MAP
        assert row["sop_instance_uid"].startswith(ROOT)
        assert json.loads(row["references_json"]) == [scan.sop_instance_uid]
        assert _jobs(services, row["sop_instance_uid"]) == ["pacs", "web"]
        ds = pydicom.dcmread(services.blobs.resolve(row["file_path"]))
        stored = thickness_map(services.blobs, scan.record)
        assert stored is not None and scan.record.map_spacing_mm is not None
        # the measurement's grid (binned), not the OPT's Pixel Spacing
        assert (ds.Rows, ds.Columns) == stored.shape == (25, 256)
        assert [float(v) for v in ds.PixelSpacing] == pytest.approx(scan.record.map_spacing_mm)
        back = decode_thickness(ds)
        both = np.isfinite(stored)
        assert np.max(np.abs(back[both] - stored[both])) <= 0.05 + 1e-6
        assert ds.Manufacturer == oct_documents.DEVICE["manufacturer"]
        # this installation's serial (its id in the data directory), not the placeholder
        this = oct_documents.appliance_device(services.settings)
        assert ds.DeviceSerialNumber == this["serial"] != oct_documents.DEVICE["serial"]
        # a rebuild makes the same object under the same UIDs
        again = oct_documents.build_thickness_map(
            services.blobs, capture_pk=capture_id, scan=scan, uid_root=ROOT
        )
        assert again is not None
        for key in ("sop_instance_uid", "series_instance_uid", "study_instance_uid"):
            assert again[key] == row[key]
        assert services.audit.verify().ok
    finally:
        services.stop()


def test_a_volume_not_gradable_gets_no_thickness_map(settings: Settings) -> None:
    services = _open(settings)
    try:
        _ingest(services, "MAP-2", defect="low_signal", strength=0.95)
        services.pipeline.drain()
        [scan] = visit_scans(services.store, "1 = 1", ())
        assert scan.finding is not None and not scan.finding.gradable
        assert _objects(services, "opm") == []
        assert due.counts(services.store) == {"due": 0, "dead": 0}
    finally:
        services.stop()


def test_a_failed_map_build_is_owed_and_built_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = _open(settings)
    real = oct_documents.thickness_map_dataset
    try:
        monkeypatch.setattr(
            oct_documents, "thickness_map_dataset", lambda *a, **k: 1 / 0, raising=True
        )
        capture_id = _ingest(services, "MAP-3")
        services.pipeline.drain()
        assert _objects(services, "opm") == []
        [owed] = services.store.query("SELECT * FROM documents_due WHERE kind = 'opm'")
        assert owed["photo_pk"] == capture_id and "ZeroDivisionError" in owed["last_error"]
        monkeypatch.setattr(oct_documents, "thickness_map_dataset", real)
        later = time.time() + due.RETRY_SECONDS + 1
        services.pipeline.issuer.issue_due(later)
        services.pipeline.issuer.issue_due(later + 1)
        [row] = _objects(services, "opm")
        assert row["capture_pk"] == capture_id
        assert _jobs(services, row["sop_instance_uid"]) == ["pacs", "web"]
        assert services.store.query("SELECT * FROM documents_due WHERE kind = 'opm'") == []
    finally:
        services.stop()


def test_a_crash_before_the_analysis_is_stored_leaves_one_map(settings: Settings) -> None:
    services = _open(settings)
    try:
        capture_id = _ingest(services, "MAP-4")
        services.pipeline.step_hook = crash_at("analysed")
        with pytest.raises(Crash):
            services.pipeline.process(capture_id)
        assert _objects(services, "opm") == []
        services.pipeline.step_hook = lambda step: None
        services.pipeline.process(capture_id)  # what a restart does with a received capture
        services.pipeline.process(capture_id)  # processed: nothing again
        assert len(_objects(services, "opm")) == 1
    finally:
        services.stop()


def test_a_visit_with_oct_only_gets_sr_pdf_and_map(settings: Settings) -> None:
    services = _open(settings)
    try:
        _ingest(services, "MAP-5", "L")
        services.pipeline.drain()
        assert services.pipeline.issue_quiet_visits(now=time.time() + 601) == 1
        [scan] = visit_scans(services.store, "1 = 1", ())
        assert scan.finding is not None and scan.finding.cst_um is not None
        [sr_row], [pdf_row] = _objects(services, "sr"), _objects(services, "pdf")
        assert len(_objects(services, "opm")) == 1
        assert json.loads(sr_row["references_json"]) == [scan.sop_instance_uid]
        sr = pydicom.dcmread(services.blobs.resolve(sr_row["file_path"]))
        groups = [
            i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "126010"
        ]
        assert len(groups) == 1  # the OCT's, no photograph group
        nums = {
            n.ConceptNameCodeSequence[0].CodeValue: float(n.MeasuredValueSequence[0].NumericValue)
            for n in groups[0].ContentSequence[0].ContentSequence
            if n.ValueType == "NUM"
        }
        assert nums[CST] == pytest.approx(scan.finding.cst_um, abs=0.001)
        pdf = pydicom.dcmread(services.blobs.resolve(pdf_row["file_path"]))
        text = subprocess.run(
            [require_tool("pdftotext"), "-", "-"],
            input=bytes(pdf.EncapsulatedDocument),
            capture_output=True,
            timeout=60,
        ).stdout.decode()
        assert f"Central subfield thickness (CST): {scan.finding.cst_um:.0f} \u00b5m" in text
        assert "Left eye" in text or "left eye" in text
    finally:
        services.stop()


def _eye(**values: Any) -> dict[str, Any]:
    return {"eye": "R", "oct_status": "graded", "oct_capture_ids": [7], **values}


@pytest.mark.parametrize(
    ("cst", "eye", "expected"),
    [
        (280.0, _eye(oct_dme=False, cst_um=280.0, cst_threshold_um=320.0), False),
        (280.0, _eye(oct_dme=True, cst_um=280.0, cst_threshold_um=320.0), True),  # fluid
        (350.0, _eye(oct_dme=True, cst_um=350.0, cst_threshold_um=320.0), None),  # thickness
        (280.0, _eye(oct_dme=True, cst_um=350.0, cst_threshold_um=320.0), None),  # another
        (280.0, _eye(oct_status="human_grading", oct_dme=None), None),
    ],
)
def test_fluid_in_the_centre_only_where_the_outcome_decided_it(
    cst: float, eye: dict[str, Any], expected: bool | None
) -> None:
    finding = OctFinding(capture_id=7, laterality="R", gradable=True, cst_um=cst)
    assert oct_documents.fluid_centre(finding, eye) is expected
    ungradable = OctFinding(capture_id=7, laterality="R", gradable=False)
    assert oct_documents.fluid_centre(ungradable, eye) is None


def test_derived_uids_are_stable_and_valid() -> None:
    for root in ("2.25.", ROOT):
        first = oct_documents.derived_uid(root, "1.2.3", "thickness map")
        assert first == oct_documents.derived_uid(root, "1.2.3", "thickness map")
        assert first != oct_documents.derived_uid(root, "1.2.4", "thickness map")
        assert first.startswith(root) and len(first) <= 64
        assert pydicom.uid.UID(first).is_valid


def _oct_eyes(sr: pydicom.Dataset) -> list[str]:
    """The eyes the SR's OCT groups are tracked as (TID 1501 tracking identifiers)."""
    return [
        str(e.value).removeprefix("Macular OCT, ")
        for e in sr.iterall()
        if e.keyword == "TextValue" and str(e.value).startswith("Macular OCT, ")
    ]


def test_a_persons_eye_decision_moves_the_octs_group_in_the_next_sr(settings: Settings) -> None:
    services = _open(settings)
    try:
        capture_id = _ingest(services, "MAP-6", "R")
        services.pipeline.drain()
        assert services.pipeline.issue_quiet_visits(now=time.time() + 601) == 1
        [first] = _objects(services, "sr")
        sr = pydicom.dcmread(services.blobs.resolve(first["file_path"]))
        assert _oct_eyes(sr) == ["right eye"]
        services.eye_labels.decide(
            capture_id, "relabel", eye="L", reason="the left eye", user="op1", role="operator"
        )
        services.pipeline.issuer.issue_due(time.time() + 1)
        newest = _objects(services, "sr")[-1]
        assert newest["id"] != first["id"]
        sr = pydicom.dcmread(services.blobs.resolve(newest["file_path"]))
        assert _oct_eyes(sr) == ["left eye"]
        assert len(_objects(services, "opm")) == 1  # the map is the volume's: not made again
    finally:
        services.stop()
