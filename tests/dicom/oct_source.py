"""A small Ophthalmic Tomography (OPT) header standing in for a received OCT volume: the
identity, study, series, frame of reference and laterality the OCT writers copy or reference.
(Its pixels are not needed by the writers; none are attached.)"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from appliance.dicom.op import new_uid

OPT = "1.2.840.10008.5.1.4.1.1.77.1.5.4"


def opt_header(
    laterality: str = "R",
    *,
    study_instance_uid: str | None = None,
    patient_id: str = "PAT-OCT-1",
    frames: int = 49,
) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = OPT
    ds.SOPInstanceUID = new_uid()
    ds.PatientName = "Oct^Olga"
    ds.PatientID = patient_id
    ds.IssuerOfPatientID = "HOSP"
    ds.PatientBirthDate = "19600102"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = study_instance_uid or new_uid()
    ds.StudyDate, ds.StudyTime = "20261205", "101500"
    ds.ReferringPhysicianName = ""
    ds.StudyID = "S1"
    ds.AccessionNumber = "ACC-OCT"
    ds.Modality = "OPT"
    ds.SeriesInstanceUID = new_uid()
    ds.SeriesNumber = 3
    ds.InstanceNumber = 1
    ds.FrameOfReferenceUID = new_uid()
    ds.ImageLaterality = laterality
    ds.Manufacturer = "Vendor"
    ds.ManufacturerModelName = "OCT-9000"
    ds.AcquisitionDateTime = "20261205101512"
    ds.NumberOfFrames = frames
    ds.Rows, ds.Columns = 496, 512
    request = Dataset()
    request.RequestedProcedureID = "RP-OCT"
    request.AccessionNumber = "ACC-OCT"
    request.ScheduledProcedureStepID = "SPS-OCT"
    ds.RequestAttributesSequence = DicomSequence([request])
    return ds
