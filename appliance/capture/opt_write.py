"""An OCT volume as a DICOM Ophthalmic Tomography Image (OPT), the way a camera sends it.

:func:`opt_dataset` writes an enhanced multi-frame OPT (PS3.3 A.52): one frame per B-scan,
Pixel Measures (Pixel Spacing = axial \\ lateral, Slice Thickness and Spacing Between Slices =
the distance between B-scans) shared by every frame, and per frame a Frame Content (stack, in-
stack position) and a Plane Position / Orientation (Patient) in the volume's own Frame of
Reference that places each B-scan: B-scan ``i`` lies ``i`` spacings below the first, its rows
going down into the retina and its columns across the fundus. :func:`encode_opt` writes it in
one of :data:`ENCODINGS` (uncompressed, JPEG Baseline, JPEG-LS lossless, JPEG 2000 lossless);
the encoders are pydicom's (pyjpegls, pylibjpeg-openjpeg) and OpenCV's JPEG for Baseline.

The one OPT writer: a vendor export taken from the hot folder (``capture/vendor_oct.py``) is
turned into this object, and the synthetic volumes (``synth/oct/dicom.py``) use it with a
synthetic camera's header. ``capture/oct.py`` reads the same shape back.
"""

from __future__ import annotations

import copy
import datetime
import io
import logging
import uuid
from dataclasses import dataclass

import cv2
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
)

from appliance import __version__
from appliance.capture.decode import OPT_SOP_CLASS

LOGGER = logging.getLogger(__name__)

ENCODINGS: dict[str, UID] = {
    "uncompressed": ExplicitVRLittleEndian,
    "jpeg": JPEGBaseline8Bit,
    "jpegls": JPEGLSLossless,
    "j2k": JPEG2000Lossless,
}
# dciodvfy (dicom3tools 2022) contradicts itself on an OPT that is one object: the OT Image
# module wants Concatenation Frame Offset 0 / In-concatenation Number 1 / Total 1 (Type 1),
# its multi-frame common checks want a Concatenation UID only with a Total over one.
VALIDATOR_CONFLICTS: tuple[str, ...] = (
    "Attribute present when condition unsatisfied (which may not be present otherwise) "
    "Type 1C Conditional Element=<ConcatenationUID> Module=<MultiFrameFunctionalGroupsCommon>",
    "Cannot be less than or equal to one since then not a Concatenation - attribute "
    "<InConcatenationTotalNumber>",
)
_DIMENSION_ORG = "1.2.826.0.1.3680043.10.1288.1"  # fixed: one organisation for every volume


CONVERTER_MANUFACTURER = "Demonstration"  # the appliance, as in the documents it makes
CONVERTER_MODEL = "retina-appliance"


@dataclass(frozen=True)
class OptHeader:
    """Who and what the object names (empty: not known). ``acquired``: when the scan was made
    (Acquisition DateTime and each frame's; else the moment the object is written).
    ``uid_seed``: when set, every UID is derived from it (and ``acquired`` stands for the moment
    written), so the same seed and header make the same object byte for byte; else fresh."""

    patient_id: str = ""
    patient_name: str = ""
    birth_date: str = ""
    sex: str = ""
    study_instance_uid: str = ""
    manufacturer: str = ""
    model: str = ""
    accession_number: str = ""
    issuer: str = ""
    device_serial: str = ""
    software_versions: str = ""
    acquired: datetime.datetime | None = None
    wavelength_nm: float = 840.0
    uid_seed: str = ""
    converted_from: str = ""  # set when the appliance made this OPT of another format's file


def _uid(seed: str = "", role: str = "") -> str:
    """A UUID-derived UID (PS3.5 B.2): random, or name-based on ``seed`` and ``role``."""
    if seed:
        return name_based_uid(seed, role)
    return f"2.25.{uuid.uuid4().int}"


def name_based_uid(seed: str, role: str) -> str:
    """The UUID-derived UID (PS3.5 B.2) of ``seed`` in ``role``: the same name, the same UID."""
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, f'{seed}/{role}').int}"


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _patient_study_series(ds: Dataset, header: OptHeader, now: datetime.datetime) -> None:
    ds.PatientName = header.patient_name
    ds.PatientID = header.patient_id
    ds.PatientBirthDate = header.birth_date
    ds.PatientSex = header.sex
    if header.issuer:
        ds.IssuerOfPatientID = header.issuer
    ds.StudyInstanceUID = header.study_instance_uid or _uid(header.uid_seed, "study")
    ds.StudyDate = now.strftime("%Y%m%d")
    ds.StudyTime = now.strftime("%H%M%S")
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = header.accession_number
    ds.SeriesInstanceUID = _uid(header.uid_seed, "series")
    ds.SeriesNumber = 1
    ds.Modality = "OPT"
    ds.SeriesDate = ds.StudyDate
    ds.SeriesTime = ds.StudyTime
    ds.FrameOfReferenceUID = _uid(header.uid_seed, "frame-of-reference")
    ds.PositionReferenceIndicator = ""
    ds.SynchronizationFrameOfReferenceUID = "1.2.840.10008.15.1.1"
    ds.SynchronizationTrigger = "NO TRIGGER"
    ds.AcquisitionTimeSynchronized = "N"


def _equipment(ds: Dataset, header: OptHeader) -> None:
    ds.Manufacturer = header.manufacturer
    ds.ManufacturerModelName = header.model
    ds.DeviceSerialNumber = header.device_serial
    ds.SoftwareVersions = header.software_versions


def _acquisition(ds: Dataset, eye: str, spacing: tuple[float, float, float], nm: float) -> None:
    ds.ImageLaterality = eye
    ds.AnatomicRegionSequence = Sequence([_code("5665001", "SCT", "Retina")])
    ds.AcquisitionDeviceTypeCodeSequence = Sequence(
        [_code("392012008", "SCT", "Optical Coherence Tomography Scanner")]
    )
    ds.LightPathFilterTypeStackCodeSequence = Sequence()
    ds.DetectorType = "CCD"
    ds.AxialLengthOfTheEye = None
    ds.HorizontalFieldOfView = None
    ds.RefractiveStateSequence = Sequence()
    ds.EmmetropicMagnification = None
    ds.IntraOcularPressure = None
    ds.PupilDilated = None
    ds.DepthSpatialResolution = round(spacing[1] * 1000.0, 3)  # µm
    ds.MaximumDepthDistortion = 0.0
    ds.AlongScanSpatialResolution = round(spacing[2] * 1000.0, 3)
    ds.MaximumAlongScanDistortion = 0.0
    ds.AcrossScanSpatialResolution = round(spacing[0] * 1000.0, 3)
    ds.MaximumAcrossScanDistortion = 0.0
    ds.IlluminationWaveLength = nm
    ds.IlluminationPower = 1.2
    ds.IlluminationBandwidth = 50.0
    ds.AcquisitionContextSequence = Sequence()
    ds.AcquisitionNumber = 1
    ds.AcquisitionDuration = 1.6


def _frame_groups(
    ds: Dataset, frames: int, spacing: tuple[float, float, float], eye: str, when: str
) -> None:
    frame_mm, axial_mm, lateral_mm = spacing
    anatomy = Dataset()
    anatomy.AnatomicRegionSequence = Sequence([_code("5665001", "SCT", "Retina")])
    anatomy.FrameLaterality = eye
    measures = Dataset()
    measures.PixelSpacing = [round(axial_mm, 6), round(lateral_mm, 6)]
    measures.SliceThickness = round(frame_mm, 6)
    measures.SpacingBetweenSlices = round(frame_mm, 6)
    orientation = Dataset()
    # rows go along the B-scan (patient x), columns down into the retina (patient z)
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 0, 1]
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.FrameAnatomySequence = Sequence([anatomy])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    stack = "1"
    per_frame = []
    for index in range(frames):
        content = Dataset()
        content.StackID = stack
        content.InStackPositionNumber = index + 1
        content.DimensionIndexValues = [1, index + 1]
        content.FrameReferenceDateTime = when
        content.FrameAcquisitionDateTime = when
        content.FrameAcquisitionDuration = 30.0  # ms per B-scan
        position = Dataset()
        position.ImagePositionPatient = [0.0, round(index * frame_mm, 6), 0.0]
        item = Dataset()
        item.FrameContentSequence = Sequence([content])
        item.PlanePositionSequence = Sequence([position])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    organisation = Dataset()
    organisation.DimensionOrganizationUID = _DIMENSION_ORG
    ds.DimensionOrganizationSequence = Sequence([organisation])
    ds.DimensionOrganizationType = "3D"
    dims = []
    for pointer, group, label in (
        (0x00209056, 0x00209111, "Stack ID"),
        (0x00209057, 0x00209111, "In-Stack Position Number"),
    ):
        dim = Dataset()
        dim.DimensionOrganizationUID = _DIMENSION_ORG
        dim.DimensionIndexPointer = pointer
        dim.FunctionalGroupPointer = group
        dim.DimensionDescriptionLabel = label
        dims.append(dim)
    ds.DimensionIndexSequence = Sequence(dims)


def _image(ds: Dataset, volume: np.ndarray, now: datetime.datetime, when: str, seed: str) -> None:
    frames, rows, columns = volume.shape
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PresentationLUTShape = "IDENTITY"
    ds.Rows = rows
    ds.Columns = columns
    ds.NumberOfFrames = frames
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.BurnedInAnnotation = "NO"
    ds.RecognizableVisualFeatures = "NO"
    ds.LossyImageCompression = "00"
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.AcquisitionDateTime = when
    ds.InstanceNumber = 1
    # The OT Image module makes these Type 1 with fixed values (PS3.3 C.8.17.7: offset 0, part
    # 1 of 1), so the object is a concatenation of one part and names its Concatenation UID.
    # dciodvfy's generic multi-frame checks object to a one-part concatenation: the two
    # messages in VALIDATOR_CONFLICTS, which no single-object OPT can avoid.
    ds.ConcatenationUID = _uid(seed, "concatenation")
    ds.SOPInstanceUIDOfConcatenationSource = ds.SOPInstanceUID
    ds.ConcatenationFrameOffsetNumber = 0
    ds.InConcatenationNumber = 1
    ds.InConcatenationTotalNumber = 1
    ds.PixelData = np.ascontiguousarray(volume, dtype=np.uint8).tobytes()


def opt_dataset(
    volume: np.ndarray,
    spacing_mm: tuple[float, float, float],
    eye: str,
    header: OptHeader | None = None,
) -> Dataset:
    """An uncompressed OPT dataset of ``volume`` (uint8 frames x rows x A-scans), with
    ``spacing_mm`` (between B-scans, axial, lateral) of the ``eye`` ("R" / "L")."""
    if volume.ndim != 3 or volume.dtype != np.uint8:
        raise ValueError(f"volume must be uint8 (frames, rows, A-scans), got {volume.dtype} "
                         f"{volume.shape}")  # fmt: skip
    if eye not in ("R", "L"):
        raise ValueError(f"eye must be 'R' or 'L', got {eye!r}")
    header = header or OptHeader()
    now = datetime.datetime.now(datetime.UTC)
    if header.uid_seed and header.acquired is not None:
        now = header.acquired
    when = (header.acquired or now).strftime("%Y%m%d%H%M%S")
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = OPT_SOP_CLASS
    ds.SOPInstanceUID = _uid(header.uid_seed, "instance")
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    _patient_study_series(ds, header, now)
    _equipment(ds, header)
    if header.converted_from:  # provenance: the appliance, not the device, wrote this object
        converter = Dataset()
        converter.PurposeOfReferenceCodeSequence = Sequence(
            [_code("109103", "DCM", "Modifying Equipment")]
        )
        converter.Manufacturer = CONVERTER_MANUFACTURER
        converter.ManufacturerModelName = CONVERTER_MODEL
        converter.SoftwareVersions = __version__
        converter.ContributionDescription = header.converted_from[:64]
        ds.ContributingEquipmentSequence = Sequence([converter])
    _acquisition(ds, eye, spacing_mm, header.wavelength_nm)
    _frame_groups(ds, volume.shape[0], spacing_mm, eye, when)
    _image(ds, volume, now, when, header.uid_seed)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID("1.2.826.0.1.3680043.10.1288.2")
    ds.file_meta = meta
    return ds


def _jpeg_frames(volume: np.ndarray, quality: int) -> list[bytes]:
    frames = []
    for frame in volume:
        ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise ValueError("OpenCV could not encode a B-scan as JPEG")
        frames.append(data.tobytes())
    return frames


def encode_opt(ds: Dataset, encoding: str = "uncompressed", jpeg_quality: int = 92) -> bytes:
    """``ds`` (from :func:`opt_dataset`) as Part 10 bytes in ``encoding`` (:data:`ENCODINGS`)."""
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}, got {encoding!r}")
    out = copy.deepcopy(ds)
    syntax = ENCODINGS[encoding]
    if encoding == "jpeg":
        volume = np.frombuffer(ds.PixelData, np.uint8).reshape(
            int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns)
        )
        frames = _jpeg_frames(volume, jpeg_quality)
        out.PixelData = encapsulate(frames)
        out["PixelData"].VR = "OB"
        out["PixelData"].is_undefined_length = True
        out.LossyImageCompression = "01"
        out.LossyImageCompressionRatio = round(volume.size / max(1, sum(map(len, frames))), 2)
        out.LossyImageCompressionMethod = "ISO_10918_1"
        out.file_meta.TransferSyntaxUID = syntax
    elif encoding != "uncompressed":
        out.compress(syntax)
    buffer = io.BytesIO()
    out.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
