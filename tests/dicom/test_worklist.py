"""Worklist C-FIND and C-ECHO against a real pynetdicom MWL SCP on localhost."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom import AE, evt

from appliance.cli import main
from appliance.dicom.worklist import (
    MWL_FIND,
    VERIFICATION,
    Node,
    NodeUnreachable,
    echo,
    query_worklist,
)
from tests.conftest import free_port


def _entry(patient_id: str, station: str, date: str) -> Dataset:
    ds = Dataset()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = (
        "Doe^Jane",
        patient_id,
        "19600101",
        "F",
    )
    ds.IssuerOfPatientID = "CLINIC"
    ds.AccessionNumber, ds.RequestedProcedureID = f"ACC-{patient_id}", "RP1"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    step = Dataset()
    step.ScheduledStationAETitle, step.ScheduledProcedureStepStartDate = station, date
    step.ScheduledProcedureStepStartTime, step.Modality = "0930", "OP"
    step.ScheduledProcedureStepID, step.ScheduledProcedureStepDescription = (
        "SPS1",
        "Diabetic eye screening",
    )
    ds.ScheduledProcedureStepSequence = Sequence([step])
    request = Dataset()
    request.RequestedProcedureID, request.ScheduledProcedureStepID = "RP1", "SPS1"
    request.AccessionNumber = f"ACC-{patient_id}"
    ds.RequestAttributesSequence = Sequence([request])
    return ds


@pytest.fixture
def ris() -> Iterator[tuple[int, list[Dataset]]]:
    entries = [_entry("P1", "SCREENING", "20261129"), _entry("P2", "OTHER", "20261129"),
               _entry("P3", "SCREENING", "20261130")]  # fmt: skip
    seen: list[Dataset] = []

    def on_find(event: Any) -> Any:
        query = event.identifier
        seen.append(query)
        step = query.ScheduledProcedureStepSequence[0]
        for entry in entries:
            entry_step = entry.ScheduledProcedureStepSequence[0]
            if (
                step.ScheduledStationAETitle
                and entry_step.ScheduledStationAETitle != step.ScheduledStationAETitle
            ):
                continue
            if (
                step.ScheduledProcedureStepStartDate
                and entry_step.ScheduledProcedureStepStartDate
                != step.ScheduledProcedureStepStartDate
            ):
                continue
            yield 0xFF00, entry

    ae = AE(ae_title="RIS")
    ae.add_supported_context(MWL_FIND)
    ae.add_supported_context(VERIFICATION)
    port = free_port()
    server = ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_FIND, on_find)]
    )
    yield port, seen
    server.shutdown()


def test_query_returns_this_stations_steps_for_the_day(ris: tuple[int, list[Dataset]]) -> None:
    port, seen = ris
    items = query_worklist(
        Node("127.0.0.1", port, "RIS", "SCREENING"), station_ae="SCREENING", date="20261129"
    )
    assert [item.patient_id for item in items] == ["P1"]
    item = items[0]
    assert (
        item.accession_number == "ACC-P1"
        and item.study_instance_uid == "1.2.826.0.1.3680043.8.498.1"
    )
    assert item.step_id == "SPS1" and item.start_time == "0930" and item.issuer == "CLINIC"
    assert item.request_attributes == [
        {
            "RequestedProcedureID": "RP1",
            "ScheduledProcedureStepID": "SPS1",
            "AccessionNumber": "ACC-P1",
        }
    ]
    assert seen[0].ScheduledProcedureStepSequence[0].Modality == "OP"


def test_cli_worklist_and_echo(ris: tuple[int, list[Dataset]], monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    port, _ = ris
    monkeypatch.setenv("APPLIANCE_WORKLIST_HOST", "127.0.0.1")
    monkeypatch.setenv("APPLIANCE_WORKLIST_PORT", str(port))
    monkeypatch.setenv("APPLIANCE_WORKLIST_AE_TITLE", "RIS")
    assert main(["worklist", "--json", "--date", "20261130"]) == 0
    assert [i["patient_id"] for i in json.loads(capsys.readouterr().out)] == ["P3"]
    assert main(["echo", "worklist"]) == 0
    assert "0x0000" in capsys.readouterr().out
    assert main(["echo", "nowhere"]) == 2


def test_unreachable_node_is_a_clear_error() -> None:
    node = Node("127.0.0.1", free_port(), "RIS", "SCREENING", timeout=3)
    with pytest.raises(NodeUnreachable, match="RIS at 127.0.0.1"):
        echo(node)
    with pytest.raises(NodeUnreachable):
        query_worklist(node, station_ae="SCREENING", date="20261129")
