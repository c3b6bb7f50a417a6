"""/metrics: Prometheus text with stage latencies and counts, and no PHI."""

from __future__ import annotations

from typing import Any

from tests.conftest import API_TOKEN, fundus, jpeg_bytes, wait_for


def test_metrics_count_captures_and_stage_latency(client: Any, services: Any) -> None:
    response = client.post(
        "/api/captures",
        headers={"Authorization": f"Bearer {API_TOKEN}"},
        data={"file": (__import__("io").BytesIO(jpeg_bytes(fundus(seed=3))), "x.jpg"),
              "patient_id": "MRN-777", "patient_name": "Secret^Name"},
        content_type="multipart/form-data",
    )  # fmt: skip
    assert response.status_code == 201
    wait_for(lambda: services.pipeline.pending() == 0)
    client.post("/api/captures", headers={"Authorization": "Bearer wrong"})
    body = client.get("/metrics").get_data(as_text=True)
    assert 'appliance_captures_total{source="upload"} 1.0' in body
    assert 'appliance_refused_total{reason="not_authorised",source="upload"} 1.0' in body
    assert 'appliance_stage_seconds_count{stage="quality"} 1.0' in body
    assert "appliance_pending_analysis 0.0" in body
    assert "appliance_outbox_depth 0.0" in body
    assert "MRN-777" not in body and "Secret" not in body
