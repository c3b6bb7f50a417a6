"""The monitoring page's OCT section: volumes, ungradable rate, signal strength; a reference
file without an OCT part gives the series and a plain "no reference"; one with it gives the PSI,
and the shipped file has one."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from appliance.config import Settings
from appliance.desks import monitoring
from tests.admin_helpers import cells, text
from tests.desks.test_monitoring_oct import oct_scan


class TestWithoutAnOctReference:
    """The shipped reference file without its OCT part."""

    @pytest.fixture
    def settings(self, settings: Settings, tmp_path: Path) -> Settings:
        path = tmp_path / "photographs-only.json"
        shipped = json.loads(monitoring.SHIPPED_REFERENCE.read_text())
        path.write_text(json.dumps({k: v for k, v in shipped.items() if not k.startswith("oct_")}))
        return settings.replace(monitoring_reference=str(path))

    def test_the_oct_section(self, admin: Any, services: Any) -> None:
        assert "No OCT volumes from" in text(admin.get("/admin/monitoring"))
        today = datetime.now(UTC).date()
        for signal in (20.0, 24.0):
            oct_scan(services, today, signal)
        oct_scan(services, today, 9.0, gradable=False)
        oct_scan(services, today - timedelta(days=1), 26.0)
        page = admin.get("/admin/monitoring")
        assert page.status_code == 200
        html, said = page.get_data(as_text=True), text(page)
        summary = (
            "OCT volumes: 4 ; not gradable 25.0% of 4 assessed; median signal strength 22.0 dB"
        )
        assert summary in said
        assert "No reference for the OCT signal strength: no OCT signal-strength reference" in said
        for chart in ("chart-oct-volume", "chart-oct-ungradable", "chart-oct-signal"):
            assert f'id="{chart}"' in html
        assert 'id="chart-oct-drift"' not in html
        row = re.search(
            rf'<table id="oct-by-day">.*?<th scope="row">{today}</th>(.*?)</tr>', html, re.S
        )
        assert row and cells(row.group(1)) == ["3", "3", "1 (33.3%)", "20.0"]
        assert "Drift alert." not in said  # the photographs' section: nothing changed there


class TestWithAReference:
    """A reference file with ``oct_metrics.signal_db`` (quarters between 15 and 25 dB)."""

    @pytest.fixture
    def settings(self, settings: Settings, tmp_path: Path) -> Settings:
        path = tmp_path / "reference.json"
        shipped = json.loads(monitoring.SHIPPED_REFERENCE.read_text())
        quarters = {"edges": [15.0, 20.0, 25.0], "proportions": [0.25] * 4}
        path.write_text(json.dumps({**shipped, "oct_metrics": {"signal_db": quarters}}))
        return settings.replace(monitoring_reference=str(path), monitoring_psi_min_photos=10)

    def test_the_oct_signal_psi(self, admin: Any, services: Any) -> None:
        today = datetime.now(UTC).date()
        for i in range(12):
            oct_scan(services, today, 31.0 + i % 2)
        page = admin.get("/admin/monitoring")
        html, said = page.get_data(as_text=True), text(page)
        assert 'id="chart-oct-drift"' in html
        assert re.search(r"OCT signal strength has drifted from its reference \(all OCT volumes, "
                         r"last 7 days\): PSI \d\.\d{3} ≥ 0\.25 over 12 volumes", said)  # fmt: skip
