"""Every compressed transfer syntax the SCP accepts decodes to the same pixels (lossless ones)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from appliance.capture import Limits, decode_rgb, examine
from tests.conftest import fundus, op_bytes


def _native(ds: Any, rgb: np.ndarray) -> Any:
    """Turn a JPEG OP into native RGB pixels, ready for a lossless encoder."""
    ds.PixelData = rgb.tobytes()
    ds["PixelData"].VR = "OB"
    ds.PhotometricInterpretation = "RGB"
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.LossyImageCompression = "00"
    for keyword in ("LossyImageCompressionRatio", "LossyImageCompressionMethod"):
        delattr(ds, keyword)
    return ds


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless], ids=str)
def test_lossless_syntaxes_decode_exactly(syntax: str) -> None:
    rgb = fundus(seed=8, size=(192, 256))
    ds = _native(pydicom.dcmread(io.BytesIO(op_bytes(rgb))), rgb)
    ds.compress(syntax)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    limits = Limits()
    found = examine(data, limits)
    assert (found.width, found.height) == (256, 192)
    assert np.array_equal(decode_rgb(data, limits), rgb)


def test_sixteen_bit_monochrome_is_scaled_to_eight_bits() -> None:
    rgb = fundus(seed=9, size=(128, 160))
    green16 = rgb[:, :, 1].astype(np.uint16) << 4  # 12 bits stored
    ds = pydicom.dcmread(io.BytesIO(op_bytes(rgb)))
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.5.2"
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    del ds.PlanarConfiguration
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelData = green16.tobytes()
    ds["PixelData"].VR = "OW"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    decoded = decode_rgb(buffer.getvalue(), Limits())
    assert decoded.shape == (128, 160, 3)
    assert np.array_equal(decoded[:, :, 0], rgb[:, :, 1])
