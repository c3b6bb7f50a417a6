"""An OCT volume's DICOM Segmentation (retina, fluid) in the pipeline: owed in its analysis
transaction and built right after, exactly once (a crash, a failed build, a rebuild: one object,
the same bytes), queued to every destination, made of the stored layers on the OPT's grid; a
volume without a thickness map (not gradable) gets none."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pydicom
import pytest

from appliance.config import Settings
from appliance.dicom.oct_seg import FLUID, RETINA, SEGMENTATION, label_volume
from appliance.pipeline import due, oct_documents
from appliance.pipeline.oct import layers, visit_scans
from tests.pipeline.test_documents_due import Crash, crash_at
from tests.pipeline.test_oct_documents import ROOT, _ingest, _jobs, _objects, _open

KIND = oct_documents.SEG_KIND


def _segments(ds: pydicom.Dataset, frames: int) -> np.ndarray:
    """The object's segments back as one label array on the OPT's frames."""
    pixels = ds.pixel_array.reshape(int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns))
    out = np.zeros((frames, ds.Rows, ds.Columns), np.uint8)
    for index, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        frame = int(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedFrameNumber)
        out[frame - 1][pixels[index] > 0] = number
    return out


def test_a_gradable_volume_gets_one_segmentation_right_after_its_analysis(
    settings: Settings,
) -> None:
    services = _open(settings)
    try:
        capture_id = _ingest(services, "SEG-1")
        services.pipeline.drain()
        [row] = _objects(services, KIND)
        [scan] = visit_scans(services.store, "c.id = ?", (capture_id,))
        assert row["capture_pk"] == capture_id and row["sop_class_uid"] == SEGMENTATION
        assert row["sop_instance_uid"].startswith(ROOT)
        assert json.loads(row["references_json"]) == [scan.sop_instance_uid]
        assert _jobs(services, row["sop_instance_uid"]) == ["pacs", "web"]
        assert due.counts(services.store) == {"due": 0, "dead": 0}
        data = services.blobs.read(row["file_path"])
        ds = pydicom.dcmread(io.BytesIO(data))
        opt = pydicom.dcmread(services.blobs.resolve(scan.file_path), stop_before_pixels=True)
        assert ds.FrameOfReferenceUID == opt.FrameOfReferenceUID
        assert ds.StudyInstanceUID == opt.StudyInstanceUID and ds.PatientID == opt.PatientID
        # the stored layers on the OPT's grid, segment by segment
        stored = layers(services.blobs, scan.record)
        assert stored is not None
        frames = int(opt.NumberOfFrames)
        expected = label_volume(
            stored.ilm_px, stored.rpe_px, stored.fluid, row_factor=stored.row_factor,
            ascan_factor=stored.ascan_factor, frames=frames, rows=int(opt.Rows),
            columns=int(opt.Columns),
        )  # fmt: skip
        back = _segments(ds, frames)
        assert np.array_equal(back, expected)
        assert (back == RETINA).sum() > 0.1 * back.size  # the retina is a real band
        assert set(np.unique(back)) <= {0, RETINA, FLUID}
        # when the OPT was received: a rebuild is the same object to the byte
        received = services.store.scalar(
            "SELECT received_at FROM captures WHERE id = ?", (capture_id,)
        )
        assert ds.ContentDate == received[:10].replace("-", "")
        assert oct_documents.owed_segmentation(services.store, services.blobs, capture_id,
                                               ROOT) is None  # fmt: skip
        again = oct_documents.build_segmentation(
            services.blobs, capture_pk=capture_id, scan=scan, uid_root=ROOT, received_at=received,
            device=oct_documents.appliance_device(services.settings),  # the same appliance
        )  # fmt: skip
        assert again is not None and again["sop_instance_uid"] == row["sop_instance_uid"]
        assert services.blobs.read(again["file_path"]) == data
        assert services.audit.verify().ok
    finally:
        services.stop()


def test_a_volume_not_gradable_gets_no_segmentation(settings: Settings) -> None:
    services = _open(settings)
    try:
        _ingest(services, "SEG-2", defect="low_signal", strength=0.95)
        services.pipeline.drain()
        [scan] = visit_scans(services.store, "1 = 1", ())
        assert scan.finding is not None and not scan.finding.gradable
        assert scan.record.layers  # its layers are kept (the review draws them), yet no object
        assert _objects(services, KIND) == [] and _objects(services, "opm") == []
        assert due.counts(services.store) == {"due": 0, "dead": 0}
    finally:
        services.stop()


def test_a_failed_build_stays_owed_and_is_built_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = _open(settings)
    real = oct_documents.segmentation_dataset
    try:
        monkeypatch.setattr(oct_documents, "segmentation_dataset", lambda *a, **k: 1 / 0)
        capture_id = _ingest(services, "SEG-3")
        services.pipeline.drain()
        assert _objects(services, KIND) == [] and len(_objects(services, "opm")) == 1
        [owed] = services.store.query("SELECT * FROM documents_due WHERE kind = ?", (KIND,))
        assert owed["photo_pk"] == capture_id and owed["trigger"] == "analysis"
        assert owed["attempts"] == 1 and "ZeroDivisionError" in owed["last_error"]
        monkeypatch.setattr(oct_documents, "segmentation_dataset", real)
        later = time.time() + due.RETRY_SECONDS + 1
        services.pipeline.issuer.issue_due(later)
        services.pipeline.issuer.issue_due(later + 1)
        [row] = _objects(services, KIND)
        assert row["capture_pk"] == capture_id
        assert _jobs(services, row["sop_instance_uid"]) == ["pacs", "web"]
        assert due.counts(services.store) == {"due": 0, "dead": 0}
    finally:
        services.stop()


def test_a_crash_after_the_analysis_leaves_it_owed_and_then_one(settings: Settings) -> None:
    services = _open(settings)
    try:
        capture_id = _ingest(services, "SEG-4")
        services.pipeline.step_hook = crash_at("outcome")  # committed, not yet built
        with pytest.raises(Crash):
            services.pipeline.process(capture_id)
        assert _objects(services, KIND) == []
        assert due.counts(services.store) == {"due": 1, "dead": 0}
        services.pipeline.step_hook = lambda step: None
        services.pipeline.process(capture_id)  # a restart: processed, nothing analysed again
        services.pipeline.issue_due()
        services.pipeline.issue_due()
        assert len(_objects(services, KIND)) == 1
        assert due.counts(services.store) == {"due": 0, "dead": 0}
    finally:
        services.stop()
