"""Ophthalmic Photography objects: round trip and dciodvfy with zero errors."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import pydicom

from appliance.dicom.op import OP_8BIT
from tests.conftest import fundus, op_bytes, require_tool


def test_round_trip_keeps_the_camera_jpeg_and_decodes() -> None:
    rgb = fundus(seed=3, size=(480, 640))
    data = op_bytes(rgb, laterality="L")
    ds = pydicom.dcmread(io.BytesIO(data))
    assert ds.SOPClassUID == OP_8BIT and ds.Modality == "OP"
    assert ds.ImageLaterality == "L" and ds.LossyImageCompression == "01"
    assert ds.LossyImageCompressionMethod == "ISO_10918_1"
    pixels = ds.pixel_array
    assert pixels.shape == rgb.shape
    assert float(np.abs(pixels.astype(int) - rgb.astype(int)).mean()) < 6  # colour space right


def test_op_passes_dciodvfy(tmp_path: Path) -> None:
    dciodvfy = require_tool("dciodvfy")
    path = tmp_path / "op.dcm"
    path.write_bytes(op_bytes(fundus(seed=4, size=(480, 640))))
    run = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60)
    output = run.stdout + run.stderr
    assert "OphthalmicPhotography8BitImage" in output
    errors = [line for line in output.splitlines() if line.startswith("Error")]
    assert errors == [], output
