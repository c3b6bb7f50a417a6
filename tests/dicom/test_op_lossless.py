"""PNG and TIFF photographs become lossless OP objects: same pixels, dciodvfy clean."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from appliance.dicom.op import OPParameters, new_uid, op_from_image, to_bytes
from appliance.domain import PatientInfo
from tests.conftest import fundus, require_tool


def _params() -> OPParameters:
    return OPParameters(
        laterality="R",
        patient=PatientInfo(patient_id="P9", patient_name="Doe^Ann"),
        study_instance_uid=new_uid(),
        series_instance_uid=new_uid(),
        sop_instance_uid=new_uid(),
        field="disc",
    )


def _encode(pixels: np.ndarray, fmt: str) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
@pytest.mark.parametrize("grey", [False, True], ids=["colour", "grey"])
def test_pixels_are_kept_exactly_and_dciodvfy_is_clean(
    fmt: str, grey: bool, tmp_path: Path
) -> None:
    rgb = fundus(seed=8, size=(240, 320), eye="R")
    pixels = rgb[..., 1].copy() if grey else rgb
    ds = op_from_image(_encode(pixels, fmt), _params())
    assert ds.LossyImageCompression == "00" and "LossyImageCompressionMethod" not in ds
    assert ds.PhotometricInterpretation == ("MONOCHROME2" if grey else "RGB")
    path = tmp_path / "op.dcm"
    path.write_bytes(to_bytes(ds))
    again = pydicom.dcmread(path)
    assert again.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert np.array_equal(again.pixel_array, pixels)
    dciodvfy = require_tool("dciodvfy")
    run = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60)
    output = run.stdout + run.stderr
    assert "OphthalmicPhotography8BitImage" in output
    assert [line for line in output.splitlines() if line.startswith("Error")] == [], output


def test_rgba_loses_only_its_alpha_and_16_bit_is_refused() -> None:
    rgb = fundus(seed=9, size=(120, 160))
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])
    ds = op_from_image(_encode(rgba, "PNG"), _params())
    assert np.array_equal(pydicom.dcmread(io.BytesIO(to_bytes(ds))).pixel_array, rgb)
    deep = (rgb[..., 0].astype(np.uint16) * 257).astype(np.uint16)
    with pytest.raises(ValueError, match="more than 8 bits"):
        op_from_image(_encode(deep, "PNG"), _params())
