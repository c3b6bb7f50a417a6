"""What a visit is, said once (appliance/visits.py): key, scope, stored records."""

from __future__ import annotations

import pytest

from appliance.visits import DerivedObject, ImageRecord, VisitNotFound, scope, scope_of, visit_key

STUDY = {"id": 7, "study_pk": 3, "patient_pk": 5, "received_at": "2026-01-02T10:00:00+00:00"}
PATIENT_DAY = {**STUDY, "study_pk": None}
ALONE = {**STUDY, "study_pk": None, "patient_pk": None}


@pytest.mark.parametrize(
    ("row", "key"),
    [(STUDY, "study:3"), (PATIENT_DAY, "patient:5:2026-01-02"), (ALONE, "capture:7")],
)
def test_a_capture_belongs_to_its_study_else_its_patient_that_day_else_itself(
    row: dict[str, object], key: str
) -> None:
    assert visit_key(row) == key
    assert scope_of(row) == scope(key)  # the key names exactly the worker's grouping


@pytest.mark.parametrize(
    "key", ["", "study:", "study:x", "patient:5", "patient:x:2026-01-02", "x:1"]
)
def test_a_key_that_names_no_visit_is_not_found(key: str) -> None:
    with pytest.raises(VisitNotFound) as caught:
        scope(key)
    assert caught.value.http_status == 404


def test_the_stored_image_record_reads_what_the_worker_wrote() -> None:
    assert ImageRecord.parse(None).data == {}
    record = ImageRecord.parse(
        '{"laterality": "R", "heatmap": "", "finding": {"laterality": "L"}, "models": null}'
    )
    assert record.laterality == "R"
    assert record.heatmap is None  # an empty path is no heatmap
    assert record.finding_laterality == "L"
    assert record.models == [] and record.human_grading == () and record.quality == {}


def test_a_derived_object_row_takes_the_callers_visit() -> None:
    row = {
        "capture_pk": 1,
        "visit_key": "ignored",
        "kind": "op",
        "sop_class_uid": "1.2",
        "sop_instance_uid": "1.2.3",
        "series_instance_uid": "1.2.4",
        "study_instance_uid": "1.2.5",
        "file_path": "ab/cd.dcm",
        "created_at": "2026-01-02T10:00:00+00:00",
    }
    made = DerivedObject.from_row(row)
    assert made.references_json == "[]"  # the column's default, written out
    assert made.row("study:3") == {**row, "visit_key": "study:3", "references_json": "[]"}
