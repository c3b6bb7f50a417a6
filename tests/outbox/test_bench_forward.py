"""``appliance bench forward`` runs end to end: both senders deliver every file to Orthanc."""

from __future__ import annotations

import pytest

from appliance.tools.bench_forward import bench_forward, dcmtk_storescu
from tests.conftest import IN_CI
from tests.orthanc_server import orthanc_binary

pytestmark = pytest.mark.tool("Orthanc")


def test_bench_forward_prints_the_rates_and_the_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    orthanc_binary()  # skips locally / fails in CI without Orthanc
    if dcmtk_storescu() is None:
        message = "dcmtk's storescu is not installed (.ci/run lists the Debian packages)"
        if IN_CI:
            pytest.fail(f"CI=true and {message}")
        pytest.skip(message)
    assert bench_forward(n=3, width=320, height=240, rounds=1) == 0  # raises if any is missing
    out = capsys.readouterr().out
    assert "3 OP files, 320x240 JPEG" in out
    rates = [line for line in out.splitlines() if line.endswith("instances/s (best of 1)")]
    assert len(rates) == 3 and "ratio outbox / storescu:" in out
