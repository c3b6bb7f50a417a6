"""Rule files: the shipped default, and strict validation of edited copies."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from appliance.outcome import CODES, RuleSet, load_rules
from appliance.outcome.rules import DEFAULT_RULES

DEFAULT_TEXT = DEFAULT_RULES.read_text(encoding="utf-8")
HEAD, *BLOCKS = DEFAULT_TEXT.split("[[decision]]")

REFER = "More than mild diabetic retinopathy detected — refer to an eye care professional"
RESCREEN = "Negative for more than mild diabetic retinopathy — rescreen in 12 months"
RETAKE = "Insufficient image quality — retake, or refer if retakes fail"
GLAUCOMA = "Glaucoma suspect — refer"
NO_MODEL = "No screening model installed — images were checked for quality only"


def _block(code: str) -> int:
    return next(i for i, b in enumerate(BLOCKS) if f'code = "{code}"' in b)


def _compose(head: str, blocks: list[str]) -> str:
    return head + "".join("[[decision]]" + b for b in blocks)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "clinic-rules.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_default_rule_set_identity_and_protocol() -> None:
    rules = load_rules()
    assert isinstance(rules, RuleSet)
    assert (rules.name, rules.version) == ("primary-care-dr-screening", "1.2.0")
    assert rules.label == "primary-care-dr-screening@1.2.0"
    assert "ICDR" in rules.source
    assert (rules.required_field, rules.eyes, rules.max_retakes) == ("macula", ("L", "R"), 2)
    assert load_rules(DEFAULT_RULES) == rules


def test_default_texts_codes_and_urgencies() -> None:
    rows = [(d.code, d.text, d.recall_months, d.urgency) for d in load_rules().decisions]
    assert {code for code, *_ in rows} == set(CODES)
    assert ("no_model", NO_MODEL, None, "routine") in rows
    assert ("rescreen", RESCREEN, 12, "routine") in rows
    assert ("retake", RETAKE, None, "routine") in rows
    assert ("glaucoma_refer", GLAUCOMA, None, "routine") in rows
    refer = [(d.when, d.urgency) for d in load_rules().decisions if d.text == REFER]
    assert refer == [
        ((("any_eye", "proliferative"),), "urgent"),
        ((("any_eye", "severe"),), "soon"),
        ((("any_eye_referable", True),), "routine"),
    ]


def test_an_unchanged_copy_loads_under_its_own_path(tmp_path: Path) -> None:
    rules = load_rules(_write(tmp_path, DEFAULT_TEXT.replace('"1.2.0"', '"1.0.1-clinic"')))
    assert rules.label == "primary-care-dr-screening@1.0.1-clinic"
    assert rules.path.endswith("clinic-rules.toml")


def _without(code: str, line_start: str) -> str:
    blocks = list(BLOCKS)
    i = _block(code)
    blocks[i] = "\n".join(ln for ln in blocks[i].splitlines() if not ln.startswith(line_start))
    blocks[i] += "\n"
    return _compose(HEAD, blocks)


def _moved_first(code: str) -> str:
    blocks = list(BLOCKS)
    block = blocks.pop(_block(code))
    return _compose(HEAD, [block, *blocks])


BAD = [
    (DEFAULT_TEXT + "\n[extras]\nx = 1\n", "extras is not a known key"),
    (DEFAULT_TEXT.replace("[rule_set]\n", "[rule_set]\nauthor = 'me'\n"), "rule_set.author"),
    (DEFAULT_TEXT.replace('version = "1.2.0"\n', ""), "rule_set.version is required"),
    (DEFAULT_TEXT.replace('version = "1.2.0"', 'version = "1 0"'), "rule_set.version"),
    (DEFAULT_TEXT.replace("[protocol]\n", "[protocol]\nflash = 3\n"), "protocol.flash"),
    (
        DEFAULT_TEXT.replace('required_field = "macula"', 'required_field = "fovea"'),
        "protocol.required_field must be one of macula, disc, any",
    ),
    (DEFAULT_TEXT.replace('eyes = ["L", "R"]', 'eyes = ["L", "L"]'), "protocol.eyes"),
    (DEFAULT_TEXT.replace('eyes = ["L", "R"]', 'eyes = ["OD"]'), "protocol.eyes"),
    (DEFAULT_TEXT.replace("max_retakes = 2", "max_retakes = -1"), "protocol.max_retakes"),
    (DEFAULT_TEXT.replace("max_retakes = 2", "max_retakes = true"), "protocol.max_retakes"),
    (HEAD, "decision is required"),
    (
        DEFAULT_TEXT.replace('urgency = "urgent"', 'urgency = "urgent"\ncolour = "red"'),
        "decision[1].colour is not a known key",
    ),
    (
        DEFAULT_TEXT.replace("any_eye_referable = true", "any_eye_referrable = true"),
        "decision[4].when.any_eye_referrable is not a known condition",
    ),
    (
        DEFAULT_TEXT.replace('any_eye = "severe"', 'any_eye = "very bad"'),
        "decision[2].when.any_eye must be one of none, mild, moderate, severe, proliferative",
    ),
    (
        DEFAULT_TEXT.replace("any_eye_ungradable = true", 'any_eye_ungradable = "yes"'),
        "decision[7].when.any_eye_ungradable must be true or false",
    ),
    (_without("glaucoma_refer", "text"), "decision[5].text is required"),
    (_without("glaucoma_refer", "when"), "decision[5].when is required"),
    (_without("rescreen", "recall_months"), "decision[11].recall_months is required"),
    (
        DEFAULT_TEXT.replace("recall_months = 12", "recall_months = 0"),
        "decision[11].recall_months must be a whole number from 1 to 120",
    ),
    (
        _compose(HEAD, [b for b in BLOCKS if 'code = "glaucoma_refer"' not in b]),
        "no [[decision]] with code = 'glaucoma_refer'",
    ),
    (DEFAULT_TEXT.replace('code = "retake"', 'code = "redo"'), "decision[7].code must be one of"),
    (DEFAULT_TEXT.replace('"soon"', '"asap"'), "decision[2].urgency must be one of"),
    (_moved_first("rescreen"), "decision[0] (code 'rescreen') would apply when"),
    (_moved_first("glaucoma_refer"), "decision[0] (code 'glaucoma_refer') would apply when"),
    (_moved_first("incomplete"), "a glaucoma suspect must give refer or glaucoma_refer"),
    (
        DEFAULT_TEXT.replace('code = "refer"', 'code = "retake"', 1),
        "decision[1] (code 'retake') would apply when no_model=false, any_eye=proliferative",
    ),
    (
        DEFAULT_TEXT.replace("{ no_model = true }", "{ no_model = true, any_eye_missing = true }"),
        "with no model installed the outcome must be no_model",
    ),
    (
        DEFAULT_TEXT.replace("{ no_model = true }", "{ all_eyes_graded = false }"),
        "no_model is only for visits with no model installed",
    ),
    (
        DEFAULT_TEXT.replace(
            "when = { all_eyes_graded = false }", "when = { any_eye_missing = true }"
        ),
        "no decision applies when",
    ),
    (
        DEFAULT_TEXT
        + '\n[[decision]]\ncode = "retake"\nwhen = {}\ntext = "x"\nurgency = "routine"\n',
        "decision[12] (code 'retake') can never apply",
    ),
    ("[rule_set\n", "not valid TOML"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_rule_files_are_refused_naming_file_and_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        load_rules(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert load_rules().label == "primary-care-dr-screening@1.2.0"  # the default still loads


def test_a_missing_file_is_a_value_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    with pytest.raises(ValueError, match="cannot read the rule file") as caught:
        load_rules(path)
    assert str(caught.value).startswith(f"{path}: ")


def test_a_rule_file_that_rescreens_a_withheld_photograph_is_refused(tmp_path: Path) -> None:
    blocks = list(BLOCKS)
    human = blocks.pop(_block("human_grading"))
    text = _compose(HEAD, [*blocks, human])  # rescreen now comes before human_grading
    with pytest.raises(ValueError, match="withheld for human grading must never give rescreen"):
        load_rules(_write(tmp_path, text))
