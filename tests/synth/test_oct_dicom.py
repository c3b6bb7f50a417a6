"""Synthetic OCT volumes as DICOM OPT objects: every encoding round-trips, dciodvfy is clean
apart from its own contradiction on one-object OPT, and the appliance reads back the geometry."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from appliance.capture.oct import read_oct
from appliance.capture.pixels import Limits
from appliance.synth.oct import GEOMETRIES, OctCase, healthy_case, render_oct
from appliance.synth.oct.dicom import (
    ENCODINGS,
    OPT_SOP_CLASS,
    VALIDATOR_CONFLICTS,
    OptHeader,
    encode_opt,
    opt_dataset,
)
from tests.conftest import require_tool


def _case(eye: str = "R") -> OctCase:
    return healthy_case(11, GEOMETRIES["small"], eye)


@pytest.fixture(scope="module")
def rendered() -> tuple[np.ndarray, tuple[float, float, float]]:
    r = render_oct(_case())
    return r.volume, r.spacing_mm


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_every_encoding_round_trips_with_its_geometry(
    rendered: tuple[np.ndarray, tuple[float, float, float]], encoding: str
) -> None:
    volume, spacing = rendered
    header = OptHeader(manufacturer="Heidelberg Engineering", model="Spectralis")
    data = encode_opt(opt_dataset(volume, spacing, "R", header), encoding)
    ds = pydicom.dcmread(io.BytesIO(data))
    assert ds.SOPClassUID == OPT_SOP_CLASS and ds.Modality == "OPT"
    assert ds.file_meta.TransferSyntaxUID == ENCODINGS[encoding]
    assert int(ds.NumberOfFrames) == volume.shape[0]
    pixels = ds.pixel_array
    assert pixels.shape == volume.shape
    if encoding == "jpeg":
        assert ds.LossyImageCompression == "01"
        assert float(np.abs(pixels.astype(int) - volume.astype(int)).mean()) < 4
    else:
        assert np.array_equal(pixels, volume)  # lossless
    read = read_oct(data, Limits())
    assert read.problem is None and read.laterality == "R"
    assert read.device == "Heidelberg Engineering Spectralis"
    assert read.spacing_mm == pytest.approx(spacing, rel=1e-4)
    assert read.volume is not None and read.volume.shape == volume.shape


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_dciodvfy_finds_nothing_but_its_own_concatenation_conflict(
    rendered: tuple[np.ndarray, tuple[float, float, float]], encoding: str, tmp_path: Path
) -> None:
    dciodvfy = require_tool("dciodvfy")
    volume, spacing = rendered
    path = tmp_path / "opt.dcm"
    path.write_bytes(encode_opt(opt_dataset(volume, spacing, "L"), encoding))
    run = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=120)
    output = run.stdout + run.stderr
    assert "OphthalmicTomographyImage" in output
    errors = [line.removeprefix("Error - ") for line in output.splitlines()
              if line.startswith("Error")]  # fmt: skip
    assert sorted(errors) == sorted(VALIDATOR_CONFLICTS), output


def test_the_writer_refuses_what_is_not_a_volume() -> None:
    with pytest.raises(ValueError, match="uint8"):
        opt_dataset(np.zeros((3, 64, 64), np.float32), (0.1, 0.004, 0.01), "R")
    with pytest.raises(ValueError, match="eye"):
        opt_dataset(np.zeros((3, 64, 64), np.uint8), (0.1, 0.004, 0.01), "X")
    with pytest.raises(ValueError, match="encoding"):
        encode_opt(opt_dataset(np.zeros((3, 64, 64), np.uint8), (0.1, 0.004, 0.01), "R"), "png")
