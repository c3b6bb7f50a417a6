"""A received image's header, read defensively, for the documents made from it (SR, PDF, SC).

A camera's file is stored exactly as received and may be odd in ways ingest accepts: a missing
Type 2 attribute, a Specific Character Set that does not match the bytes (or one Python cannot
decode), identifiers such as ``../../etc``, or sequences nested a thousand deep. The documents
need only the patient, study, equipment and reference attributes, so ``read_header`` reads those
elements alone (``specific_tags``: nothing else is parsed) and returns a fresh dataset in UTF-8
(``ISO_IR 192``) where each value is the received one when it is valid, a sanitised copy when its
text does not decode as declared (decoded as UTF-8 or Latin-1 where those give text, else with
control and undecodable characters dropped; cut to the VR's length; a backslash in a
single-valued attribute becomes "/"), and the DICOM empty value when it is missing or invalid
(a date that is not a date). Nested sequences are never copied: the Request Attributes items
keep their flat text attributes only.
"""

from __future__ import annotations

import logging
import re
import unicodedata
import warnings
from pathlib import Path
from typing import Any

import pydicom
from pydicom import charset
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from appliance.dicom.op import REQUEST_ATTRIBUTES

LOGGER = logging.getLogger(__name__)

UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
# Type 2 in what the documents copy: present, empty when the received file has no valid value
TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
# the image pixel description a reference to a source image is checked against (highdicom)
NUMBERS = ("Rows", "Columns", "SamplesPerPixel", "PixelRepresentation", "NumberOfFrames")
OPTIONAL = (
    "Modality",
    "IssuerOfPatientID",
    "ImageLaterality",
    "Laterality",
    "Manufacturer",
    "ManufacturerModelName",
    "SoftwareVersions",
    "DeviceSerialNumber",
    "InstitutionName",
    "InstitutionalDepartmentName",
    "InstitutionAddress",
    "StationName",
    "AcquisitionDateTime",
)
_MAX_CHARS = {"AE": 16, "CS": 16, "SH": 16, "LO": 64, "PN": 64 * 3 + 2, "ST": 1024, "LT": 10240}
_MULTI_VALUED = {"SoftwareVersions"}
_ENUMERATED = {
    "PatientSex": {"M", "F", "O"},
    "ImageLaterality": {"R", "L", "B", "U"},
    "Laterality": {"R", "L"},
}
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_DA = re.compile(r"(19|20)\d\d(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])")
_TM = re.compile(r"([01]\d|2[0-3])([0-5]\d([0-5]\d(\.\d{1,6})?)?)?")
_DT = re.compile(r"\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?")
_PN_DELIMITERS = {0x5C, 0x3D, 0x5E}
_TEXT_CONTROLS = {"\r", "\n", "\t", "\f"}  # allowed in ST/LT only


def read_header(path: Path) -> Dataset:
    """The attributes SR, PDF and SC copy from a received image, each valid or empty."""
    wanted = [*UIDS, *NUMBERS, *TYPE2, *OPTIONAL]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # odd input is expected here; each value is checked
        raw = pydicom.dcmread(
            path, stop_before_pixels=True, specific_tags=["SpecificCharacterSet", *wanted]
        )
    encodings = _encodings(raw)
    out = Dataset()
    out.SpecificCharacterSet = "ISO_IR 192"
    for keyword in UIDS:
        value = _text(raw, keyword, encodings)
        if value and len(value) <= 64 and _UID.fullmatch(value):
            setattr(out, keyword, value)
    for keyword in NUMBERS:
        number = _number(raw, keyword)
        if number is not None:
            setattr(out, keyword, number)
    for keyword in (*TYPE2, *OPTIONAL):
        value = _valid(keyword, _text(raw, keyword, encodings))
        if value or keyword in TYPE2:
            if keyword in _MULTI_VALUED:
                out.add_new(keyword, dictionary_VR(keyword), value.split("\\") if value else "")
            else:
                out.add_new(keyword, dictionary_VR(keyword), value)
    requests = _requests(path, encodings)
    if requests:
        out.RequestAttributesSequence = DicomSequence(requests)
    return out


def _number(raw: Dataset, keyword: str) -> int | None:
    """A small non-negative integer (US or IS), or None when missing or not one."""
    try:
        value = int(str(raw[keyword].value).strip()) if keyword in raw else None
    except (Exception, RecursionError):
        return None
    return value if value is not None and 0 <= value <= 65535 else None


def _encodings(raw: Dataset) -> list[str] | None:
    """Python codecs for the declared character set; None when Python cannot use it."""
    element = raw.get_item("SpecificCharacterSet") if "SpecificCharacterSet" in raw else None
    if element is None or not element.value:
        return ["ascii"]  # the default repertoire
    value = element.value
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("ascii", errors="replace").split("\\")
    terms = [str(v).strip() for v in ([value] if isinstance(value, str) else value)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return charset.convert_encodings(terms)
    except Exception:
        return None


def _raw_bytes(raw: Dataset, keyword: str) -> bytes | None:
    """An element's bytes as stored (never converted through pydicom's lenient decoding)."""
    tag = tag_for_keyword(keyword)
    if tag is None or tag not in raw:
        return None
    element = raw.get_item(tag)
    value = getattr(element, "value", None)
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    # already converted (e.g. a dataset built in memory): the string form is the value
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value).encode("utf-8")
    return str(value).encode("utf-8")


def _text(raw: Dataset, keyword: str, encodings: list[str] | None) -> str:
    """The value decoded as declared, else as UTF-8, else as Latin-1 when that gives text, else
    as UTF-8 with what cannot be decoded dropped."""
    value = _raw_bytes(raw, keyword)
    if not value:
        return ""
    vr = dictionary_VR(keyword)
    decoded = None
    if encodings is not None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                decoded = charset.decode_bytes(value, encodings, _PN_DELIMITERS)
        except Exception:
            decoded = None
        if decoded is not None and not _clean(decoded, vr):
            decoded = None  # decodes, but not to text: the declared set is not the bytes'
    if decoded is None:
        try:
            decoded = value.decode("utf-8")
        except UnicodeDecodeError:
            latin = value.decode("latin-1")  # the commonest 8-bit set, if it reads as text
            decoded = latin if _clean(latin, vr) else value.decode("utf-8", errors="replace")
    return _sanitise(decoded, vr, keyword)


def _clean(text: str, vr: str) -> bool:
    return all(_allowed(ch, vr) for ch in text)


def _allowed(ch: str, vr: str) -> bool:
    if ch == "\ufffd":
        return False
    if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn"):
        return vr in ("ST", "LT") and ch in _TEXT_CONTROLS
    return True


def _sanitise(text: str, vr: str, keyword: str) -> str:
    text = "".join(ch for ch in text if _allowed(ch, vr)).rstrip(" \x00").lstrip(" ")
    if vr not in ("ST", "LT", "UT") and keyword not in _MULTI_VALUED:
        text = text.replace("\\", "/")  # one value where the attribute allows one
    limit = _MAX_CHARS.get(vr)
    if limit is not None and keyword not in _MULTI_VALUED:
        text = text[:limit].rstrip(" ")
    return text


def _valid(keyword: str, value: str) -> str:
    """The value if it is valid for the attribute's VR, else the empty value."""
    vr = dictionary_VR(keyword)
    if not value:
        return ""
    if keyword in _ENUMERATED:
        value = value.strip().upper()
        return value if value in _ENUMERATED[keyword] else ""
    if vr == "DA":
        return value if _DA.fullmatch(value) else ""
    if vr == "TM":
        return value if _TM.fullmatch(value) else ""
    if vr == "DT":
        return value if _DT.fullmatch(value) else ""
    if vr == "CS":
        return value if re.fullmatch(r"[A-Z0-9_ ]{1,16}", value) else ""
    if vr == "PN":
        return "=".join(_pn_group(group) for group in value.split("=")[:3]).rstrip("=")
    if keyword in _MULTI_VALUED:
        return "\\".join(v[: _MAX_CHARS[vr]].strip() for v in value.split("\\"))
    return value


def _pn_group(group: str) -> str:
    return "^".join(part.strip() for part in group.split("^")[:5])[:64].rstrip("^ ")


def _requests(path: Path, encodings: list[str] | None) -> list[Dataset]:
    """Request Attributes items with their flat text attributes; nested content is dropped."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = pydicom.dcmread(
                path, stop_before_pixels=True, specific_tags=["RequestAttributesSequence"]
            )
            items: Any = raw.get("RequestAttributesSequence") or []
            out = []
            for item in list(items)[:16]:
                clean = Dataset()
                for keyword in REQUEST_ATTRIBUTES:
                    value = _valid(keyword, _text(item, keyword, encodings))
                    if value:
                        clean.add_new(keyword, dictionary_VR(keyword), value)
                if len(clean):
                    out.append(clean)
            return out
    except (Exception, RecursionError) as exc:  # an unreadable sequence is left out
        LOGGER.warning("Request Attributes Sequence unreadable (%s); left out", type(exc).__name__)
        return []
