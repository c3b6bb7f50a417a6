"""Per-eye summaries and visit decisions under the shipped default rules."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.domain import EyeOutcome, ImageFinding, VisitOutcome
from appliance.outcome import CODES, URGENCIES, decide, load_rules, per_eye

RULES = load_rules()
ANY_FIELD = replace(RULES, required_field="any")

REFER = "More than mild diabetic retinopathy detected — refer to an eye care professional"
RESCREEN = "Negative for more than mild diabetic retinopathy — rescreen in 12 months"
RETAKE = "Insufficient image quality — retake, or refer if retakes fail"
GLAUCOMA = "Glaucoma suspect — refer"
NO_MODEL = "No screening model installed — images were checked for quality only"
UNGRADED_REFER = "Images could not be graded after retakes — refer to an eye care professional"
MISSING_LEFT = "Left eye: no photograph yet — take a macula-centred photograph of the left eye."
MISSING_RIGHT = "Right eye: no photograph yet — take a macula-centred photograph of the right eye."
ALSO_GLAUCOMA = "Also a glaucoma suspect — mention the optic disc finding in the referral."
URGENCY_RANK = {"routine": 0, "soon": 1, "urgent": 2}


def photo(
    side: str | None = "L", grade: int = 0, cid: int | None = None, **kw: Any
) -> ImageFinding:
    """A gradable macula-centred photograph graded by all models."""
    values: dict[str, Any] = {
        "capture_id": cid,
        "laterality": side,
        "field": "macula",
        "gradable": True,
        "dr_grade": grade,
        "referable": grade >= 2,
        "dme": False,
        "cdr": 0.3,
        "glaucoma_suspect": False,
    }
    values.update(kw)
    return ImageFinding(**values)


def bad(side: str | None = "L", *reasons: str, cid: int | None = None) -> ImageFinding:
    """An ungradable photograph (no model fields: the models do not grade it)."""
    return ImageFinding(cid, side, "macula", False, quality_reasons=reasons)


def both(left: int = 0, right: int = 0) -> list[ImageFinding]:
    return [photo("L", left, cid=1), photo("R", right, cid=2)]


def test_clear_visit_rescreens_in_12_months() -> None:
    outcome = decide(both(0, 1), RULES)
    assert outcome == VisitOutcome(
        code="rescreen",
        text=RESCREEN,
        recall_months=12,
        urgency="routine",
        rule_set="primary-care-dr-screening@1.2.0",
        complete=True,
        eyes=per_eye(both(0, 1), RULES),
        prompts=(),
    )


@pytest.mark.parametrize(
    ("left", "right", "urgency"),
    [(2, 0, "routine"), (0, 3, "soon"), (4, 0, "urgent"), (3, 4, "urgent"), (2, 3, "soon")],
)
def test_referable_grades_refer_with_urgency(left: int, right: int, urgency: str) -> None:
    outcome = decide(both(left, right), RULES)
    assert (outcome.code, outcome.text, outcome.urgency) == ("refer", REFER, urgency)
    assert outcome.recall_months is None and outcome.complete and outcome.prompts == ()


def test_dme_alone_refers_routinely() -> None:
    findings = [photo("L", 1, dme=True, referable=False), photo("R", 0)]
    outcome = decide(findings, RULES)
    assert (outcome.code, outcome.text, outcome.urgency) == ("refer", REFER, "routine")
    assert outcome.eyes[0].referable is True and outcome.eyes[0].dme is True


def test_model_referable_flag_alone_refers() -> None:
    outcome = decide([photo("L", 1, referable=True), photo("R", 0)], RULES)
    assert (outcome.code, outcome.urgency) == ("refer", "routine")


def test_glaucoma_suspect_without_dr_is_glaucoma_refer() -> None:
    findings = [photo("L", 1, cdr=0.8, glaucoma_suspect=True), photo("R", 0)]
    outcome = decide(findings, RULES)
    assert (outcome.code, outcome.text, outcome.recall_months) == ("glaucoma_refer", GLAUCOMA, None)
    assert outcome.prompts == ()


def test_referable_dr_and_glaucoma_refer_for_dr_and_mention_glaucoma() -> None:
    findings = [photo("L", 3), photo("R", 0, cdr=0.8, glaucoma_suspect=True)]
    outcome = decide(findings, RULES)
    assert (outcome.code, outcome.text, outcome.urgency) == ("refer", REFER, "soon")
    assert outcome.prompts == (ALSO_GLAUCOMA,)


@pytest.mark.parametrize(("present", "prompt"), [("L", MISSING_RIGHT), ("R", MISSING_LEFT)])
def test_missing_eye_is_incomplete_with_exact_prompt(present: str, prompt: str) -> None:
    outcome = decide([photo(present, 0)], RULES)
    assert outcome.code == "incomplete"
    assert (
        outcome.text
        == "Screening incomplete — more photographs are needed before a result can be given"
    )
    assert (outcome.complete, outcome.recall_months, outcome.prompts) == (False, None, (prompt,))
    assert {e.eye: e.status for e in outcome.eyes} == {
        present: "graded",
        "LR".replace(present, ""): "missing",
    }


def test_empty_visit_asks_for_both_eyes() -> None:
    outcome = decide([], RULES)
    assert outcome.code == "incomplete"
    assert outcome.prompts == (MISSING_LEFT, MISSING_RIGHT)


def test_ungradable_eye_asks_for_a_retake_naming_the_reason() -> None:
    findings = [photo("L", 0), bad("R", "too_dark", cid=5), bad("R", "too_dark", cid=6)]
    outcome = decide(findings, RULES)
    assert (outcome.code, outcome.text, outcome.complete) == ("retake", RETAKE, False)
    assert outcome.prompts == (
        "Right eye: the photographs are not gradable (too dark) — retake; if retakes keep failing,"
        " refer.",
    )
    assert outcome.eyes[1] == EyeOutcome("R", "ungradable", capture_ids=(5, 6))


def test_one_ungradable_photograph_with_two_reasons() -> None:
    outcome = decide([photo("R", 0), bad("L", "too_dark", "out_of_focus")], RULES)
    assert outcome.prompts == (
        "Left eye: the photograph is not gradable (too dark and out of focus) — retake; if retakes"
        " keep failing, refer.",
    )


def test_retakes_exhausted_refers() -> None:
    findings = [photo("L", 0), bad("R", "too_dark"), bad("R", "too_dark"), bad("R", "low_contrast")]
    outcome = decide(findings, RULES)
    assert (outcome.code, outcome.text, outcome.urgency) == ("refer", UNGRADED_REFER, "routine")
    assert outcome.prompts == (
        "Right eye: 3 photographs were not gradable (too dark and hazy) — retakes have not worked;"
        " refer to an eye care professional.",
    )
    assert decide(findings[:3], RULES).code == "retake"  # two failures: a retake is still due


def test_referable_in_one_eye_refers_even_with_the_other_missing() -> None:
    outcome = decide([photo("R", 4)], RULES)
    assert (outcome.code, outcome.urgency, outcome.complete) == ("refer", "urgent", False)
    assert outcome.prompts == (MISSING_LEFT,)


def test_referable_in_one_eye_refers_even_with_the_other_ungradable() -> None:
    outcome = decide([photo("R", 2), bad("L", "off_center")], RULES)
    assert outcome.code == "refer"
    assert outcome.prompts[0].startswith("Left eye: the photograph is not gradable (off centre)")


def test_no_model_says_so_and_keeps_quality_prompts() -> None:
    findings = [photo("L", 4, dme=True), bad("R", "too_bright")]
    outcome = decide(findings, RULES, models_installed=False)
    assert (outcome.code, outcome.text, outcome.recall_months) == ("no_model", NO_MODEL, None)
    assert outcome.complete is False
    assert outcome.eyes[0] == EyeOutcome("L", "graded")  # model fields are not used
    assert outcome.prompts == (
        "Right eye: the photograph is not gradable (too bright) — retake; if retakes keep failing,"
        " refer.",
    )


def test_a_gradable_photograph_without_a_screening_result_is_incomplete() -> None:
    blank = ImageFinding(7, "R", "macula", True)
    outcome = decide([photo("L", 0), blank], RULES)
    assert outcome.code == "incomplete"
    assert outcome.prompts == (
        "Right eye: the screening model gave no result for the photographs — run the screening"
        " again, or ask a reviewer to grade them.",
    )


def test_disc_photographs_add_findings_but_do_not_complete_an_eye() -> None:
    findings = [photo("L", 0), photo("R", 0, field="disc")]
    outcome = decide(findings, RULES)
    assert outcome.code == "incomplete"
    assert outcome.prompts == (
        "Right eye: no macula-centred photograph yet — take a macula-centred photograph of the"
        " right eye.",
    )
    assert decide(findings, ANY_FIELD).code == "rescreen"
    assert decide([photo("L", 0), photo("R", 2, field="disc")], RULES).code == "refer"


def test_ungradable_photograph_of_unknown_field_counts_as_an_attempt() -> None:
    unknown = ImageFinding(None, "R", None, False, quality_reasons=("not_fundus",))
    outcome = decide([photo("L", 0), unknown], RULES)
    assert outcome.code == "retake"
    assert "(not a retina photograph)" in outcome.prompts[0]


def test_unlabelled_photographs_complete_nothing_but_still_refer() -> None:
    outcome = decide([photo("L", 0), photo(None, 0)], RULES)
    assert outcome.code == "incomplete"
    assert outcome.prompts == (
        MISSING_RIGHT,
        "A photograph has no eye label — mark it Left or Right so it counts for that eye.",
    )
    outcome = decide([photo("L", 0), photo(None, 3), photo("B", 0)], RULES)
    assert (outcome.code, outcome.urgency) == ("refer", "soon")
    assert "2 photographs have no eye label" in outcome.prompts[1]


CONFLICT_R = (
    "Check the eye label: the photograph labelled Right (OD) looks like a left eye — keep the"
    " label or use the detected eye; until then it counts for neither eye."
)
UNRESOLVED_L = (
    "Left eye: not counted yet — a photograph's eye label is in question; decide which eye it"
    " shows."
)


def test_label_mismatch_counts_for_neither_eye_until_decided() -> None:
    """A right-labelled photograph that looks like a left eye: neither eye is done, never a
    rescreen, and the prompt names the label and the detected eye the right way round."""
    findings = [photo("R", 0, cid=1, laterality_mismatch=True)]
    outcome = decide(findings, RULES)
    assert outcome.code == "incomplete" and not outcome.complete
    assert [(e.eye, e.status, e.capture_ids) for e in outcome.eyes] == [
        ("L", "unresolved", ()),
        ("R", "unresolved", ()),
    ]
    assert outcome.prompts == (
        UNRESOLVED_L,
        UNRESOLVED_L.replace("Left", "Right"),
        CONFLICT_R,
    )


def test_label_mismatch_beside_a_graded_eye_leaves_the_other_unresolved() -> None:
    findings = [photo("L", 0, cid=1), photo("R", 0, cid=2, laterality_mismatch=True)]
    outcome = decide(findings, RULES)
    assert outcome.code == "incomplete"
    assert [(e.eye, e.status) for e in outcome.eyes] == [("L", "graded"), ("R", "unresolved")]
    assert outcome.prompts == (UNRESOLVED_L.replace("Left", "Right"), CONFLICT_R)
    # a person's decision hands the photograph over with its eye and no mismatch: complete
    decided = [findings[0], replace(findings[1], laterality="R", laterality_mismatch=False)]
    assert decide(decided, RULES).code == "rescreen"


def test_label_mismatch_never_hides_a_referral() -> None:
    outcome = decide([photo("L", 0, cid=1), photo("L", 3, cid=2, laterality_mismatch=True)], RULES)
    assert (outcome.code, outcome.urgency) == ("refer", "soon")
    assert "labelled Left (OS) looks like a right eye" in outcome.prompts[-1]


def test_per_eye_worst_gradable_finding_wins() -> None:
    findings = [
        photo("L", 1, cid=1, cdr=0.4),
        photo("L", 3, cid=2, field="disc", cdr=0.7, dme=True, glaucoma_suspect=True),
        bad("L", "too_dark", cid=3),
        replace(bad("L", cid=4), dr_grade=4, referable=True),  # ungradable: ignored
        photo("R", 0, cid=9),
    ]
    left, right = per_eye(findings, RULES)
    assert left == EyeOutcome("L", "graded", 3, True, True, 0.7, True, (1, 2, 3, 4))
    assert right == EyeOutcome("R", "graded", 0, False, False, 0.3, False, (9,))


def test_per_eye_unknown_model_fields_stay_unknown() -> None:
    (left,) = per_eye([ImageFinding(1, "L", "macula", True)], replace(RULES, eyes=("L",)))
    assert left == EyeOutcome("L", "graded", capture_ids=(1,))


def test_grade_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match=r"findings\[1\]\.dr_grade must be 0-4"):
        decide([photo("L", 0), photo("R", 0, dr_grade=5)], RULES)


# --- properties -----------------------------------------------------------------------------

REASONS = ("too_dark", "out_of_focus", "off_center", "low_contrast", "glare_from_lashes")
findings_st = st.builds(
    ImageFinding,
    capture_id=st.none() | st.integers(1, 50),
    laterality=st.sampled_from(["L", "R", None, "l"]),
    field=st.sampled_from(["macula", "disc", None]),
    gradable=st.booleans(),
    quality_reasons=st.lists(st.sampled_from(REASONS), max_size=2).map(tuple),
    dr_grade=st.none() | st.integers(0, 4),
    referable=st.none() | st.booleans(),
    dme=st.none() | st.booleans(),
    cdr=st.none() | st.floats(0, 1),
    glaucoma_suspect=st.none() | st.booleans(),
    laterality_mismatch=st.booleans(),
)
visits = st.lists(findings_st, max_size=7)
referable_st = st.builds(
    photo,
    side=st.sampled_from(["L", "R", None]),
    grade=st.integers(0, 4),
    field=st.sampled_from(["macula", "disc", None]),
    referable=st.just(True),
    laterality_mismatch=st.booleans(),
)


@settings(max_examples=150, deadline=None)
@given(visit=visits, extra=referable_st, at=st.integers(0, 7), models=st.booleans())
def test_adding_a_referable_photograph_never_undoes_a_referral(
    visit: list[ImageFinding], extra: ImageFinding, at: int, models: bool
) -> None:
    before = decide(visit, RULES, models_installed=models)
    after = decide([*visit[:at], extra, *visit[at:]], RULES, models_installed=models)
    for outcome in (before, after):
        assert outcome.code in CODES and outcome.urgency in URGENCIES
        assert outcome.rule_set == RULES.label
        assert [e.eye for e in outcome.eyes] == ["L", "R"]
        assert not outcome.complete or outcome.code not in ("incomplete", "retake", "no_model")
    if not models:
        assert before.code == after.code == "no_model"
        return
    assert after.code == "refer"  # a referable photograph always refers
    if before.code == "refer":
        assert URGENCY_RANK[after.urgency] >= URGENCY_RANK[before.urgency]


@settings(max_examples=100, deadline=None)
@given(visit=visits)
def test_rescreen_only_for_complete_clear_visits(visit: list[ImageFinding]) -> None:
    outcome = decide(visit, RULES)
    if outcome.code == "rescreen":
        assert outcome.complete and outcome.recall_months == 12
        assert all(e.status == "graded" and not e.referable for e in outcome.eyes)
        assert not any(
            f.gradable and (f.referable or f.dme or f.glaucoma_suspect or (f.dr_grade or 0) >= 2)
            for f in visit
        )


# -- photographs withheld for human grading ------------------------------------------------


def withheld(side: str = "L", *reasons: str, cid: int | None = None) -> ImageFinding:
    """A gradable photograph whose model results were withheld (the models are out of depth)."""
    return ImageFinding(cid, side, "macula", True, human_grading=reasons or ("out_of_domain",))


HUMAN = (
    "Human grading needed — the automated screening cannot assess these photographs; "
    "a grader will review them"
)


def test_a_withheld_photograph_goes_to_human_grading_never_to_rescreen() -> None:
    outcome = decide([photo("R", 0, cid=1), withheld("L", cid=2)], RULES)
    assert (outcome.code, outcome.text, outcome.recall_months) == ("human_grading", HUMAN, None)
    assert not outcome.complete
    assert outcome.prompts == (
        "Left eye: no automated result (the photograph is unlike those the models were "
        "validated on) — a grader will review the photograph; no retake is needed.",
    )


def test_a_referable_eye_is_still_referred_beside_a_withheld_one() -> None:
    assert decide([photo("R", 3, cid=1), withheld("L", cid=2)], RULES).code == "refer"


def test_a_missing_eye_is_asked_for_before_human_grading() -> None:
    outcome = decide([withheld("L", "gradability_model_disagrees", cid=2)], RULES)
    assert outcome.code == "incomplete" and MISSING_RIGHT in outcome.prompts


def test_without_models_nothing_is_withheld() -> None:
    outcome = decide([withheld("L", cid=1), withheld("R", cid=2)], RULES, models_installed=False)
    assert outcome.code == "no_model"


@given(st.lists(st.sampled_from(["L", "R"]), min_size=1, max_size=4), st.integers(0, 1))
@settings(max_examples=60, deadline=None)
def test_no_visit_with_a_withheld_photograph_is_ever_rescreened(
    sides: list[str], grade: int
) -> None:
    findings = [photo("L", grade, cid=1), photo("R", grade, cid=2)]
    findings += [withheld(side, cid=10 + i) for i, side in enumerate(sides)]
    assert decide(findings, RULES).code == "human_grading"
