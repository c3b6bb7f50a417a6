"""The sign-off's VERIFIED SR names the appliance as Device Observer: the UID of the SR it
re-issues, or, with no earlier SR, the UID derived from the appliance's identity (the one every
preliminary SR carries), never a new one per signature."""

from __future__ import annotations

import io
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset

from appliance.desks.signoff import device_uid, verified_sr
from appliance.dicom.op import new_uid, to_bytes
from appliance.dicom.sr import device_observer_uid, screening_sr
from appliance.pipeline.documents import DEVICE
from tests.conftest import fundus, op_bytes
from tests.dicom.test_sr import FINDINGS, MODELS

ROOT = "1.2.826.0.1.3680043.8.498."


@pytest.fixture(scope="module")
def headers() -> list[Dataset]:
    study = new_uid()
    return [
        pydicom.dcmread(io.BytesIO(op_bytes(fundus(seed=4, size=(240, 320), eye=eye),
                                            laterality=eye, study_instance_uid=study)))
        for eye in ("R", "L")
    ]  # fmt: skip


def _signed(headers: list[Dataset], predecessors: list[Dataset]) -> Dataset:
    images: list[dict[str, Any]] = [{"result": {"models": MODELS}}]
    ds = verified_sr(
        images=images,
        evidence=(headers, []),
        findings=FINDINGS,
        predecessors=predecessors,
        signer_name="Doe^Jane",
        organization="Clinic",
        decision="accept",
        outcome_code="refer",
        reason="",
        uid_root=ROOT,
    )
    return pydicom.dcmread(io.BytesIO(to_bytes(ds)))


def test_a_signoff_without_an_earlier_sr_names_the_appliances_derived_uid(
    headers: list[Dataset],
) -> None:
    first, second = _signed(headers, []), _signed(headers, [])
    expected = device_observer_uid(ROOT, DEVICE)
    assert device_uid(first) == device_uid(second) == expected
    assert first.SOPInstanceUID != second.SOPInstanceUID


def test_a_signoff_keeps_the_device_uid_of_the_sr_it_reissues(headers: list[Dataset]) -> None:
    earlier_uid = new_uid(ROOT)  # an SR from before the UID was derived
    earlier = screening_sr(
        images=headers, findings_by_eye=FINDINGS, models=MODELS,
        device={**DEVICE, "uid": earlier_uid}, series_instance_uid=new_uid(ROOT),
        sop_instance_uid=new_uid(ROOT), uid_root=ROOT,
    )  # fmt: skip
    signed = _signed(headers, [pydicom.dcmread(io.BytesIO(to_bytes(earlier)))])
    assert device_uid(signed) == earlier_uid != device_observer_uid(ROOT, DEVICE)
