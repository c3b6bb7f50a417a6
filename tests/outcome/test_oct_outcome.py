"""OCT findings in the outcome: device CST thresholds and central fluid refer, an ungradable OCT
is retaken, an OCT alone answers DME for its eye, and nothing OCT-shaped ends in a negative
unless it was measured and judged."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.domain import OctFinding
from appliance.outcome import decide, load_rules
from appliance.outcome.oct import verdict
from appliance.outcome.rules import DEFAULT_RULES
from tests.outcome.test_decide import RESCREEN, both, visits

RULES = load_rules()
TEXT = DEFAULT_RULES.read_text(encoding="utf-8")
CI_DME = "Centre-involving diabetic macular oedema on OCT — refer to an eye care professional"
OCT_RETAKE = "Insufficient OCT scan quality — retake the OCT scan, or refer if retakes fail"
SPECTRALIS = "Heidelberg Engineering Spectralis"


def scan(side: str = "R", cst: float | None = 270.0, **kw: Any) -> OctFinding:
    values: dict[str, Any] = {
        "capture_id": 9,
        "laterality": side,
        "gradable": True,
        "device": SPECTRALIS,
        "cst_um": cst,
        "p_fluid_centre": 0.0,
    }
    values.update(kw)
    return OctFinding(**values)


@pytest.mark.parametrize(
    ("device", "cst", "dme"),
    [
        (SPECTRALIS, 304.0, False),
        (SPECTRALIS, 305.0, True),
        ("Carl Zeiss Meditec Cirrus HD-OCT 5000", 295.0, True),
        ("Carl Zeiss Meditec Cirrus HD-OCT 5000", 285.0, False),
        ("Unknown Maker OCT-1", 299.0, False),  # the default, 300 µm
        ("Unknown Maker OCT-1", 300.0, True),
    ],
)
def test_the_cst_threshold_is_the_devices(device: str, cst: float, dme: bool) -> None:
    assert verdict(scan(cst=cst, device=device), RULES.oct).ci_dme is dme
    outcome = decide(both(), RULES, octs=[scan(cst=cst, device=device)])
    assert outcome.code == ("refer" if dme else "rescreen")
    right = next(e for e in outcome.eyes if e.eye == "R")
    assert right.oct_status == "graded" and right.oct_dme is dme and right.dme is dme
    assert right.cst_um == cst and right.oct_capture_ids == (9,)


def test_fluid_in_the_central_subfield_refers_whatever_the_thickness() -> None:
    outcome = decide(both(), RULES, octs=[scan(cst=250.0, p_fluid_centre=0.8)])
    assert (outcome.code, outcome.text, outcome.urgency) == ("refer", CI_DME, "soon")


def test_an_oct_without_a_photograph_still_answers_dme_for_its_eye() -> None:
    outcome = decide([], RULES, octs=[scan("L", cst=340.0)])
    assert outcome.code == "refer" and outcome.text == CI_DME
    left = next(e for e in outcome.eyes if e.eye == "L")
    assert left.status == "missing" and left.dme is True and left.oct_dme is True
    assert any("Left eye: no photograph yet" in p for p in outcome.prompts)
    clear = decide([], RULES, octs=[scan("L", cst=260.0)])
    assert clear.code == "incomplete"  # no photographs: no negative
    assert next(e for e in clear.eyes if e.eye == "L").dme is False


def test_an_ungradable_oct_is_retaken_never_a_negative() -> None:
    octs = [scan(gradable=False, cst=None, quality_reasons=("oct_low_signal",))]
    outcome = decide(both(), RULES, octs=octs)
    assert (outcome.code, outcome.text) == ("retake", OCT_RETAKE)
    assert outcome.prompts == (
        "Right eye OCT: the scan is not gradable (weak signal) — retake the OCT scan; "
        "if retakes keep failing, refer.",
    )
    assert next(e for e in outcome.eyes if e.eye == "R").oct_status == "ungradable"
    retaken = decide(both(), RULES, octs=[*octs, scan(cst=270.0)])
    assert retaken.code == "rescreen" and retaken.text == RESCREEN


def test_a_gradable_oct_without_an_automated_answer_goes_to_a_grader() -> None:
    for octs, rules in (
        ([scan(cst=None, human_grading=("central_subfield_not_measured",))], RULES),
        ([scan(cst=270.0)], replace(RULES, oct=None)),  # a rule file with no [oct] table
    ):
        outcome = decide(both(), rules, octs=octs)
        assert outcome.code == "human_grading"
        assert "Right eye OCT: no automated macular oedema answer" in outcome.prompts[0]


def test_without_a_model_the_oct_answers_nothing_either() -> None:
    outcome = decide(both(), RULES, models_installed=False, octs=[scan(cst=400.0)])
    assert outcome.code == "no_model"
    assert all(e.dme is None for e in outcome.eyes)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_rule_file_that_lets_an_ungradable_oct_go_home_is_refused(tmp_path: Path) -> None:
    head, *blocks = TEXT.split("[[decision]]")
    kept = [b for b in blocks if "any_oct_ungradable" not in b]
    with pytest.raises(ValueError, match="an OCT that is not gradable must never give rescreen"):
        load_rules(_write(tmp_path, head + "".join("[[decision]]" + b for b in kept)))


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("cst_threshold_um = 300", "cst_threshold_um = 900", "oct.cst_threshold_um must be"),
        ("p_fluid_centre = 0.5", "p_fluid_centre = 1.5", "oct.p_fluid_centre must be"),
        ('model = "Spectralis"', 'modell = "Spectralis"', "oct.device[0].modell is not a known"),
        ("p_fluid_centre = 0.5", "p_fluid = 0.5", "oct.p_fluid is not a known key"),
    ],
)
def test_bad_oct_tables_are_refused(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in TEXT
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_rules(_write(tmp_path, TEXT.replace(old, new, 1)))


def test_an_oct_that_stays_ungradable_after_the_retakes_is_referred() -> None:
    failed = [
        scan(gradable=False, cst=None, quality_reasons=("oct_motion",), capture_id=i)
        for i in (11, 12)
    ]
    assert decide(both(), RULES, octs=failed).code == "retake"  # first scan and one retake
    third = scan(gradable=False, cst=None, quality_reasons=("oct_motion",), capture_id=13)
    outcome = decide(both(), RULES, octs=[*failed, third])  # max_retakes = 2 spent
    assert outcome.code == "refer"
    assert outcome.text == (
        "Images could not be graded after retakes — refer to an eye care professional"
    )
    assert outcome.prompts == (
        "Right eye OCT: 3 scans were not gradable (eye movement) — retakes have not worked; "
        "refer to an eye care professional.",
    )


# --- properties -----------------------------------------------------------------------------
octs_st = st.builds(
    OctFinding,
    capture_id=st.none() | st.integers(51, 60),
    laterality=st.sampled_from(["L", "R", None]),
    gradable=st.booleans(),
    quality_reasons=st.lists(st.sampled_from(["oct_blink", "oct_motion"]), max_size=2).map(tuple),
    device=st.sampled_from([SPECTRALIS, "Carl Zeiss Meditec Cirrus", "Other OCT"]),
    cst_um=st.none() | st.floats(150, 600),
    p_fluid_centre=st.none() | st.floats(0, 1),
    human_grading=st.sampled_from([(), ("central_subfield_not_measured",)]),
)


@settings(max_examples=200, deadline=None)
@given(visit=visits, octs=st.lists(octs_st, max_size=4))
def test_an_oct_never_lets_a_patient_go_home_unjudged(
    visit: list[Any], octs: list[OctFinding]
) -> None:
    outcome = decide(visit, RULES, octs=octs)
    judged = [verdict(f, RULES.oct) for f in octs if f.laterality in ("L", "R")]
    if any(v.ci_dme for v in judged):
        assert outcome.code == "refer"  # centre-involving DME always refers
    if any(v.status != "graded" for v in judged):
        assert outcome.code != "rescreen"  # ungradable or unanswered: never a negative
    for eye in outcome.eyes:
        mine = [f for f in octs if f.laterality == eye.eye]
        assert (eye.oct_status is None) == (not mine)
