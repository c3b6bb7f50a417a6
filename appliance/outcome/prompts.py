"""The operator prompts: one plain sentence each, saying what to do next.

Written for the person at the camera, not for an eye specialist. The quality gate's reason
codes are turned into short words here (this stage does not import the quality stage; an
unknown code is shown with its underscores as spaces).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

LOGGER = logging.getLogger(__name__)

REASON_WORDS: dict[str, str] = {
    "not_fundus": "not a retina photograph",
    "off_center": "off centre",
    "too_dark": "too dark",
    "too_bright": "too bright",
    "uneven_illumination": "unevenly lit",
    "out_of_focus": "out of focus",
    "low_contrast": "hazy",
    "oct_blink": "a blink",
    "oct_low_signal": "weak signal",
    "oct_clipped": "cut off at the top",
    "oct_decentred": "not centred on the fovea",
    "oct_motion": "eye movement",
}

EYE_NAMES: dict[str, str] = {"L": "left", "R": "right"}
FIELD_WORDS: dict[str, str] = {"macula": "macula-centred ", "disc": "disc-centred ", "any": ""}


def reason_words(reasons: Sequence[str]) -> str:
    """``("too_dark", "out_of_focus")`` → ``"too dark and out of focus"``."""
    words = [REASON_WORDS.get(code, code.replace("_", " ")) for code in reasons]
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def _eye(eye: str) -> str:
    return EYE_NAMES.get(eye, eye)


def missing(eye: str, required_field: str, *, has_other_photos: bool) -> str:
    name = _eye(eye)
    kind = FIELD_WORDS.get(required_field, "")
    what = f"no {kind}photograph" if has_other_photos else "no photograph"
    return f"{name.capitalize()} eye: {what} yet — take a {kind}photograph of the {name} eye."


def ungradable(eye: str, count: int, reasons: Sequence[str]) -> str:
    words = reason_words(reasons)
    because = f" ({words})" if words else ""
    photos = "the photograph is" if count == 1 else "the photographs are"
    return (
        f"{_eye(eye).capitalize()} eye: {photos} not gradable{because} — retake; "
        "if retakes keep failing, refer."
    )


def retakes_exhausted(eye: str, count: int, reasons: Sequence[str]) -> str:
    words = reason_words(reasons)
    because = f" ({words})" if words else ""
    return (
        f"{_eye(eye).capitalize()} eye: {count} photographs were not gradable{because} — "
        "retakes have not worked; refer to an eye care professional."
    )


def no_result(eye: str) -> str:
    return (
        f"{_eye(eye).capitalize()} eye: the screening model gave no result for the photographs"
        " — run the screening again, or ask a reviewer to grade them."
    )


HUMAN_GRADING_WORDS: dict[str, str] = {
    "out_of_domain": "the photograph is unlike those the models were validated on",
    "no_domain_reference": "the installed models have no measured domain to check against",
    "gradability_model_disagrees": "the models' own quality check disagrees with the gate",
    "unqualified_camera": "the camera is not qualified for automated screening",
}


def human_grading(eye: str, reasons: Sequence[str]) -> str:
    why = "; ".join(HUMAN_GRADING_WORDS.get(r, r.replace("_", " ")) for r in reasons)
    because = f" ({why})" if why else ""
    return (
        f"{_eye(eye).capitalize()} eye: no automated result{because} — a grader will review"
        " the photograph; no retake is needed."
    )


def unlabelled(count: int) -> str:
    if count == 1:
        return "A photograph has no eye label — mark it Left or Right so it counts for that eye."
    return (
        f"{count} photographs have no eye label — mark each Left or Right so they count for"
        " that eye."
    )


LABEL_WORDS: dict[str, str] = {"R": "Right (OD)", "L": "Left (OS)"}


def label_mismatch(labelled: str) -> str:
    """``labelled``: the eye the photograph was labelled with (the detection says the other)."""
    detected = "right" if labelled == "L" else "left"
    return (
        f"Check the eye label: the photograph labelled {LABEL_WORDS.get(labelled, labelled)}"
        f" looks like a {detected} eye — keep the label or use the detected eye; until then it"
        " counts for neither eye."
    )


def unresolved(eye: str) -> str:
    return (
        f"{_eye(eye).capitalize()} eye: not counted yet — a photograph's eye label is in"
        " question; decide which eye it shows."
    )


def also_glaucoma() -> str:
    return "Also a glaucoma suspect — mention the optic disc finding in the referral."


def oct_ungradable(eye: str, reasons: Sequence[str]) -> str:
    words = reason_words(reasons)
    because = f" ({words})" if words else ""
    return (
        f"{_eye(eye).capitalize()} eye OCT: the scan is not gradable{because} — retake the "
        "OCT scan; if retakes keep failing, refer."
    )


def oct_human_grading(eye: str) -> str:
    return (
        f"{_eye(eye).capitalize()} eye OCT: no automated macular oedema answer — a grader "
        "will review the scan."
    )


def oct_retakes_exhausted(eye: str, count: int, reasons: Sequence[str]) -> str:
    words = reason_words(reasons)
    because = f" ({words})" if words else ""
    return (
        f"{_eye(eye).capitalize()} eye OCT: {count} scans were not gradable{because} — "
        "retakes have not worked; refer to an eye care professional."
    )
