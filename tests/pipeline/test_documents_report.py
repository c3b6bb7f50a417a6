"""The visit's PDF report as the pipeline issues it: the clinic from settings on every page, the
preliminary status, and an Encapsulated PDF that passes dciodvfy."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pydicom

from appliance.config import Settings
from appliance.dicom.report_pdf import DEMONSTRATION, PRELIMINARY
from tests.conftest import require_tool
from tests.pipeline.test_quiet_period import MODELS, _one_eye


def test_the_issued_report_carries_the_clinic_and_passes_dciodvfy(
    settings: Settings, tmp_path: Path
) -> None:
    from appliance.runtime.services import Services

    services = Services(
        settings.replace(
            models_dir=str(MODELS),
            documents_quiet_seconds=600.0,
            clinic_name="Riverside Eye Clinic",
            clinic_address="12 High Street\nSpringfield",
        )
    )
    services.start(dicom=False, hotfolder=False, worker=False)
    try:
        _one_eye(services, "CLINIC1")
        services.pipeline.drain()
        assert services.pipeline.issue_quiet_visits(now=time.time() + 601) == 1
        row = services.store.one("SELECT file_path FROM derived_objects WHERE kind = 'pdf'")
        assert row is not None
        path = services.blobs.resolve(row["file_path"])
    finally:
        services.stop()
    run = subprocess.run(
        [require_tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=60
    )
    output = run.stdout + run.stderr
    assert "EncapsulatedPDF" in output
    assert [line for line in output.splitlines() if line.startswith("Error")] == [], output

    ds = pydicom.dcmread(path)
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(ds.EncapsulatedDocument[: ds.EncapsulatedDocumentLength])
    text = subprocess.run(
        [require_tool("pdftotext"), "-layout", str(pdf), "-"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    pages = [" ".join(page.split()) for page in text.split("\f") if page.strip()]
    assert pages
    for number, page in enumerate(pages, start=1):
        assert page.startswith("Riverside Eye Clinic Retinal screening report 12 High Street")
        assert "Springfield" in page and PRELIMINARY in page and "ID CLINIC1" in page
        assert f"Page {number} of {len(pages)}" in page
    everything = " ".join(pages)
    assert everything.count("not clinically validated") == everything.count(DEMONSTRATION) == 1
    assert "Right eye (OD)" in everything
