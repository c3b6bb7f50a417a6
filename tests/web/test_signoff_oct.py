"""A visit with an OCT volume signed off: the VERIFIED SR keeps the OCT's measurement group and
the signed PDF its OCT section, as the preliminary ones had them; dciodvfy clean."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from appliance.capture import Incoming
from appliance.config import Settings
from appliance.domain import Source
from appliance.pipeline.oct import visit_scans
from appliance.synth.oct.dicom import OptHeader
from tests.conftest import op_bytes, wait_for
from tests.pipeline.test_heatmap_sc import _photo
from tests.pipeline.test_oct_pipeline import opt_bytes
from tests.web.test_signoff import _dciodvfy_errors, _documents, _form, _pdf_text, _read
from tests.web.test_signoff import settings as signoff_settings
from tests.web_helpers import logged_in

settings = signoff_settings  # the shipped models, two archives
STUDY = "1.2.826.0.1.3680043.8.498.16077"
OCT_GROUP = "126010"
CST = "57109-1"


def _cst_in_sr(ds: Any) -> list[float]:
    return [
        float(n.MeasuredValueSequence[0].NumericValue)
        for item in ds.ContentSequence
        if item.ConceptNameCodeSequence[0].CodeValue == OCT_GROUP
        for group in item.ContentSequence
        for n in group.get("ContentSequence", [])
        if n.ValueType == "NUM" and n.ConceptNameCodeSequence[0].CodeValue == CST
    ]


def test_the_signed_sr_and_pdf_keep_the_oct(
    app: Any, services: Any, settings: Settings, tmp_path: Path
) -> None:
    header = OptHeader(patient_id="SIGN-OCT", patient_name="Roe^Ann", study_instance_uid=STUDY)
    sent = [opt_bytes("R", header=header)] + [
        op_bytes(_photo(eye), laterality=eye, patient_id="SIGN-OCT", study_instance_uid=STUDY)
        for eye in ("R", "L")
    ]
    for data in sent:
        services.ingestor.ingest(
            Incoming(data=data, source=Source.DICOM, user_id="ae:CAM", calling_ae="CAM")
        )
    wait_for(lambda: services.pipeline.pending() == 0, timeout=120)
    key = wait_for(
        lambda: services.store.scalar("SELECT visit_key FROM derived_objects WHERE kind = 'sr'"),
        timeout=120,
    )
    [scan] = visit_scans(services.store, "1 = 1", ())
    assert scan.finding is not None and scan.finding.cst_um is not None
    cst = scan.finding.cst_um
    preliminary = {d["kind"]: d["sop_instance_uid"] for d in _documents(services, key)}
    assert _cst_in_sr(_read(services, preliminary["sr"])) == [pytest.approx(cst, abs=0.001)]

    client = logged_in(app, services, "clinician")
    form = _form(client, key, decision="accept")
    assert client.post(f"/review/{key}/sign", data=form).status_code == 303
    review = services.store.query("SELECT * FROM reviews ORDER BY id")[-1]
    sr = _read(services, review["sr_sop_instance_uid"])
    pdf = _read(services, review["pdf_sop_instance_uid"])
    assert sr.VerificationFlag == pdf.VerificationFlag == "VERIFIED"
    assert _cst_in_sr(sr) == [pytest.approx(cst, abs=0.001)]
    assert f"Central subfield thickness (CST): {cst:.0f} \u00b5m" in _pdf_text(pdf, tmp_path)
    assert _dciodvfy_errors(sr, tmp_path) == [] and _dciodvfy_errors(pdf, tmp_path) == []
