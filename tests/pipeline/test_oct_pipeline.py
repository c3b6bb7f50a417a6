"""OCT volumes through the worker: a stored OctFinding with its arrays as blobs and an audited
analysis; a volume that cannot be measured is stored, forwarded and said to be not analysed."""

from __future__ import annotations

import io
import json
from typing import Any

import cv2
import numpy as np
import pytest

from appliance.capture import Incoming
from appliance.config import Settings
from appliance.destinations import Destination
from appliance.domain import OctFinding, Source
from appliance.pipeline.oct import layers as oct_layers
from appliance.pipeline.visit import oct_finding_from_json
from appliance.synth.oct import GEOMETRIES, OctCase, render_oct
from appliance.synth.oct.dicom import OptHeader, encode_opt, opt_dataset
from appliance.visits import ImageRecord
from tests.conftest import free_port, wait_for


def opt_bytes(
    eye: str = "R",
    thickening_um: float = 0.0,
    *,
    header: OptHeader | None = None,
    encoding: str = "jpegls",
    geometry: str = "small",
    defect: str | None = None,
    strength: float = 0.0,
) -> bytes:
    case = OctCase(
        seed=21, geometry=GEOMETRIES[geometry], eye=eye, thickening_um=thickening_um, cysts=0,
        srf_um=0.0, fluid_in_centre=False, drusen=0, defect=defect, defect_strength=strength,
    )  # fmt: skip
    rendered = render_oct(case)
    return encode_opt(opt_dataset(rendered.volume, rendered.spacing_mm, eye, header), encoding)


def _ingest(services: Any, data: bytes) -> int:
    incoming = Incoming(data=data, source=Source.DICOM, user_id="ae:OCT", calling_ae="OCT")
    return int(services.ingestor.ingest(incoming).id)


def _record(services: Any, capture_id: int) -> ImageRecord:
    row = wait_for(
        lambda: services.store.one(
            "SELECT payload FROM results WHERE capture_pk = ? AND kind = 'screening'",
            (capture_id,),
        ),
        timeout=60,
    )
    return ImageRecord.parse(row["payload"])


def test_an_oct_volume_is_measured_and_its_arrays_kept(services: Any, settings: Settings) -> None:
    capture_id = _ingest(services, opt_bytes("L", thickening_um=110.0))
    record = _record(services, capture_id)
    scan = record.oct
    assert scan is not None and record.data["status"] == "measured"
    assert record.gradable is True and record.laterality == "L"
    finding = oct_finding_from_json(scan.finding or {})
    assert isinstance(finding, OctFinding) and finding.capture_id == capture_id
    assert finding.device == "Appliance Synthetic SynthOCT" and finding.gradable
    assert finding.cst_um is not None and finding.cst_um > 330  # thickened
    assert set(finding.subfield_um) >= {"central", "outer_temporal"}
    assert scan.spacing_mm == pytest.approx((0.25, 0.0075, 6.0 / 255), rel=1e-4)
    assert scan.shape == (25, 256, 256)
    thickness = np.load(io.BytesIO((settings.data_path / str(scan.thickness_map)).read_bytes()))
    assert thickness.dtype == np.float32 and thickness.shape == (25, 256)
    layers = cv2.imread(str(settings.data_path / str(scan.bscan_layers)), cv2.IMREAD_COLOR)
    assert layers is not None and layers.shape[2] == 3
    assert (layers[:, :, 1].astype(int) - layers[:, :, 0]).max() > 100  # the green ILM line
    kept = oct_layers(services.blobs, scan)  # every B-scan's boundaries and fluid
    assert kept is not None and kept.ilm_px.shape == kept.rpe_px.shape == (25, 256)
    assert kept.fluid.shape == (25, 256, 256) and (kept.row_factor, kept.ascan_factor) == (1, 1)
    middle = kept.rpe_px[12] - kept.ilm_px[12]
    assert np.nanmedian(middle) * 7.5 > 200  # ILM above the RPE: a retina, in µm
    assert (settings.data_path / str(scan.layers)).stat().st_size < 200_000
    quality = services.store.one(
        "SELECT gradable FROM quality_reports WHERE capture_pk = ?", (capture_id,)
    )
    assert quality["gradable"] == 1
    events = [
        json.loads(e["detail"])
        for e in services.store.query("SELECT detail FROM audit_events ORDER BY seq")
    ]
    analysis = [e for e in events if e.get("stage") == "oct_analysis"]
    assert analysis and analysis[0]["cst_um"] == finding.cst_um
    outcome = wait_for(lambda: services.store.one("SELECT payload FROM visit_outcomes"))
    left = next(e for e in json.loads(outcome["payload"])["eyes"] if e["eye"] == "L")
    assert left["oct_capture_ids"] == [capture_id]
    exposition = wait_for(
        lambda: (lambda text: 'screening="oct_measured"' in text and text)(
            services.metrics.exposition().decode()
        )
    )  # observed just after the result's transaction
    assert 'stage="oct_measure"' in exposition


def test_an_ungradable_volume_gets_its_retake_advice(services: Any) -> None:
    capture_id = _ingest(services, opt_bytes("R", defect="low_signal", strength=0.95))
    record = _record(services, capture_id)
    assert record.gradable is False and record.data["status"] == "measured"
    assert "oct_low_signal" in record.quality["reasons"]
    assert any("Weak signal" in g for g in record.quality["guidance"])
    finding = (record.oct.finding if record.oct else None) or {}
    assert finding["gradable"] is False and finding["cst_um"] is None
    assert record.oct is not None and record.oct.thickness_map is None


def test_a_volume_without_spacing_is_stored_forwarded_and_not_analysed(
    settings: Settings,
) -> None:
    from appliance.runtime.services import Services

    volume = np.full((4, 80, 80), 40, np.uint8)
    ds = opt_dataset(volume, (0.25, 0.0075, 0.02), "R")
    del ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    archive = Destination("pacs", "127.0.0.1", free_port(), "NOBODY", timeout=2)
    services = Services(settings.replace(destinations=(archive,)))
    services.start(dicom=False, hotfolder=False)
    try:
        capture_id = _ingest(services, buffer.getvalue())
        record = _record(services, capture_id)
        assert record.data["status"] == "not_analysed"
        assert record.data["message"] == (
            "OCT received and stored; not analysed: the object gives no Pixel Spacing "
            "(axial and lateral size of a pixel)."
        )
        status = services.store.scalar("SELECT status FROM captures WHERE id = ?", (capture_id,))
        assert status == "processed"
        assert record.oct is not None and record.oct.finding is None
        job = services.store.one(
            "SELECT kind, sop_instance_uid FROM outbox_jobs WHERE file_path = "
            "(SELECT file_path FROM captures WHERE id = ?)",
            (capture_id,),
        )
        assert job is not None and job["kind"] == "received"  # forwarded as received
        # the worker still answers: the next volume is measured
        record = _record(services, _ingest(services, opt_bytes("R")))
        assert record.data["status"] == "measured"
    finally:
        services.stop()


def test_a_persons_eye_decision_moves_or_excludes_an_oct(services: Any) -> None:
    capture_id = _ingest(services, opt_bytes("R"))
    _record(services, capture_id)

    def oct_eyes() -> dict[str, list[int]]:
        row = services.store.one("SELECT payload FROM visit_outcomes ORDER BY id DESC LIMIT 1")
        return {e["eye"]: e["oct_capture_ids"] for e in json.loads(row["payload"])["eyes"]}

    assert wait_for(lambda: oct_eyes()["R"] == [capture_id])
    services.eye_labels.decide(
        capture_id, "relabel", eye="L", reason="scanned the left eye", user="op1", role="operator"
    )
    assert oct_eyes() == {"L": [capture_id], "R": []}
    services.eye_labels.decide(
        capture_id, "exclude", reason="another patient's scan", user="op1", role="operator"
    )
    assert oct_eyes() == {"L": [], "R": []}


def test_a_visits_oct_scans_for_the_documents(services: Any) -> None:
    from appliance.pipeline.oct import thickness_map, visit_scans
    from appliance.visits import scope_of

    header = OptHeader(patient_id="DOCS-1", study_instance_uid="1.2.826.0.1.3680043.8.498.77")
    measured = _ingest(services, opt_bytes("R", header=header))
    _record(services, measured)
    row = services.pipeline.capture_row(measured)
    visit = scope_of(row)
    [scan] = visit_scans(services.store, visit.where, visit.params)
    assert scan.capture_id == measured and scan.file_path == row["file_path"]
    assert scan.sop_instance_uid == row["sop_instance_uid"]
    assert scan.finding is not None and scan.finding.laterality == "R"
    thickness = thickness_map(services.blobs, scan.record)
    assert thickness is not None and thickness.shape == (25, 256)
    assert scan.record.map_spacing_mm == pytest.approx((0.25, 6.0 / 255), rel=1e-4)
    assert float(np.nanmedian(thickness)) > 200  # µm
