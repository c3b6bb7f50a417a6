"""Coded concepts for the screening result SR (LOINC, SNOMED CT, DCM and our private scheme).

Local concepts use the private Coding Scheme Designator ``99RETSCR``, declared in every SR's
Coding Scheme Identification Sequence (``coding_scheme_item``).

The left-eye cup-to-disc ratio has no LOINC code we could verify (71484-0 is likely but
unverified), so it is a local code here; the right eye uses LOINC 71485-7.
"""

from __future__ import annotations

from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset

PRIVATE_SCHEME = "99RETSCR"
PRIVATE_SCHEME_NAME = "Retinal screening appliance local codes"
PRIVATE_SCHEME_RESPONSIBLE = "Retinal screening appliance project"

# DCM
IMAGING_MEASUREMENT_REPORT = CodedConcept("126000", "DCM", "Imaging Measurement Report")
DEVICE = CodedConcept("121007", "DCM", "Device")
ARTIFICIAL_INTELLIGENCE = CodedConcept("123110", "DCM", "Artificial Intelligence")
PROCESSING_EQUIPMENT = CodedConcept("109102", "DCM", "Processing Equipment")

# SNOMED CT
RETINA = CodedConcept("5665001", "SCT", "Retina")
RIGHT = CodedConcept("24028007", "SCT", "Right")
LEFT = CodedConcept("7771000", "SCT", "Left")
YES = CodedConcept("373066001", "SCT", "Yes")
NO = CodedConcept("373067005", "SCT", "No")

# LOINC: DR severity per eye, answers from list LL2117-1 (ICDR five levels)
DR_SEVERITY = {
    "R": CodedConcept("71491-5", "LN", "Right eye DR severity level"),
    "L": CodedConcept("71490-7", "LN", "Left eye DR severity level"),
}
DR_GRADES = (
    CodedConcept("LA18643-9", "LN", "No apparent retinopathy"),
    CodedConcept("LA18644-7", "LN", "Mild non-proliferative retinopathy"),
    CodedConcept("LA18645-4", "LN", "Moderate non-proliferative retinopathy"),
    CodedConcept("LA18646-2", "LN", "Severe non-proliferative retinopathy"),
    CodedConcept("LA18648-8", "LN", "Proliferative retinopathy"),
)

# Local (99RETSCR)
RETINAL_SCREENING = CodedConcept("RS001", PRIVATE_SCHEME, "Retinal screening")
REFERABLE_DR = CodedConcept("RS002", PRIVATE_SCHEME, "Referable diabetic retinopathy")
DME = CodedConcept("RS003", PRIVATE_SCHEME, "Diabetic macular edema")
GRADABILITY = CodedConcept("RS004", PRIVATE_SCHEME, "Image gradability")
GLAUCOMA_SUSPECT = CodedConcept("RS005", PRIVATE_SCHEME, "Glaucoma suspect")
GRADABLE = CodedConcept("RS006", PRIVATE_SCHEME, "Gradable")
UNGRADABLE = CodedConcept("RS007", PRIVATE_SCHEME, "Ungradable")
LEFT_CDR_LOCAL = CodedConcept("RS008", PRIVATE_SCHEME, "Left optic nerve cup-disc ratio")
SCREENING_REPORT_DOCUMENT = CodedConcept("RS009", PRIVATE_SCHEME, "Retinal screening report")

# Cup-to-disc ratio (NUM, unit "no units")
CUP_DISC_RATIO = {
    "R": CodedConcept("71485-7", "LN", "Right optic nerve cup-disc ratio"),
    "L": LEFT_CDR_LOCAL,
}
NO_UNITS = CodedConcept("1", "UCUM", "no units")

LATERALITY = {"R": RIGHT, "L": LEFT}


def yes_no(value: bool) -> CodedConcept:
    return YES if value else NO


def coding_scheme_item() -> Dataset:
    """The Coding Scheme Identification Sequence item that declares ``99RETSCR``."""
    item = Dataset()
    item.CodingSchemeDesignator = PRIVATE_SCHEME
    item.CodingSchemeName = PRIVATE_SCHEME_NAME
    item.CodingSchemeResponsibleOrganization = PRIVATE_SCHEME_RESPONSIBLE
    return item


# Macular OCT (ETDRS grid) measurements: the LOINC "Macular grid" terms (class EYE.OCT, each
# "mean ILM-RPE measurement of all A-scans within ..., see ETDRS", example unit um), checked
# against LOINC's term pages and HL7's eye-care IG value set observation-oct-macula.
MACULAR_THICKNESS = {
    "central": CodedConcept("57109-1", "LN", "Macular grid.center subfield thickness by OCT"),
    "inner_superior": CodedConcept(
        "57110-9", "LN", "Macular grid.inner superior subfield thickness by OCT"
    ),
    "inner_nasal": CodedConcept(
        "57111-7", "LN", "Macular grid.inner nasal subfield thickness by OCT"
    ),
    "inner_inferior": CodedConcept(
        "57112-5", "LN", "Macular grid.inner inferior subfield thickness by OCT"
    ),
    "inner_temporal": CodedConcept(
        "57113-3", "LN", "Macular grid.inner temporal subfield thickness by OCT"
    ),
    "outer_superior": CodedConcept(
        "57114-1", "LN", "Macular grid.outer superior subfield thickness by OCT"
    ),
    "outer_nasal": CodedConcept(
        "57115-8", "LN", "Macular grid.outer nasal subfield thickness by OCT"
    ),
    "outer_inferior": CodedConcept(
        "57116-6", "LN", "Macular grid.outer inferior subfield thickness by OCT"
    ),
    "outer_temporal": CodedConcept(
        "57117-4", "LN", "Macular grid.outer temporal subfield thickness by OCT"
    ),
}
MACULAR_VOLUME = CodedConcept("57118-2", "LN", "Macular grid.total volume by OCT")
MICROMETER = CodedConcept("um", "UCUM", "micrometer")
CUBIC_MILLIMETER = CodedConcept("mm3", "UCUM", "cubic millimeter")
DECIBEL = CodedConcept("dB", "UCUM", "decibel")
# Local (99RETSCR): what LOINC and PS3.16 have no term for
FLUID_CENTRE_PROBABILITY = CodedConcept(
    "RS019", PRIVATE_SCHEME, "Probability of retinal fluid in the central subfield"
)
FLUID_ANY_PROBABILITY = CodedConcept("RS020", PRIVATE_SCHEME, "Probability of retinal fluid")
FLUID_VOLUME = CodedConcept("RS021", PRIVATE_SCHEME, "Retinal fluid volume")
OCT_SIGNAL = CodedConcept("RS022", PRIVATE_SCHEME, "OCT signal strength")
FLUID_CENTRE = CodedConcept("RS023", PRIVATE_SCHEME, "Retinal fluid in the central subfield")
CI_DME = CodedConcept("RS024", PRIVATE_SCHEME, "Centre-involving diabetic macular edema on OCT")
NOT_ANALYSED = CodedConcept("RS025", PRIVATE_SCHEME, "Not analysed")
