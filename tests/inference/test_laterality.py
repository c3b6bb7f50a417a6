"""Laterality and field from the disc position, on generated photographs with known truth."""

from __future__ import annotations

from appliance.inference.anatomy import detect
from appliance.synth.case import render_case
from appliance.synth.dataset import case_for


def test_laterality_and_field_agree_with_the_generator() -> None:
    cases = [case_for(99, i, (480, 640)) for i in range(80)]
    clean = [c for c in cases if c.defect is None]
    results = [(c, detect(render_case(c))) for c in clean]
    laterality = sum(a.laterality == c.eye for c, a in results) / len(results)
    field = sum(a.field == c.field for c, a in results) / len(results)
    assert len(results) >= 50
    assert laterality >= 0.95 and field >= 0.95
    macula = [a for c, a in results if c.field == "macula"]
    assert all(a.laterality == c.eye for c, a in results if c.field == "macula")
    assert all(0 <= a.confidence <= 1 for a in macula)
