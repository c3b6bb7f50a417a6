"""appliance/desks/station.py without the web: selections, stale selections, the worklist item."""

from __future__ import annotations

from datetime import date, timedelta

from appliance.desks.station import _requests
from appliance.dicom.worklist import WorklistItem
from appliance.runtime.services import Services

WALK_IN = {"patient_id": "W1", "family_name": "Roe", "given_name": "Ann",
           "birth_date": "1960-01-02", "sex": "F"}  # fmt: skip


def test_one_open_selection_per_station(services: Services) -> None:
    station = services.station
    first = station.walk_in(WALK_IN, user="t", user_pk=None)
    second = station.walk_in({**WALK_IN, "patient_id": "W2"}, user="t", user_pk=None)
    assert station.current() == second and first.study_instance_uid != second.study_instance_uid
    open_rows = services.store.scalar(
        "SELECT count(*) FROM station_selections WHERE cleared_at IS NULL"
    )
    assert open_rows == 1
    assert station.finish(user="t") == second and station.current() is None
    assert station.finish(user="t") is None


def test_a_selection_from_an_earlier_day_is_not_given_to_hot_folder_files(
    services: Services,
) -> None:
    station = services.station
    station.walk_in(WALK_IN, user="t", user_pk=None)
    fields = station.hotfolder_identity()
    assert fields is not None and fields["patient_id"] == "W1"
    assert fields["patient_name"] == "Roe^Ann" and fields["birth_date"] == "19600102"
    station.today = lambda: date.today() + timedelta(days=1)
    assert station.hotfolder_identity() is None
    assert station.current() is not None  # still shown, so the operator can finish it


def test_request_attributes_are_built_from_the_step_when_the_worklist_sends_none() -> None:
    item = WorklistItem(
        patient_id="P", patient_name="", birth_date="", sex="", issuer="",
        accession_number="A1", study_instance_uid="1.2", requested_procedure_id="RP",
        step_id="S1", station_ae="SCREENING", start_date="", start_time="", modality="OP",
        description="Screening",
    )  # fmt: skip
    assert _requests(item) == (
        {"RequestedProcedureID": "RP", "ScheduledProcedureStepID": "S1",
         "AccessionNumber": "A1", "ScheduledProcedureStepDescription": "Screening"},
    )  # fmt: skip
