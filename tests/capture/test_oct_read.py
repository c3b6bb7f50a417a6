"""An OPT object read back for measurement: geometry from wherever the object gives it, and a
plain reason (never a crash) for a volume that cannot be measured."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
from pydicom.dataset import Dataset

from appliance.capture.oct import read_oct
from appliance.capture.pixels import Limits
from appliance.errors import RejectedInput, TooLarge
from appliance.synth.oct.dicom import opt_dataset

SPACING = (0.25, 0.0075, 0.0235)


def _volume(frames: int = 5, rows: int = 96, columns: int = 96) -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.integers(0, 255, (frames, rows, columns), dtype=np.uint8)


def _bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _measures(ds: Dataset) -> Dataset:
    return ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]


def _no_pixel_spacing(ds: Dataset) -> None:
    del _measures(ds).PixelSpacing


def _absurd_axial(ds: Dataset) -> None:
    _measures(ds).PixelSpacing = [5.0, 0.0235]


def _no_frame_distance(ds: Dataset) -> None:
    del _measures(ds).SpacingBetweenSlices
    del _measures(ds).SliceThickness
    for item in ds.PerFrameFunctionalGroupsSequence:
        del item.PlanePositionSequence


def _no_eye(ds: Dataset) -> None:
    del ds.ImageLaterality
    del ds.SharedFunctionalGroupsSequence[0].FrameAnatomySequence[0].FrameLaterality


def _narrow(ds: Dataset) -> None:
    _measures(ds).PixelSpacing = [0.0075, 0.002]  # 96 A-scans x 2 µm = 0.19 mm wide


CASES: list[tuple[Callable[[Dataset], None], str]] = [
    (_no_pixel_spacing, "no Pixel Spacing"),
    (_absurd_axial, "axial pixel size (5.0 mm) is outside"),
    (_no_frame_distance, "no distance between B-scans"),
    (_no_eye, "does not say which eye"),
    (_narrow, "scan width (0.19 mm) is outside"),
]


@pytest.mark.parametrize(("damage", "problem"), CASES)
def test_a_volume_that_cannot_be_measured_says_why(
    damage: Callable[[Dataset], None], problem: str
) -> None:
    ds = opt_dataset(_volume(), SPACING, "R")
    damage(ds)
    read = read_oct(_bytes(ds), Limits())
    assert read.problem is not None and problem in read.problem
    assert read.volume is None


def test_the_distance_between_b_scans_comes_from_the_plane_positions_when_not_given() -> None:
    ds = opt_dataset(_volume(), SPACING, "L")
    del _measures(ds).SpacingBetweenSlices
    del _measures(ds).SliceThickness
    read = read_oct(_bytes(ds), Limits())
    assert read.problem is None and read.laterality == "L"
    assert read.spacing_mm == pytest.approx(SPACING, rel=1e-4)


def test_too_few_b_scans_are_not_measured() -> None:
    read = read_oct(_bytes(opt_dataset(_volume(frames=2), (1.0, 0.0075, 0.0235), "R")), Limits())
    assert read.problem is not None and "too small to measure" in read.problem


def test_the_decoded_volume_is_bounded() -> None:
    data = _bytes(opt_dataset(_volume(), SPACING, "R"))
    with pytest.raises(TooLarge) as refused:
        read_oct(data, Limits(max_inflated_bytes=5 * 96 * 96 - 1))
    assert refused.value.reason == "volume_too_large"
    with pytest.raises(TooLarge):
        read_oct(data, Limits(max_image_frames=4))


def test_a_photograph_is_not_read_as_an_oct() -> None:
    from tests.conftest import op_bytes

    with pytest.raises(RejectedInput) as refused:
        read_oct(op_bytes(), Limits())
    assert refused.value.reason == "not_oct"


def test_a_volume_too_large_to_measure_is_kept_but_not_measured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import appliance.capture.oct as oct_read

    monkeypatch.setattr(oct_read, "MAX_MEASURED_BYTES", 5 * 96 * 96 - 1)
    read = read_oct(_bytes(opt_dataset(_volume(), SPACING, "R")), Limits())
    assert read.volume is None and read.problem is not None
    assert "MiB this appliance measures" in read.problem


@pytest.mark.parametrize("written", ["r", " R", "R"])
def test_ingest_reads_the_eye_of_a_lower_case_or_padded_laterality(written: str) -> None:
    """Image Laterality is a CS of enumerated R / L; a camera that writes it in lower case
    still names the eye of the capture (as read_oct does for the measurement)."""
    import warnings

    from appliance.capture.decode import examine

    ds = opt_dataset(_volume(), (0.1, 0.004, 0.02), "R")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns on writing a CS it finds invalid
        ds.ImageLaterality = written
    assert examine(_bytes(ds), Limits()).laterality == "R"


def test_ingest_and_the_measurement_name_the_same_eye() -> None:
    """The capture's eye (ingest) follows the rule the OCT measurement counts: Image and Frame
    Laterality, the series' Laterality only when they say nothing; none when they disagree."""
    from appliance.capture.decode import examine

    framed = opt_dataset(_volume(), (0.1, 0.004, 0.02), "L")
    del framed.ImageLaterality
    framed.Laterality = "R"  # the series says R, every frame says L
    assert examine(_bytes(framed), Limits()).laterality == "L"
    assert read_oct(_bytes(framed), Limits()).laterality == "L"
    both = opt_dataset(_volume(), (0.1, 0.004, 0.02), "L")
    both.ImageLaterality = "R"  # the image says R, its frames L
    assert examine(_bytes(both), Limits()).laterality is None
    assert read_oct(_bytes(both), Limits()).laterality is None
