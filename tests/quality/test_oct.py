"""OCT quality: one reason with its retake sentence per acquisition defect."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from appliance.quality.oct import OCT_GUIDANCE, OCT_REASON_ORDER, assess_oct
from appliance.synth.oct import GEOMETRIES, healthy_case, render_oct

BASE = healthy_case(3, GEOMETRIES["small"], "L")


def _assess(**changes: object):  # type: ignore[no-untyped-def]
    case = dataclasses.replace(BASE, **changes)  # type: ignore[arg-type]
    r = render_oct(case)
    return assess_oct(r.volume, r.spacing_mm, case.fovea_mm)


def test_good_volume_passes() -> None:
    report = _assess()
    assert report.gradable and report.reasons == () and report.score >= 0.5


@pytest.mark.parametrize(
    ("defect", "reason"),
    [
        ("blink", "oct_blink"),
        ("low_signal", "oct_low_signal"),
        ("clipped", "oct_clipped"),
        ("decentred", "oct_decentred"),
        ("motion", "oct_motion"),
    ],
)
def test_each_defect_gives_its_reason_and_advice(defect: str, reason: str) -> None:
    report = _assess(defect=defect, defect_strength=0.9)
    assert not report.gradable and report.score < 0.5
    assert reason in report.reasons
    assert report.guidance[report.reasons.index(reason)] == OCT_GUIDANCE[reason]
    assert report.reasons == tuple(r for r in OCT_REASON_ORDER if r in report.reasons)


def test_every_reason_has_advice() -> None:
    assert set(OCT_GUIDANCE) == set(OCT_REASON_ORDER)


@pytest.mark.parametrize(("strength", "flagged"), [(0.0, False), (0.9, True)])
def test_own_fovea_estimate_without_a_measurement(strength: float, flagged: bool) -> None:
    case = dataclasses.replace(
        BASE, defect="decentred" if strength else None, defect_strength=strength
    )
    r = render_oct(case)
    report = assess_oct(r.volume, r.spacing_mm)  # no fovea given: quality estimates its own
    offset = float(np.hypot(*case.fovea_mm))
    assert report.metrics["decentration_mm"] == pytest.approx(offset, abs=0.12)
    assert ("oct_decentred" in report.reasons) == flagged


def test_bad_volume_is_refused() -> None:
    with pytest.raises(ValueError, match="volume"):
        assess_oct(np.zeros((10, 10), np.uint8), (0.1, 0.004, 0.01))


@pytest.mark.parametrize("seed", [11, 12, 13, 14])
def test_a_retina_touching_the_top_is_not_read_as_motion(seed: int) -> None:
    """A usable clip (the ILM of under 10 % of the A-scans above the frame) brings bright
    tissue into the profiles' window near the top; that must not read as a jump between
    B-scans (it did, with an unnormalised correlation: 38-66 µm against 33)."""
    case = dataclasses.replace(
        BASE, seed=seed, geometry=GEOMETRIES["compact"], defect="clipped", defect_strength=0.1
    )
    r = render_oct(case)
    report = assess_oct(r.volume, r.spacing_mm, case.fovea_mm)
    assert "oct_motion" not in report.reasons, report.metrics
