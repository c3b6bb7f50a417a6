"""Monitoring: population stability index, bins, the shipped reference, the report's windows."""

from __future__ import annotations

import json
import math
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from appliance.audit import Action, AuditEvent, EventID
from appliance.desks import monitoring
from appliance.desks.monitoring import MetricReference, Reference
from appliance.tools import drift_reference

QUARTERS = MetricReference("brightness", "Brightness: test", (1.0, 2.0, 3.0), (0.25,) * 4)
REFERENCE = Reference("test quarters", 4, {"brightness": QUARTERS})


def test_psi_of_a_known_shift() -> None:
    # sum (a - e) ln(a / e) over the four bins, worked by hand
    expected = (
        0.15 * math.log(0.40 / 0.25)
        + 0.05 * math.log(0.30 / 0.25)
        - 0.05 * math.log(0.20 / 0.25)
        - 0.15 * math.log(0.10 / 0.25)
    )
    assert expected == pytest.approx(0.2282175, abs=1e-7)
    assert monitoring.psi([0.25] * 4, [0.4, 0.3, 0.2, 0.1]) == pytest.approx(expected)
    assert monitoring.psi([0.25] * 4, [0.25] * 4) == 0.0
    # an empty bin is floored at 1e-4 instead of dividing by zero
    everything_low = 0.75 * math.log(1 / 0.25) + 3 * (1e-4 - 0.25) * math.log(1e-4 / 0.25)
    assert monitoring.psi([0.25] * 4, [1.0, 0, 0, 0]) == pytest.approx(everything_low)
    with pytest.raises(ValueError, match="4 expected shares but 3"):
        monitoring.psi([0.25] * 4, [0.5, 0.5, 0])


def test_shares_put_a_value_on_an_edge_in_the_upper_bin() -> None:
    assert monitoring.shares([0.5, 1.0, 1.5, 2.0, 3.0, 9.0, 2.5, 0.0], (1.0, 2.0, 3.0)) == [
        0.25,
        0.25,
        0.25,
        0.25,
    ]
    assert monitoring.shares([], (1.0,)) == [0.0, 0.0]


def test_drift_needs_enough_photographs_and_alerts_at_the_threshold() -> None:
    shifted = [0.5] * 40 + [1.5] * 30 + [2.5] * 20 + [3.5] * 10  # shares .4 .3 .2 .1
    found = monitoring.drift(QUARTERS, shifted, min_photos=100, alert=0.2)
    assert found.value == pytest.approx(0.2282, abs=1e-4) and found.alert
    assert "ALERT" in found.words
    assert not monitoring.drift(QUARTERS, shifted, min_photos=100, alert=0.25).alert
    few = monitoring.drift(QUARTERS, shifted[:99], min_photos=100, alert=0.2)
    assert few.value is None and not few.alert and few.words == "too few photographs (99)"


def test_the_shipped_reference_describes_the_held_out_set() -> None:
    reference = monitoring.load_reference()
    data = json.loads(monitoring.SHIPPED_REFERENCE.read_text())
    assert data["schema"] == drift_reference.SCHEMA
    assert (data["seed"], data["n"], data["max_side"]) == (3003, 2000, 1152)
    assert set(reference.metrics) == {"brightness", "focus"}
    for metric in reference.metrics.values():
        assert len(metric.edges) == 9 and list(metric.edges) == sorted(metric.edges)
        assert sum(metric.proportions) == pytest.approx(1.0, abs=1e-5)
        assert all(p == pytest.approx(0.1, abs=0.01) for p in metric.proportions)  # deciles
    brightness = data["metrics"]["brightness"]
    assert 40 < brightness["p05"] < brightness["p50"] < brightness["p95"] < 170  # gradable range


def test_the_reference_is_rebuilt_reproducibly() -> None:
    small = drift_reference.build(n=3)
    assert small == drift_reference.build(n=3)
    edges = small["metrics"]["brightness"]["edges"]
    assert edges == sorted(edges)
    # The held-out set's first photographs still measure what the shipped file recorded, within
    # 1 % of that measurement's spread in the reference (its standard deviation). The figures
    # come through a JPEG encoder and decoder, resampling and float reductions whose last bits
    # an honest library or CPU change may move (seen: 1e-4 of 255 grey levels); a shift of 1 %
    # of a standard deviation changes the drift PSI against the reference by well under 0.001
    # (the alert is at 0.2), while a real change of method moves these figures by far more.
    shipped = json.loads(monitoring.SHIPPED_REFERENCE.read_text())
    assert len(shipped["first"]) == len(small["first"]) == 3
    for rebuilt, recorded in zip(small["first"], shipped["first"], strict=True):
        for name, value in recorded.items():
            tolerance = 0.01 * shipped["metrics"][name]["sd"]
            assert rebuilt[name] == pytest.approx(value, abs=tolerance), name


def test_a_broken_reference_is_refused_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "ref.json"
    path.write_text(
        json.dumps(
            {"metrics": {"brightness": {"label": "b", "edges": [1.0], "proportions": [1.0]}}}
        )
    )
    with pytest.raises(ValueError, match="needs one more share than edges"):
        monitoring.load_reference(path)
    path.write_text("{")
    with pytest.raises(ValueError, match="not a usable monitoring reference"):
        monitoring.load_reference(path)


def _photo(services: Any, day: date, brightness: float, **kw: Any) -> None:
    stamp = f"{day.isoformat()}T08:00:00.000000+00:00"
    with services.store.write() as tx:
        n = tx.one("SELECT count(*) AS n FROM captures")["n"]
        pk = tx.insert(
            "captures",
            {
                "source": "upload",
                "media_type": "image/png",
                "content_sha256": f"{n:064x}",
                "file_path": "x",
                "size_bytes": 1,
                "received_at": stamp,
                "status": "processed",
                "sop_class_uid": kw.get("sop_class_uid"),
            },
        )
        tx.insert(
            "quality_reports",
            {
                "capture_pk": pk,
                "gradable": int(kw.get("gradable", True)),
                "score": 1.0,
                "reasons": "[]",
                "guidance": "[]",
                "created_at": stamp,
                "metrics": json.dumps({"brightness": brightness}),
            },
        )
        services.audit.record(
            tx,
            AuditEvent(
                EventID.IMPORT, Action.CREATE, kw.get("user", "olga"), detail={"capture_id": pk}
            ),
        )


def test_each_days_drift_covers_the_trailing_window(services: Any) -> None:
    end = date(2026, 11, 20)
    for offset, value in ((0, 0.5), (1, 1.5), (2, 2.5), (3, 3.5)):
        for _ in range(10):
            _photo(services, end - timedelta(days=offset), value)
    _photo(services, end - timedelta(days=9), 0.5)  # outside the period and every window
    report = monitoring.report(
        services.store, REFERENCE, end=end, days=3, window_days=2, min_photos=20, alert=0.2
    )
    assert [d.label for d in report.days] == ["2026-11-18", "2026-11-19", "2026-11-20"]
    assert [d.photos for d in report.days] == [10, 10, 10]
    # 18th: days 17 + 18 → bins 3, 2 (half each) against quarters
    half = 2 * (0.25 * math.log(0.5 / 0.25)) + 2 * ((1e-4 - 0.25) * math.log(1e-4 / 0.25))
    assert report.days[0].drift["brightness"].value == pytest.approx(half, abs=1e-4)
    assert report.total.photos == 30 and report.latest.photos == 20
    assert report.operators[0].label == "olga" and report.cameras[0].label == "web upload"
    assert report.histograms[0].actual == (1 / 3, 1 / 3, 1 / 3, 0.0)
    assert report.alerts[0].startswith(
        "Brightness has drifted from the validation reference (all photographs, last 2 days)"
    )


def test_a_day_without_photographs_has_no_rates(services: Any) -> None:
    report = monitoring.report(services.store, REFERENCE, end=date(2026, 1, 2), days=2)
    assert [(d.photos, d.ungradable_rate, d.referral_rate) for d in report.days] == [
        (0, None, None),
        (0, None, None),
    ]
    assert report.alerts == [] and report.cameras == []


def test_oct_volumes_are_not_counted_as_photographs(services: Any) -> None:
    day = date(2026, 11, 20)
    _photo(services, day, 0.5)
    _photo(services, day, 0.5, gradable=False, sop_class_uid="1.2.840.10008.5.1.4.1.1.77.1.5.4")
    report = monitoring.report(services.store, REFERENCE, end=day, days=1)
    assert report.days[0].photos == 1 and report.days[0].ungradable_rate == 0.0
