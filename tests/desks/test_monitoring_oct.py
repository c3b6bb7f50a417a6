"""OCT monitoring: volumes per day, ungradable rate, signal strength and its PSI against a
reference when the reference file has one (else the series and no PSI); photographs' figures
untouched."""

from __future__ import annotations

import json
import math
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from appliance.capture.decode import OPT_SOP_CLASS
from appliance.desks import monitoring
from appliance.desks.monitoring_oct import load_oct_reference, oct_report
from appliance.tools import drift_reference
from tests.desks.test_monitoring import REFERENCE, _photo


def oct_scan(services: Any, day: date, signal_db: float | None, gradable: bool = True) -> None:
    """An OPT capture on ``day``; ``signal_db`` None: not analysed (no quality report)."""
    stamp = f"{day.isoformat()}T09:00:00.000000+00:00"
    with services.store.write() as tx:
        n = tx.one("SELECT count(*) AS n FROM captures")["n"]
        pk = tx.insert(
            "captures",
            {"source": "dicom", "media_type": "application/dicom",
             "content_sha256": f"{n + 10_000:064x}", "file_path": "x", "size_bytes": 1,
             "received_at": stamp, "status": "processed", "sop_class_uid": OPT_SOP_CLASS},
        )  # fmt: skip
        if signal_db is None:
            return
        tx.insert(
            "quality_reports",
            {"capture_pk": pk, "gradable": int(gradable), "score": 1.0, "reasons": "[]",
             "guidance": "[]", "created_at": stamp,
             "metrics": json.dumps({"signal_db": signal_db, "motion_um": 3.0})},
        )  # fmt: skip


def _reference(tmp_path: Path, oct_metrics: Any) -> Path:
    path = tmp_path / "reference.json"
    shipped = json.loads(monitoring.SHIPPED_REFERENCE.read_text())
    path.write_text(json.dumps({**shipped, "oct_metrics": oct_metrics, "oct_n": 400,
                                "oct_source": "OCT test quarters"}))  # fmt: skip
    return path


def test_without_a_reference_the_series_is_shown_and_no_psi(services: Any, tmp_path: Path) -> None:
    end = date(2026, 11, 20)
    for signal in (20.0, 22.0, 30.0):
        oct_scan(services, end, signal)
    oct_scan(services, end, 10.0, gradable=False)
    oct_scan(services, end, None)  # not analysed: counted, not assessed
    oct_scan(services, end - timedelta(days=1), 25.0)
    _photo(services, end, 0.5)  # a photograph: not an OCT volume
    photographs_only = tmp_path / "photographs-only.json"
    shipped = json.loads(monitoring.SHIPPED_REFERENCE.read_text())
    photographs_only.write_text(
        json.dumps({k: v for k, v in shipped.items() if not k.startswith("oct_")})
    )
    reference, note = load_oct_reference(photographs_only)
    assert reference is None and note.startswith("no OCT signal-strength reference")
    found = oct_report(services.store, reference, note, end=end, days=2, window_days=2)
    assert [(d.label, d.volumes, d.assessed, d.ungradable) for d in found.days] == [
        ("2026-11-19", 1, 1, 0),
        ("2026-11-20", 5, 4, 1),
    ]
    assert found.days[1].ungradable_rate == 0.25
    assert [d.signal_median for d in found.days] == [25.0, 21.0]
    assert all(d.drift is None for d in found.days) and found.alerts == []
    assert found.total.volumes == 6
    photos = monitoring.report(services.store, REFERENCE, end=end, days=2)
    assert [d.photos for d in photos.days] == [0, 1]  # the photographs' figures: unchanged


def test_with_a_reference_the_signal_psi_alerts(services: Any, tmp_path: Path) -> None:
    quarters = {"label": "OCT signal strength: dB", "edges": [15.0, 20.0, 25.0],
                "proportions": [0.25] * 4}  # fmt: skip
    reference, note = load_oct_reference(_reference(tmp_path, {"signal_db": quarters}))
    assert reference is not None and note == "OCT test quarters (400 volumes)"
    end = date(2026, 11, 20)
    for i in range(20):  # every volume in the top bin: far from the reference
        oct_scan(services, end, 30.0 + i % 3)
    found = oct_report(services.store, reference, note, end=end, days=1, window_days=7,
                       min_volumes=10, alert=0.25)  # fmt: skip
    top = 0.75 * math.log(1 / 0.25) + 3 * (1e-4 - 0.25) * math.log(1e-4 / 0.25)
    day = found.days[0].drift
    assert day is not None and day.value == pytest.approx(top, abs=1e-4) and day.alert
    assert found.alerts == [
        f"OCT signal strength has drifted from its reference (all OCT volumes, last 7 days): "
        f"PSI {day.value:.3f} ≥ 0.25 over 20 volumes"
    ]
    few = oct_report(services.store, reference, note, end=end, days=1, min_volumes=100)
    assert few.days[0].drift is not None and few.days[0].drift.words == "too few volumes (20)"


def test_a_broken_oct_reference_is_said(tmp_path: Path) -> None:
    bad = {"signal_db": {"edges": [1.0], "proportions": [1.0]}}
    assert load_oct_reference(_reference(tmp_path, bad)) == (
        None,
        "reference.json: the OCT signal reference needs one more share than edges",
    )  # fmt: skip
    reference, note = load_oct_reference(_reference(tmp_path, {"signal_db": {"edges": "x"}}))
    assert reference is None and "not a usable OCT reference" in note


def test_the_shipped_reference_has_the_held_out_oct_signal() -> None:
    reference, note = load_oct_reference()
    data = json.loads(monitoring.SHIPPED_REFERENCE.read_text())
    assert reference is not None and reference.name == "signal_db"
    assert (data["oct_seed"], data["oct_geometry"]) == (3203, "spectralis49")
    assert data["oct_n"] >= 190 and f"({data['oct_n']} volumes)" in note
    assert len(reference.edges) == 9 and list(reference.edges) == sorted(reference.edges)
    assert sum(reference.proportions) == pytest.approx(1.0, abs=1e-5)
    signal = data["oct_metrics"]["signal_db"]
    # the set has its low-signal volumes (the generator's proportion of that defect): the
    # lowest decile reaches more than 2 dB under the median
    assert signal["p05"] < reference.edges[0] < signal["p50"] - 2.0 < signal["p95"]


def test_the_oct_reference_is_rebuilt_from_the_pipeline() -> None:
    """The held-out set's first volumes, sent as OPT objects and analysed by the pipeline, still
    measure what the shipped file recorded, within 1 % of that measurement's spread in the
    reference (its standard deviation): float reductions and an honest library change may move
    the last bits; a change of method moves them by far more."""
    shipped = json.loads(monitoring.SHIPPED_REFERENCE.read_text())
    recorded = shipped["oct_first"][:2]
    assert len(recorded) == 2
    tolerance = 0.01 * shipped["oct_metrics"]["signal_db"]["sd"]
    for index, figures in enumerate(recorded):
        rebuilt = drift_reference.measure_oct(shipped["oct_seed"], index)
        assert rebuilt.keys() == figures.keys()
        for name, value in figures.items():
            assert rebuilt[name] == pytest.approx(value, abs=tolerance), name
