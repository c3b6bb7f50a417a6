"""``appliance bench oct`` runs end to end: a served appliance measures every volume it is sent."""

from __future__ import annotations

import json

import pytest

from appliance.tools.bench_oct import bench_oct


def test_bench_oct_reports_latency_rss_and_accuracy(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_oct(n=2, geometry="small", as_json=True) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 2 and result["volume"] == "25 B-scans of 256 x 256, uncompressed OPT"
    assert result["cst_within_10um"].endswith("/2")  # both measured
    assert {"first_verdict_s", "p95_s", "rss_mb", "stage_p50_ms"} <= set(result)
    assert "oct_measure_ms" in result["stage_p50_ms"]
    with pytest.raises(ValueError, match="geometry must be one of"):
        bench_oct(n=1, geometry="nonsense")
