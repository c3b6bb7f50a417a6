"""Admin console monitoring: volume, ungradable and referral rates, drift (PSI) alerts."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from appliance.audit import Action, AuditEvent, EventID
from appliance.runtime.services import Services
from tests.admin_helpers import cells, text
from tests.conftest import fundus, jpeg_bytes, wait_for
from tests.web_helpers import add_user


# -- monitoring --------------------------------------------------------------------------------
def seed_photo(
    services: Services,
    day: str,
    *,
    brightness: float,
    focus: float = 0.65,
    gradable: bool = True,
    referable: bool | None = None,
    calling_ae: str | None = "CAM1",
    user: str = "ae:CAM1",
    human_grading: bool = False,
) -> int:
    """A capture with its quality report, result and receive event as the pipeline stores them
    (written directly so a test can choose the measurements and the day)."""
    stamp = f"{day}T10:00:00.000000+00:00"
    with services.store.write() as tx:
        n = tx.one("SELECT count(*) AS n FROM captures")["n"]  # type: ignore[index]
        pk = tx.insert(
            "captures",
            {
                "source": "dicom" if calling_ae else "upload",
                "media_type": "image/jpeg",
                "content_sha256": f"{n:064x}",
                "file_path": f"x/{n}.jpg",
                "size_bytes": 1,
                "calling_ae": calling_ae,
                "received_at": stamp,
                "status": "processed",
            },
        )
        tx.insert(
            "quality_reports",
            {
                "capture_pk": pk,
                "gradable": int(gradable),
                "score": 0.8,
                "reasons": "[]",
                "guidance": "[]",
                "created_at": stamp,
                "metrics": json.dumps({"brightness": brightness, "focus": focus}),
            },
        )
        finding = {
            "referable": referable,
            "dme": False if referable is not None else None,
            "glaucoma_suspect": None,
        }
        tx.insert(
            "results",
            {
                "capture_pk": pk,
                "kind": "screening",
                "created_at": stamp,
                "payload": json.dumps(
                    {
                        "finding": finding,
                        "screening": {"status": "human_grading" if human_grading else "screened"},
                    }
                ),
            },
        )
        services.audit.record(
            tx,
            AuditEvent(EventID.IMPORT, Action.CREATE, user, detail={"capture_id": pk}),
        )
    return pk


def test_monitoring_shows_rates_per_day_camera_operator_and_a_drift_alert(
    admin: Any, services: Services
) -> None:
    today = datetime.now(UTC).date()
    yesterday = (today - timedelta(days=1)).isoformat()
    for i in range(40):  # far brighter than anything in the validation reference
        seed_photo(
            services,
            today.isoformat(),
            brightness=200.0 + i % 5,
            gradable=i % 4 != 0,
            referable=i % 3 == 0,
        )
    for i in range(10):  # 4 of them withheld for a grader (out of the models' domain)
        seed_photo(
            services, yesterday, brightness=95.0, calling_ae=None, user="olga", human_grading=i < 4
        )
    page = admin.get("/admin/monitoring")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    said = text(page)
    assert html.count('<svg class="chart"') == 7  # volume, 2 rates, 2 drifts, 2 histograms
    assert 'role="img"' in html and "<desc id=" in html
    assert "Drift alert." in said
    latest = r"\(all photographs, last 7 days\): PSI \d+\.\d{3} ≥ 0\.25 over 50 photographs"
    assert re.search("Brightness has drifted from the validation reference " + latest, said)
    assert "Brightness has drifted from the validation reference (camera CAM1 (DICOM))" in said
    # the per-day table: today 40 photographs, 10 ungradable (25.0%), none withheld for human
    # grading, 30 graded, 10 referable; yesterday 4 of 10 gradable photographs withheld
    day_row = re.search(rf"<th scope=\"row\">{today}</th>(.*?)</tr>", html, flags=re.S)
    assert day_row
    found = cells(day_row.group(1))
    assert found[:7] == ["40", "40", "10 (25.0%)", "0 (0.0%)", "30", "10", "33.3%"]
    before = re.search(rf"<th scope=\"row\">{yesterday}</th>(.*?)</tr>", html, flags=re.S)
    assert before and cells(before.group(1))[:4] == ["10", "10", "0 (0.0%)", "4 (40.0%)"]
    assert "drifted" in found[7]  # brightness PSI over the last 7 days
    camera = re.search(r'<table id="by-camera">.*?</table>', html, flags=re.S)
    operator = re.search(r'<table id="by-operator">.*?</table>', html, flags=re.S)
    assert camera and operator
    assert "CAM1 (DICOM)" in camera.group(0) and "web upload" in camera.group(0)
    assert "ae:CAM1" in operator.group(0) and "olga" in operator.group(0)
    # too few photographs for olga's own PSI
    assert "too few photographs (10)" in operator.group(0)
    # one operator's daily series
    mine = text(admin.get("/admin/monitoring?operator=olga"))
    assert "Per day — operator olga" in mine
    assert admin.get("/admin").get_data(as_text=True).count("Brightness has drifted") == 3


def test_monitoring_counts_a_real_upload_for_its_operator(
    app: Any, admin: Any, services: Services
) -> None:
    add_user(services, "olga", "operator")
    capture = services.ingest_upload(
        jpeg_bytes(fundus(seed=5, size=(384, 512))),
        {"laterality": "R"},
        user_id="olga",
        address="127.0.0.1",
    )
    processed = "SELECT status FROM captures WHERE id = ?"
    wait_for(lambda: services.store.scalar(processed, (capture.id,)) == "processed", timeout=30)
    html = admin.get("/admin/monitoring").get_data(as_text=True)
    operator = re.search(r'<table id="by-operator">.*?</table>', html, flags=re.S)
    assert operator and re.search(
        r'<th scope="row">olga</th><td class="num">1</td>', operator.group(0)
    )
    assert "No drift alert" in text(admin.get("/admin/monitoring"))
