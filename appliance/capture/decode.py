"""Recognise, check and decode what a camera sends: DICOM Part 10, JPEG, PNG, TIFF.

``examine`` runs at ingest (cheap, header-level checks and a bounded parse, so bad input is
refused with a precise reason before anything is stored). ``decode_rgb`` runs on the pipeline
worker and returns an RGB uint8 array for the quality gate and the models.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from appliance.capture.frames import image_eye
from appliance.capture.pixels import Limits, check_limits, check_pixels
from appliance.domain import PatientInfo
from appliance.errors import (
    ApplianceError,
    RejectedInput,
    TooLarge,
    UnsupportedFormat,
    UnsupportedSOPClass,
)

LOGGER = logging.getLogger(__name__)

# Set explicitly (never rely on Pillow's default); ``examine`` also enforces the configured limit.
Image.MAX_IMAGE_PIXELS = 60_000_000
RASTER_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "TIFF": "image/tiff"}

SUPPORTED_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.77.1.5.1": "Ophthalmic Photography 8 Bit Image",
    "1.2.840.10008.5.1.4.1.1.77.1.5.2": "Ophthalmic Photography 16 Bit Image",
    "1.2.840.10008.5.1.4.1.1.77.1.4": "VL Photographic Image",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image",
    "1.2.840.10008.5.1.4.1.1.77.1.5.4": "Ophthalmic Tomography Image",
}
OPT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.5.4"
_DATE = re.compile(r"\d{8}")
_UID_CHARS = re.compile(r"[0-9.]+")
_UID_FORM = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
UID_MAX = 64


@dataclass(frozen=True)
class Inspection:
    """What ingest learns from a file before storing it."""

    media_type: str
    width: int
    height: int
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None
    study_instance_uid: str | None = None
    accession_number: str = ""
    study_date: str = ""
    laterality: str | None = None
    patient: PatientInfo | None = None


def sniff(data: bytes) -> str:
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "application/dicom"
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    raise UnsupportedFormat(
        "not a DICOM Part 10 file, JPEG, PNG or TIFF image", reason="unrecognised_format"
    )


def examine(data: bytes, limits: Limits) -> Inspection:
    media_type = sniff(data)
    if media_type == "application/dicom":
        ds = read_dicom(data, limits)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return _inspect_dicom(ds, limits)
        except ApplianceError:
            raise
        except Exception as exc:  # a damaged value met while reading the header fields
            raise RejectedInput(_malformed(exc)) from None
    with open_raster(data, limits) as img:
        try:
            img.load()
        except (OSError, ValueError, SyntaxError) as exc:
            raise RejectedInput(
                f"the {img.format} image is damaged or truncated: {exc}", reason="corrupt_image"
            ) from None
        return Inspection(
            media_type=RASTER_FORMATS[str(img.format)], width=img.width, height=img.height
        )


def open_raster(data: bytes, limits: Limits) -> Image.Image:
    """Open with Pillow, restricted to the allow-list, refusing decompression bombs."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=list(RASTER_FORMATS))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise TooLarge(
            f"the image has more pixels than the limit of {limits.max_image_pixels}",
            reason="image_too_large",
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise RejectedInput(f"the image cannot be read: {exc}", reason="corrupt_image") from None
    if img.width * img.height > limits.max_image_pixels:
        img.close()
        raise TooLarge(
            f"the image is {img.width}x{img.height} pixels, over the limit of "
            f"{limits.max_image_pixels}",
            reason="image_too_large",
        )
    return img


def read_dicom(data: bytes, limits: Limits) -> Dataset:
    """Parse a Part 10 file fully, inflating a Deflated dataset under a fixed cap."""
    fp = io.BytesIO(data)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            read_preamble(fp, False)
            meta: FileMetaDataset = _read_file_meta_info(fp)
            transfer_syntax = UID(str(meta.get("TransferSyntaxUID", "")))
            if not transfer_syntax:
                raise RejectedInput("the file meta has no Transfer Syntax UID", reason="bad_meta")
            if transfer_syntax == DeflatedExplicitVRLittleEndian:
                inflated = _inflate(data[fp.tell() :], limits.max_inflated_bytes)
                ds = read_dataset(io.BytesIO(inflated), is_implicit_VR=False, is_little_endian=True)
                ds.file_meta = meta
            else:
                if not transfer_syntax.is_transfer_syntax:
                    raise RejectedInput(
                        f"unknown transfer syntax {transfer_syntax}", reason="bad_transfer_syntax"
                    )
                fp.seek(0)
                ds = pydicom.dcmread(fp)
        # pydicom only warns when the data ends early, then returns what it read so far
        for warning in caught:
            text = str(warning.message)
            if "End of file" in text or "delimiter" in text.lower():
                raise RejectedInput(
                    f"the DICOM data is truncated ({text})"[:300], reason="truncated"
                )
        if len(ds) == 0:
            raise RejectedInput("the DICOM file holds no data elements", reason="truncated")
        _check_lengths(ds)
    except RejectedInput:
        raise
    except Exception as exc:  # pydicom raises many kinds on damaged input
        raise RejectedInput(_malformed(exc)) from None
    return ds


def dataset_identity(data: bytes) -> tuple[str, str] | None:
    """(transfer syntax, SHA-256 of the encoded dataset) of a Part 10 file, its File Meta aside.

    Two files that differ only in their File Meta (another sender's implementation UID, a
    resend through another path) hold the same object; None when the meta cannot be read.
    """
    fp = io.BytesIO(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            read_preamble(fp, False)
            meta = _read_file_meta_info(fp)
    except Exception:
        return None
    body = memoryview(data)[fp.tell() :]
    return str(meta.get("TransferSyntaxUID", "")), hashlib.sha256(body).hexdigest()


def _check_lengths(ds: Dataset) -> None:
    """A value shorter than its declared length means the data ended early (pydicom is silent)."""
    for tag in ds.keys():
        raw = ds.get_item(tag)
        length = getattr(raw, "length", None)
        value = getattr(raw, "value", None)
        if (
            isinstance(length, int)
            and length != 0xFFFFFFFF
            and isinstance(value, bytes | bytearray)
            and len(value) < length
        ):
            raise RejectedInput(
                f"the DICOM data is truncated inside element {tag}", reason="truncated"
            )


def _malformed(exc: Exception) -> str:
    return f"malformed DICOM: {type(exc).__name__}: {exc}"[:300]


def _inflate(body: bytes, cap: int) -> bytes:
    """Inflate a Deflated dataset of at most ``cap`` bytes.

    The inflated size is measured first, a megabyte at a time and kept nowhere, so a bomb is
    refused having cost a megabyte, not ``cap``; only a dataset within the cap is inflated.
    """
    size = 0
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    pending = body
    try:
        while pending:
            size += len(inflater.decompress(pending, 1 << 20))
            if size > cap:
                raise TooLarge(
                    f"the Deflated dataset inflates beyond the {cap}-byte limit",
                    reason="deflate_bomb",
                )
            pending = inflater.unconsumed_tail
        size += len(inflater.flush())
        out = zlib.decompressobj(-zlib.MAX_WBITS).decompress(body, cap + 1)
    except zlib.error as exc:
        raise RejectedInput(
            f"the Deflated dataset is corrupt: {exc}", reason="bad_deflate"
        ) from None
    if size > cap or len(out) > cap:
        raise TooLarge(
            f"the Deflated dataset inflates beyond the {cap}-byte limit", reason="deflate_bomb"
        )
    return out


def _text(ds: Dataset, keyword: str, limit: int = 64) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()[:limit]


def uid_problem(value: str) -> str | None:
    """Why ``value`` is not a DICOM UID (PS3.5 9.1), judged whole; None when it is one."""
    if not value:
        return "is empty"
    if len(value) > UID_MAX:
        return f"is {len(value)} characters long, over {UID_MAX}"
    if not _UID_CHARS.fullmatch(value):
        return "holds characters other than digits and dots"
    if not _UID_FORM.fullmatch(value):
        return "has an empty or zero-padded component"
    return None


def _uid(ds: Dataset, keyword: str, name: str, *, required: bool = False) -> str:
    """The whole UID value (only the UI padding stripped), refused unless valid."""
    raw = ds.get(keyword)
    value = "" if raw is None else str(raw).rstrip("\x00 ")
    if not value and not required:
        return ""
    problem = uid_problem(value)
    if problem is not None:
        raise RejectedInput(f"{name} {problem}", reason="bad_uid")
    return value


def _inspect_dicom(ds: Dataset, limits: Limits) -> Inspection:
    sop_class = _text(ds, "SOPClassUID")
    if sop_class not in SUPPORTED_SOP_CLASSES:
        raise UnsupportedSOPClass(
            f"SOP class {sop_class or '(missing)'} is not one the appliance analyses "
            "(ophthalmic photography, VL photographic, secondary capture, OPT)"
        )
    sop_instance = _uid(ds, "SOPInstanceUID", "SOP Instance UID", required=True)
    study_uid = _uid(ds, "StudyInstanceUID", "Study Instance UID") or None
    _uid(ds, "SeriesInstanceUID", "Series Instance UID")
    if "PixelData" not in ds:
        raise RejectedInput("the dataset has no Pixel Data", reason="no_pixel_data")
    for keyword in (
        "Rows",
        "Columns",
        "BitsAllocated",
        "SamplesPerPixel",
        "PhotometricInterpretation",
    ):
        if ds.get(keyword) in (None, ""):
            raise RejectedInput(
                f"the image pixel module lacks {keyword}", reason="bad_pixel_module"
            )
    rows, columns = int(ds.Rows), int(ds.Columns)
    frames = int(ds.get("NumberOfFrames") or 1)
    if rows <= 0 or columns <= 0 or frames <= 0:
        raise RejectedInput("the image has zero rows, columns or frames", reason="bad_pixel_module")
    check_limits(rows, columns, frames, limits)
    if not ds["PixelData"].is_undefined_length:
        bits = int(ds.BitsAllocated)
        expected = rows * columns * frames * int(ds.SamplesPerPixel) * bits
        expected = (expected + 7) // 8
        actual = len(ds.PixelData)
        if actual not in (expected, expected + 1):
            raise RejectedInput(
                f"Pixel Data holds {actual} bytes where the header implies {expected}",
                reason="pixel_length_mismatch",
            )
    check_pixels(ds, limits)
    laterality = image_eye(ds)[0] or ""  # the rule the OCT measurement counts by, too
    birth_date = _text(ds, "PatientBirthDate")
    patient = PatientInfo(
        patient_id=_text(ds, "PatientID"),
        patient_name=_text(ds, "PatientName", 320),
        birth_date=birth_date if _DATE.fullmatch(birth_date) else "",
        sex=_text(ds, "PatientSex", 16),
        issuer=_text(ds, "IssuerOfPatientID"),
    )
    return Inspection(
        media_type="application/dicom",
        width=columns,
        height=rows,
        sop_class_uid=sop_class,
        sop_instance_uid=sop_instance,
        study_instance_uid=study_uid,
        accession_number=_text(ds, "AccessionNumber", 16),
        study_date=_text(ds, "StudyDate", 8),
        laterality=laterality if laterality in ("L", "R") else None,
        patient=patient,
    )


def decode_rgb(data: bytes, limits: Limits) -> np.ndarray:
    """Decode to an RGB uint8 array (first frame of a multi-frame image)."""
    media_type = sniff(data)
    if media_type == "application/dicom":
        ds = read_dicom(data, limits)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if int(ds.get("NumberOfFrames") or 1) > 1:
                    pixels = pydicom.pixels.pixel_array(ds, index=0)
                else:
                    pixels = ds.pixel_array
        except Exception as exc:
            raise RejectedInput(
                f"the pixel data cannot be decoded: {type(exc).__name__}: {exc}"[:300],
                reason="undecodable_pixels",
            ) from None
        return to_rgb8(pixels, int(ds.get("BitsStored") or ds.BitsAllocated))
    with open_raster(data, limits) as img:
        try:
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                return to_rgb8(np.asarray(img), 16)
            return np.asarray(img.convert("RGB"))
        except (OSError, ValueError, SyntaxError) as exc:
            raise RejectedInput(
                f"the image cannot be decoded: {exc}", reason="corrupt_image"
            ) from None


def to_rgb8(pixels: np.ndarray, bits_stored: int) -> np.ndarray:
    arr = np.asarray(pixels)
    if arr.dtype != np.uint8:
        shift = max(bits_stored - 8, 0)
        arr = np.clip(arr.astype(np.int64) >> shift, 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.stack([arr, arr, arr], axis=-1)
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise RejectedInput(f"unexpected pixel array shape {arr.shape}", reason="bad_pixel_module")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr[:, :, :3])
