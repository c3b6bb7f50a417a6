"""Pixel Data checked before an image is acknowledged: limits, codestream structure, decode.

``check_pixels`` runs at ingest on every DICOM image, whichever path it came by. In order, each
step cheap before the next one costs memory:

1. the limits: pixels per frame (``max_image_pixels``), frames (``max_image_frames``);
2. the encoding matches the transfer syntax: native Pixel Data of the length the header implies,
   or encapsulated Pixel Data for a compressed transfer syntax (not native bytes under a JPEG
   transfer syntax);
3. each frame's codestream says the same size as the header (JPEG / JPEG-LS SOF, JPEG 2000 SIZ),
   so a 15000 x 15000 header over a small JPEG is refused before a 675 MB array is allocated;
4. every frame decoded, one at a time, with the decoder the analysis uses.

Every refusal is a :class:`RejectedInput` (or :class:`TooLarge`) with a stable reason.
"""

from __future__ import annotations

import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pydicom.pixels
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import (
    JPEG2000,
    UID,
    JPEG2000Lossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from appliance.errors import RejectedInput, TooLarge

_JPEG2000 = {JPEG2000, JPEG2000Lossless, "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202"}
_JPEG_LS = {JPEGLSLossless, JPEGLSNearLossless}
# SOF markers: C0-CF except DHT (C4), JPG (C8) and DAC (CC); F7 is JPEG-LS SOF55
_SOF_JPEG = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_SOF_JPEG_LS = {0xF7}


@dataclass(frozen=True)
class Limits:
    max_image_pixels: int = 60_000_000
    max_inflated_bytes: int = 512 * 1024 * 1024
    max_image_frames: int = 1024


def check_limits(rows: int, columns: int, frames: int, limits: Limits) -> None:
    """The size limits, from the header alone."""
    if rows <= 0 or columns <= 0 or frames <= 0:
        raise RejectedInput("the image has zero rows, columns or frames", reason="bad_pixel_module")
    if rows * columns > limits.max_image_pixels:
        raise TooLarge(
            f"the image is {columns}x{rows} pixels, over the limit of {limits.max_image_pixels}",
            reason="image_too_large",
        )
    if frames > limits.max_image_frames:
        raise TooLarge(
            f"the image has {frames} frames, over the limit of {limits.max_image_frames}",
            reason="too_many_frames",
        )


def check_pixels(ds: Dataset, limits: Limits) -> None:
    """Refuse Pixel Data that is over a limit, does not match its header, or does not decode."""
    rows, columns = int(ds.Rows), int(ds.Columns)
    frames = int(ds.get("NumberOfFrames") or 1)
    samples = int(ds.SamplesPerPixel)
    check_limits(rows, columns, frames, limits)
    if samples not in (1, 3, 4):
        raise RejectedInput(
            f"Samples per Pixel is {samples}, not 1, 3 or 4", reason="bad_pixel_module"
        )
    transfer_syntax = UID(str(ds.file_meta.TransferSyntaxUID))
    encapsulated = ds["PixelData"].is_undefined_length
    if transfer_syntax.is_encapsulated != encapsulated:
        raise RejectedInput(
            "the Pixel Data is "
            + ("encapsulated" if encapsulated else "native")
            + f" but the transfer syntax {transfer_syntax.name} says otherwise",
            reason="pixel_encoding_mismatch",
        )
    if encapsulated:
        for index, frame in enumerate(_frames(ds.PixelData, frames)):
            _check_codestream(transfer_syntax, frame, index, rows, columns, samples)
    _decode_every_frame(ds, rows, columns, samples)


def _frames(pixel_data: bytes, frames: int) -> Iterator[bytes]:
    try:
        found = 0
        for frame in generate_frames(pixel_data, number_of_frames=frames):
            found += 1
            if found > frames:
                break
            yield frame
    except (ValueError, struct.error, IndexError) as exc:
        raise RejectedInput(
            f"the encapsulated Pixel Data is malformed: {exc}"[:300], reason="undecodable_pixels"
        ) from None
    if found != frames:
        raise RejectedInput(
            f"the encapsulated Pixel Data holds {found} frame(s) where the header says {frames}",
            reason="undecodable_pixels",
        )


def _check_codestream(
    transfer_syntax: UID, frame: bytes, index: int, rows: int, columns: int, samples: int
) -> None:
    """Compare the size a frame's codestream declares with the header's."""
    if transfer_syntax == RLELossless:
        return  # a decoder-checked header of segment offsets; the decode below sees it
    if transfer_syntax in _JPEG2000:
        found = _j2k_size(frame)
    else:
        found = _jpeg_size(frame, transfer_syntax in _JPEG_LS)
    if found is None:
        raise RejectedInput(
            f"frame {index + 1} is not a {transfer_syntax.name} codestream",
            reason="undecodable_pixels",
        )
    height, width, components = found
    if (height, width) != (rows, columns) or components != samples:
        raise RejectedInput(
            f"frame {index + 1} is {width}x{height} with {components} component(s) where the "
            f"header says {columns}x{rows} with {samples}",
            reason="pixel_header_mismatch",
        )


def _jpeg_size(data: bytes, jpeg_ls: bool) -> tuple[int, int, int] | None:
    """(height, width, components) from the first SOF segment of a JPEG / JPEG-LS stream."""
    if data[:2] != b"\xff\xd8":
        return None
    offset = 2
    while offset + 4 <= len(data):
        if data[offset] != 0xFF:
            return None
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            offset += 2
            continue
        (length,) = struct.unpack(">H", data[offset + 2 : offset + 4])
        if length < 2:
            return None
        if marker in (_SOF_JPEG_LS if jpeg_ls else _SOF_JPEG):
            if offset + 10 > len(data):
                return None
            height, width = struct.unpack(">HH", data[offset + 5 : offset + 9])
            return height, width, data[offset + 9]
        if marker in (0xDA, 0xD9):  # scan or end before any frame header
            return None
        offset += 2 + length
    return None


def _j2k_size(data: bytes) -> tuple[int, int, int] | None:
    """(height, width, components) from the SIZ segment of a JPEG 2000 codestream (or JP2)."""
    start = data.find(b"\xff\x4f\xff\x51", 0, 4096)
    if start < 0 or start + 42 > len(data):
        return None
    siz = start + 4
    xsiz, ysiz, xosiz, yosiz = struct.unpack(">IIII", data[siz + 4 : siz + 20])
    (components,) = struct.unpack(">H", data[siz + 36 : siz + 38])
    return ysiz - yosiz, xsiz - xosiz, components


def _decode_every_frame(ds: Dataset, rows: int, columns: int, samples: int) -> None:
    """Decode each frame (one in memory at a time) with the decoder the analysis uses."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # raw=True: the decoder's own output, without the colour-space conversion the
            # analysis adds later (a third of the cost; it cannot fail on a decoded frame)
            for frame in pydicom.pixels.iter_pixels(ds, raw=True):
                shape = np.shape(frame)
                if shape[:2] != (rows, columns):
                    raise ValueError(f"decoded to {shape}, not {rows}x{columns}")
                if (shape[2] if len(shape) == 3 else 1) != samples:
                    raise ValueError(f"decoded to {shape}, not {samples} sample(s) per pixel")
    except Exception as exc:  # decoders raise many kinds on damaged input
        raise RejectedInput(
            f"the pixel data cannot be decoded: {type(exc).__name__}: {exc}"[:300],
            reason="undecodable_pixels",
        ) from None
