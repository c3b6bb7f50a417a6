"""The retina and fluid of an OCT volume as a DICOM Segmentation: dciodvfy finds no error and
no warning; each segment is the stored layers scaled back to the OPT's grid (per A-scan: the
rows between the ILM and the RPE); each frame names its OPT frame, position and Frame of
Reference; the same inputs give the same bytes; an OPT that places no B-scan gets none."""

from __future__ import annotations

import io
import math
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from appliance.dicom import oct_seg
from appliance.synth.oct.dicom import OptHeader, opt_dataset
from tests.conftest import require_tool

ROW_FACTOR, ASCAN_FACTOR = 4, 2
FRAMES, ROWS, COLUMNS = 6, 262, 131  # rows / A-scans left over: the even cut at the edges
CREATED = datetime(2026, 12, 5, 9, 30, 15, tzinfo=UTC)
RETINA_ALGORITHM = oct_seg.Algorithm("classical OCT baseline: ILM/RPE paths", "1.0",
                                     oct_seg.EDGE_DETECTION)  # fmt: skip
FLUID_ALGORITHM = oct_seg.Algorithm("classical OCT baseline: dark-pocket fluid", "1.0",
                                    oct_seg.MORPHOLOGICAL_OPERATIONS)  # fmt: skip


def _opt(frames: int = FRAMES, rows: int = ROWS, columns: int = COLUMNS) -> Dataset:
    volume = np.random.default_rng(5).integers(0, 255, (frames, rows, columns), dtype=np.uint8)
    header = OptHeader(patient_id="SEG-1", study_instance_uid="1.2.826.0.1.3680043.8.498.77")
    return opt_dataset(volume, (0.12, 0.0039, 0.0117), "R", header)


def _layers(
    frames: int = FRAMES, rows: int = ROWS, columns: int = COLUMNS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ILM / RPE (binned rows, sub-row or whole, NaN in places, a blank B-scan) and a fluid mask
    (pockets inside the retina and one pixel outside it)."""
    rng = np.random.default_rng(8)
    binned_rows, binned_ascans = rows // ROW_FACTOR, columns // ASCAN_FACTOR
    ilm = rng.uniform(5.0, 20.0, (frames, binned_ascans)).astype(np.float32)
    rpe = (ilm + rng.uniform(10.0, 30.0, ilm.shape)).astype(np.float32)
    ilm[:, ::3], rpe[:, ::4] = np.round(ilm[:, ::3]), np.round(rpe[:, ::4])  # on a row: r >= b
    ilm[1, 10:14] = np.nan  # an ILM not found: no retina there
    rpe[frames - 1, :] = np.nan  # a blank B-scan
    fluid = np.zeros((frames, binned_rows, binned_ascans), bool)
    for frame in (2, 3):
        for ascan in range(20, 30):
            top = math.ceil(float(ilm[frame, ascan])) + 2
            fluid[frame, top : top + 4, ascan] = True
    fluid[4, binned_rows - 1, 0] = True  # below the RPE: fluid, not retina
    return ilm, rpe, fluid


def _build(source: Dataset | None = None, **layers: Any) -> bytes:
    source = source if source is not None else _opt()
    ilm, rpe, fluid = layers.get("layers") or _layers()
    labels = oct_seg.label_volume(
        ilm, rpe, fluid, row_factor=ROW_FACTOR, ascan_factor=ASCAN_FACTOR,
        frames=int(source.NumberOfFrames), rows=int(source.Rows), columns=int(source.Columns),
    )  # fmt: skip
    seg = oct_seg.segmentation_dataset(
        labels,
        source=source,
        laterality="R",
        retina_algorithm=RETINA_ALGORITHM,
        fluid_algorithm=FLUID_ALGORITHM,
        device={
            "manufacturer": "Demonstration",
            "model": "retina-appliance",
            "serial": "0001",
            "version": "1.0",
        },  # fmt: skip
        series_instance_uid="1.2.826.0.1.3680043.8.498.78",
        sop_instance_uid="1.2.826.0.1.3680043.8.498.79",
        dimension_organization_uid="1.2.826.0.1.3680043.8.498.80",
        created=CREATED,
    )
    buffer = io.BytesIO()
    seg.save_as(buffer)
    return buffer.getvalue()


def _expected(
    ilm: np.ndarray, rpe: np.ndarray, fluid: np.ndarray, rows: int, columns: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each segment on the OPT's grid, per A-scan from the boundaries (written apart from
    label_volume): retina rows from top + f * ceil(ILM) to top + f * ceil(RPE), fluid blocks."""
    frames, binned_rows, binned_ascans = fluid.shape
    top = (rows - binned_rows * ROW_FACTOR) // 2
    left = (columns - binned_ascans * ASCAN_FACTOR) // 2
    band = np.zeros((frames, rows, columns), bool)
    for frame in range(frames):
        for column in range(left, left + binned_ascans * ASCAN_FACTOR):
            a = (column - left) // ASCAN_FACTOR
            upper, lower = float(ilm[frame, a]), float(rpe[frame, a])
            if math.isnan(upper) or math.isnan(lower):
                continue
            first = top + ROW_FACTOR * max(math.ceil(upper), 0)
            last = top + ROW_FACTOR * min(math.ceil(lower), binned_rows)
            band[frame, first:last, column] = True
    wet = np.zeros((frames, rows, columns), bool)
    block = np.kron(fluid, np.ones((ROW_FACTOR, ASCAN_FACTOR), bool)).astype(bool)
    wet[:, top : top + block.shape[1], left : left + block.shape[2]] = block
    return band & ~wet, wet


def _segments(ds: Dataset) -> dict[int, np.ndarray]:
    """Each segment's frames put back on the OPT's frames by their Derivation Image reference."""
    pixels = ds.pixel_array.reshape(int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns))
    out = {n: np.zeros((FRAMES, ds.Rows, ds.Columns), bool) for n in (1, 2)}
    for index, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        source = item.DerivationImageSequence[0].SourceImageSequence[0]
        frame = int(source.ReferencedFrameNumber) - 1
        assert not out[number][frame].any(), "one frame per segment and B-scan"
        out[number][frame] = pixels[index] > 0
    return out


def test_dciodvfy_finds_no_error_and_no_warning(tmp_path: Path) -> None:
    path = tmp_path / "seg.dcm"
    path.write_bytes(_build())
    run = subprocess.run(
        [require_tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=60
    )
    output = run.stdout + run.stderr
    problems = [line for line in output.splitlines() if line.startswith(("Error", "Warning"))]
    assert problems == [], output
    assert "Segmentation" in output  # the IOD it checked against


def test_each_segment_is_the_stored_layers_scaled_back_to_the_opt() -> None:
    source = _opt()
    ilm, rpe, fluid = _layers()
    ds = pydicom.dcmread(io.BytesIO(_build(source)))
    retina, wet = _expected(ilm, rpe, fluid, ROWS, COLUMNS)
    segments = _segments(ds)
    assert np.array_equal(segments[oct_seg.RETINA], retina)
    assert np.array_equal(segments[oct_seg.FLUID], wet)
    assert retina.any() and wet.any() and not (retina & wet).any()
    assert wet[4].sum() == ROW_FACTOR * ASCAN_FACTOR  # the pocket below the RPE stays fluid
    assert not segments[oct_seg.RETINA][FRAMES - 1].any()  # the blank B-scan has none
    # empty B-scans have no frame: retina in 5, fluid in 3 of the 6
    assert int(ds.NumberOfFrames) == 5 + 3
    assert (ds.Rows, ds.Columns, ds.BitsAllocated) == (ROWS, COLUMNS, 1)
    assert ds.SegmentationType == "BINARY" and ds.SegmentsOverlap == "NO"


def test_it_references_the_opt_frame_by_frame_in_its_frame_of_reference() -> None:
    source = _opt()
    ds = pydicom.dcmread(io.BytesIO(_build(source)))
    assert ds.SOPClassUID == oct_seg.SEGMENTATION and ds.Modality == "SEG"
    assert ds.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert (ds.StudyInstanceUID, ds.PatientID) == (source.StudyInstanceUID, "SEG-1")
    for item in ds.PerFrameFunctionalGroupsSequence:
        derivation = item.DerivationImageSequence[0]
        reference = derivation.SourceImageSequence[0]
        assert reference.ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert reference.ReferencedSOPClassUID == source.SOPClassUID
        frame = int(reference.ReferencedFrameNumber)
        position = source.PerFrameFunctionalGroupsSequence[frame - 1].PlanePositionSequence[0]
        assert [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient] == (
            pytest.approx([float(v) for v in position.ImagePositionPatient], abs=1e-6)
        )
    [referenced_series] = ds.ReferencedSeriesSequence
    assert referenced_series.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == (
        source.SOPInstanceUID
    )


def test_segments_are_coded_and_say_demonstration() -> None:
    ds = pydicom.dcmread(io.BytesIO(_build()))
    assert "not clinically validated" in ds.SeriesDescription
    assert "not clinically validated" in ds.ContentDescription
    retina, fluid = ds.SegmentSequence

    def code(item: Dataset) -> tuple[str, str]:
        return (item.CodeValue, item.CodingSchemeDesignator)

    assert retina.SegmentLabel == "retina (ILM to RPE)" and fluid.SegmentLabel == "fluid"
    assert code(retina.SegmentedPropertyCategoryCodeSequence[0]) == ("91723000", "SCT")
    kind = retina.SegmentedPropertyTypeCodeSequence[0]
    assert code(kind) == ("5665001", "SCT")
    assert code(kind.SegmentedPropertyTypeModifierCodeSequence[0]) == ("24028007", "SCT")
    assert code(fluid.SegmentedPropertyCategoryCodeSequence[0]) == ("91720002", "SCT")
    assert code(fluid.SegmentedPropertyTypeCodeSequence[0]) == ("32457005", "SCT")
    assert code(fluid.AnatomicRegionSequence[0]) == ("5665001", "SCT")
    for item, algorithm in ((retina, RETINA_ALGORITHM), (fluid, FLUID_ALGORITHM)):
        assert item.SegmentAlgorithmType == "AUTOMATIC"
        [made_by] = item.SegmentationAlgorithmIdentificationSequence
        assert (made_by.AlgorithmName, made_by.AlgorithmVersion) == (algorithm.name, "1.0")
        assert code(made_by.AlgorithmFamilyCodeSequence[0]) == algorithm.family[:2]


def test_the_same_inputs_give_the_same_bytes() -> None:
    source = _opt()
    first, second = _build(source), _build(source)
    assert first == second
    ds = pydicom.dcmread(io.BytesIO(first))
    assert (ds.ContentDate, ds.ContentTime) == ("20261205", "093015")
    assert ds.DimensionOrganizationSequence[0].DimensionOrganizationUID.endswith(".80")


def test_a_volume_the_size_of_a_spectralis_scan_stays_within_its_bound() -> None:
    """49 B-scans of 496 x 512: at most two one-bit frames per B-scan plus the header."""
    frames, rows, columns = 49, 496, 512
    source = _opt(frames, rows, columns)
    data = _build(source, layers=_layers(frames, rows, columns))
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    assert int(ds.NumberOfFrames) == (frames - 1) + 2 + 1  # retina, fluid in 2 + 1 B-scans
    frame_bytes = rows * columns // 8
    assert int(ds.NumberOfFrames) * frame_bytes < len(data) < 52 * frame_bytes + 200_000


def test_an_opt_that_places_no_bscan_gets_no_segmentation() -> None:
    source = _opt()
    del source.FrameOfReferenceUID
    with pytest.raises(oct_seg.NoGeometry, match="Frame of Reference"):
        _build(source)
    source = _opt()
    del source.PerFrameFunctionalGroupsSequence[2].PlanePositionSequence
    with pytest.raises(oct_seg.NoGeometry, match="PlanePositionSequence"):
        _build(source)


def test_layers_that_do_not_fit_the_opt_are_refused() -> None:
    with pytest.raises(ValueError, match="do not fit the OPT's 5 frames"):
        _build(_opt(frames=5))
    ilm, rpe, fluid = _layers()
    with pytest.raises(ValueError, match="layers disagree"):
        _build(layers=(ilm[:, :-1], rpe, fluid))
    empty = np.full_like(ilm, np.nan)
    with pytest.raises(ValueError, match="nothing is segmented"):
        _build(layers=(empty, empty, np.zeros_like(fluid)))
