"""The three OCT outputs from one measured synthetic volume, wired as the pipeline will wire
them: the measurement becomes an ``OctFinding``; the thickness map object gives the measured
map back, the SR the ETDRS numbers, and the PDF the CST."""

from __future__ import annotations

import io
import math
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from appliance.dicom.oct_pictures import bscan_rgb, thickness_map_rgb
from appliance.dicom.op import new_uid, to_bytes
from appliance.dicom.report_oct import OctPage
from appliance.dicom.report_pdf import report_pdf
from appliance.dicom.sr import screening_sr
from appliance.dicom.sr_oct import OctReport
from appliance.dicom.thickness_map import decode_thickness, thickness_map_dataset
from appliance.domain import ETDRS_SUBFIELDS, OctFinding
from appliance.inference.oct.measure import OctMeasurement, measure_oct
from appliance.synth.oct import GEOMETRIES, healthy_case, render_oct
from tests.conftest import require_tool
from tests.dicom.oct_source import opt_header

CASE = healthy_case(11, GEOMETRIES["small"])


def _finding(m: OctMeasurement) -> OctFinding:
    """What the pipeline is to store: NaN (not scanned) becomes None."""
    subfields = {
        name: (None if math.isnan(v) else float(v))
        for name, v in m.etdrs.thickness_um.items()
        if name in ETDRS_SUBFIELDS
    }
    volume = m.etdrs.volume_mm3
    return OctFinding(
        capture_id=1,
        laterality="R",
        gradable=True,
        cst_um=subfields.get("central"),
        subfield_um=subfields,
        macular_volume_mm3=None if math.isnan(volume) else volume,
        fovea_mm=m.fovea_mm,
        p_fluid_centre=m.fluid.p_centre,
        p_fluid_any=m.fluid.p_any,
        fluid_volume_mm3=m.fluid.volume_mm3,
    )


@pytest.fixture(scope="module")
def measured() -> tuple[np.ndarray, tuple[float, float, float], OctMeasurement]:
    rendered = render_oct(CASE)
    return (
        rendered.volume,
        rendered.spacing_mm,
        measure_oct(rendered.volume, rendered.spacing_mm, "R"),
    )


def test_map_sr_and_pdf_from_one_measured_volume(
    measured: tuple[np.ndarray, tuple[float, float, float], OctMeasurement], tmp_path: Path
) -> None:
    volume, spacing, m = measured
    finding, source = _finding(m), opt_header("R", frames=volume.shape[0])
    en_face = (spacing[0], spacing[2])  # between B-scans, between A-scans

    otm = thickness_map_dataset(
        m.thickness_um,
        spacing_mm=en_face,
        finding=finding,
        source=source,
        device={"manufacturer": "Demonstration", "model": "RS-1", "serial": "1", "version": "0"},
        series_instance_uid=new_uid(),
        sop_instance_uid=new_uid(),
    )
    back = decode_thickness(pydicom.dcmread(io.BytesIO(to_bytes(otm))))
    measured_map = np.asarray(m.thickness_um, np.float64)
    both = np.isfinite(measured_map)
    assert np.array_equal(np.isfinite(back), both)
    assert np.max(np.abs(back[both] - measured_map[both])) <= 0.05 + 1e-9

    sr = screening_sr(
        images=[],
        findings_by_eye={},
        models=[],
        device={"name": "screener", "uid": "2.25.77"},
        series_instance_uid=new_uid(),
        sop_instance_uid=new_uid(),
        uid_root="2.25.",
        oct=[OctReport(finding=finding, source=source)],
    )
    sr = pydicom.dcmread(io.BytesIO(to_bytes(sr)))
    [group] = [i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "126010"]
    nums = {
        i.ConceptNameCodeSequence[0].CodeValue: float(i.MeasuredValueSequence[0].NumericValue)
        for i in group.ContentSequence[0].ContentSequence
        if i.ValueType == "NUM"
    }
    assert nums["57109-1"] == pytest.approx(m.cst_um, abs=0.001)
    assert nums["57118-2"] == pytest.approx(m.etdrs.volume_mm3, abs=0.001)

    middle = volume.shape[0] // 2
    page = OctPage(
        finding=finding,
        thickness_map=thickness_map_rgb(m.thickness_um, en_face, m.fovea_mm),
        bscan=bscan_rgb(volume[middle], m.ilm_px[middle], m.rpe_px[middle], m.fluid.mask[middle]),
    )
    pdf = report_pdf(
        patient={"name": "Oct^Olga", "id": "P1"},
        study_date="20261205",
        eyes=[],
        outcome={"text": "No referable retinopathy"},
        models=[],
        oct_pages=[page],
    )
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    text = subprocess.run(
        [require_tool("pdftotext"), str(path), "-"], capture_output=True, text=True, timeout=60
    ).stdout
    assert f"Central subfield thickness (CST): {m.cst_um:.0f} \u00b5m" in text
