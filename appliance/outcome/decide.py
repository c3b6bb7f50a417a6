"""Per-eye summaries and the visit's decision, from the per-image findings. Pure functions.

How photographs are counted:

* **Side.** A photograph belongs to the eye it is labelled with. When a confident detection
  contradicts the label (``laterality_mismatch``), it counts for *neither* eye until a person
  decides (the pipeline then hands it over with the decided eye and no mismatch): an eye with
  nothing else is ``unresolved`` (never graded, so never a rescreen) and the prompts say so;
  the referral decision never depends on the side, only completeness does. A photograph with
  no usable label (``None`` or anything but ``"L"``/``"R"``) completes no eye and gets a prompt
  to label it.
* **Findings.** The worst gradable finding wins, per eye and for the visit: the highest DR
  grade, referable if any photograph is (its flag, DME, or grade >= 2), DME if any, the
  largest cup-to-disc ratio, glaucoma suspect if any. Findings on ungradable photographs are
  ignored. Every gradable photograph counts towards referral, whatever its field or label —
  a referable finding on an unlabelled photograph still refers the patient.
* **Completeness.** An eye is ``graded`` when it has a gradable photograph of the required
  field (any field when ``required_field = "any"``); ``ungradable`` when instead it has only
  ungradable photographs that are, or may be (field unknown), of the required field;
  ``missing`` otherwise. A visit is complete when every required eye is graded and has a
  screening result.
* **No model.** With ``models_installed=False`` the model fields are ignored and the decision
  is the rule file's ``no_model`` decision; quality prompts are still given.
* **OCT.** Each OCT volume (``OctFinding``) counts for the eye it names; the rule file's
  ``[oct]`` table judges it (``appliance/outcome/oct.py``): centre-involving DME makes the eye
  DME and the visit referable, even with no photograph of that eye; an eye whose volumes are
  all ungradable is ``oct_ungradable`` (retake); a gradable volume without an automated answer
  counts as human grading. An OCT neither completes nor replaces the photographs. Without a
  model installed the OCT answers are ignored too (quality prompts remain).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import replace

from appliance.domain import EyeOutcome, ImageFinding, OctFinding, VisitOutcome
from appliance.outcome import prompts
from appliance.outcome.conditions import Facts, describe
from appliance.outcome.oct import eye_summary, verdict
from appliance.outcome.rules import Decision, RuleSet, first_match

LOGGER = logging.getLogger(__name__)

_OTHER_SIDE = {"L": "R", "R": "L"}


def _label(finding: ImageFinding) -> str | None:
    label = (finding.laterality or "").strip().upper()
    return label if label in _OTHER_SIDE else None


def _side(finding: ImageFinding) -> str | None:
    """The eye a photograph counts for: none while its label contradicts the detected eye."""
    label = _label(finding)
    if label is not None and finding.laterality_mismatch:
        return None
    return label


def _in_question(findings: Sequence[ImageFinding]) -> bool:
    """Some photograph's label contradicts its detected eye and nobody has decided yet."""
    return any(_label(f) is not None and f.laterality_mismatch for f in findings)


def _without_models(finding: ImageFinding) -> ImageFinding:
    return replace(
        finding,
        dr_grade=None,
        p_referable=None,
        referable=None,
        p_dme=None,
        dme=None,
        cdr=None,
        p_glaucoma=None,
        glaucoma_suspect=None,
        human_grading=(),
    )


def _field(finding: ImageFinding) -> str | None:
    return finding.field.strip().lower() if finding.field else None


def _completes(finding: ImageFinding, rules: RuleSet) -> bool:
    return finding.gradable and rules.required_field in ("any", _field(finding))


def _failed_attempt(finding: ImageFinding, rules: RuleSet) -> bool:
    field = _field(finding)
    return not finding.gradable and (
        rules.required_field == "any" or field in (None, rules.required_field)
    )


def _check(findings: Sequence[ImageFinding]) -> None:
    for index, finding in enumerate(findings):
        if not isinstance(finding, ImageFinding):
            raise TypeError(
                f"findings[{index}] must be an ImageFinding, not {type(finding).__name__}"
            )
        if finding.dr_grade is not None and not 0 <= finding.dr_grade <= 4:
            raise ValueError(
                f"findings[{index}].dr_grade must be 0-4 (ICDR); got {finding.dr_grade}"
            )


def _any(values: Iterable[bool | None]) -> bool | None:
    """True if any is True, False if some are known and none True, None if none are known."""
    known = [v for v in values if v is not None]
    return any(known) if known else None


def _image_referable(finding: ImageFinding) -> bool | None:
    if finding.referable or finding.dme or (finding.dr_grade or 0) >= 2:
        return True
    if finding.referable is False or finding.dme is False or finding.dr_grade is not None:
        return False
    return None


def _has_result(images: Sequence[ImageFinding]) -> bool:
    return any(f.gradable and (f.dr_grade is not None or f.referable is not None) for f in images)


def _by_eye(findings: Sequence[ImageFinding], rules: RuleSet) -> dict[str, list[ImageFinding]]:
    groups: dict[str, list[ImageFinding]] = {eye: [] for eye in rules.eyes}
    for finding in findings:
        side = _side(finding)
        if side in groups:
            groups[side].append(finding)
    return groups


def _octs_by_eye(octs: Sequence[OctFinding], rules: RuleSet) -> dict[str, list[OctFinding]]:
    groups: dict[str, list[OctFinding]] = {eye: [] for eye in rules.eyes}
    for finding in octs:
        if not isinstance(finding, OctFinding):
            raise TypeError(f"octs must hold OctFinding, not {type(finding).__name__}")
        if finding.laterality in groups:
            groups[finding.laterality].append(finding)
    return groups


def _combine(
    eye: str,
    images: Sequence[ImageFinding],
    rules: RuleSet,
    in_question: bool = False,
    octs: Sequence[OctFinding] = (),
) -> EyeOutcome:
    """One eye's summary; ``in_question``: a photograph that may be of this eye awaits a
    decision on its label, so an eye with nothing else is ``unresolved``, not ``missing``."""
    gradable = [f for f in images if f.gradable]
    if any(_completes(f, rules) for f in images):
        status = "graded"
    elif any(_failed_attempt(f, rules) for f in images):
        status = "ungradable"
    else:
        status = "unresolved" if in_question else "missing"
    grades = [f.dr_grade for f in gradable if f.dr_grade is not None]
    ratios = [f.cdr for f in gradable if f.cdr is not None]
    scans = eye_summary(octs, rules.oct)
    oct_dme = scans.get("oct_dme")
    return EyeOutcome(
        eye=eye,
        status=status,
        dr_grade=max(grades) if grades else None,
        referable=_any([*(_image_referable(f) for f in gradable), oct_dme]),
        dme=_any([*(f.dme for f in gradable), oct_dme]),
        cdr=max(ratios) if ratios else None,
        glaucoma_suspect=_any(f.glaucoma_suspect for f in gradable),
        capture_ids=tuple(f.capture_id for f in images if f.capture_id is not None),
        **scans,
    )


def per_eye(
    findings: Sequence[ImageFinding], rules: RuleSet, octs: Sequence[OctFinding] = ()
) -> tuple[EyeOutcome, ...]:
    """One summary per eye the protocol requires, in the protocol's order."""
    findings = tuple(findings)
    _check(findings)
    groups = _by_eye(findings, rules)
    scans = _octs_by_eye(octs, rules)
    doubt = _in_question(findings)
    return tuple(_combine(eye, groups[eye], rules, doubt, scans[eye]) for eye in rules.eyes)


def _oct_exhausted(eye: EyeOutcome, rules: RuleSet) -> bool:
    """The eye's OCT scans all failed, the first and ``max_retakes`` retakes."""
    return eye.oct_status == "ungradable" and len(eye.oct_capture_ids) > rules.max_retakes


def _exhausted(images: Sequence[ImageFinding], status: str, rules: RuleSet) -> bool:
    failed = sum(1 for f in images if _failed_attempt(f, rules))
    return status == "ungradable" and failed > rules.max_retakes


def _facts(
    findings: Sequence[ImageFinding],
    groups: dict[str, list[ImageFinding]],
    eyes: Sequence[EyeOutcome],
    rules: RuleSet,
    no_model: bool,
    octs: Sequence[OctFinding] = (),
) -> Facts:
    gradable = [f for f in findings if f.gradable]
    grades = [f.dr_grade for f in gradable if f.dr_grade is not None]
    judged = [] if no_model else [verdict(f, rules.oct) for f in octs]
    ci_dme = any(v.ci_dme for v in judged)
    return Facts(
        no_model=no_model,
        worst_grade=max(grades) if grades else None,
        referable=ci_dme or any(_image_referable(f) for f in gradable),
        dme=ci_dme or any(f.dme for f in gradable),
        glaucoma_suspect=any(f.glaucoma_suspect for f in gradable),
        ungradable=any(e.status == "ungradable" for e in eyes),
        missing=any(e.status in ("missing", "unresolved") for e in eyes),
        retakes_exhausted=any(_exhausted(groups[e.eye], e.status, rules) for e in eyes)
        or any(_oct_exhausted(e, rules) for e in eyes),
        all_graded=not no_model
        and all(e.status == "graded" and _has_result(groups[e.eye]) for e in eyes),
        human_grading=not no_model
        and (
            any(f.human_grading for f in gradable)
            or any(v.status == "human_grading" for v in judged)
        ),
        ci_dme=ci_dme,
        oct_ungradable=any(e.oct_status == "ungradable" for e in eyes),
    )


def _reasons(images: Sequence[ImageFinding | OctFinding]) -> list[str]:
    seen: list[str] = []
    for finding in images:
        seen.extend(r for r in finding.quality_reasons if r not in seen)
    return seen


def _eye_prompt(
    eye: EyeOutcome, images: Sequence[ImageFinding], rules: RuleSet, no_model: bool
) -> str | None:
    if eye.status == "unresolved":
        return prompts.unresolved(eye.eye)
    if eye.status == "missing":
        return prompts.missing(eye.eye, rules.required_field, has_other_photos=bool(images))
    if eye.status == "ungradable":
        failed = [f for f in images if _failed_attempt(f, rules)]
        if _exhausted(images, eye.status, rules):
            return prompts.retakes_exhausted(eye.eye, len(failed), _reasons(failed))
        return prompts.ungradable(eye.eye, len(failed), _reasons(failed))
    withheld = [f for f in images if f.gradable and f.human_grading]
    if not no_model and withheld:
        return prompts.human_grading(eye.eye, withheld[0].human_grading)
    if not no_model and not _has_result(images):
        return prompts.no_result(eye.eye)
    return None


def _oct_prompt(
    eye: EyeOutcome, octs: Sequence[OctFinding], no_model: bool, rules: RuleSet
) -> str | None:
    if eye.oct_status == "ungradable" and _oct_exhausted(eye, rules):
        return prompts.oct_retakes_exhausted(eye.eye, len(octs), _reasons(octs))
    if eye.oct_status == "ungradable":
        return prompts.oct_ungradable(eye.eye, _reasons(octs))
    if eye.oct_status == "human_grading" and not no_model:
        return prompts.oct_human_grading(eye.eye)
    return None


def _prompts(
    findings: Sequence[ImageFinding],
    groups: dict[str, list[ImageFinding]],
    eyes: Sequence[EyeOutcome],
    facts: Facts,
    decision: Decision,
    rules: RuleSet,
    scans: dict[str, list[OctFinding]] | None = None,
) -> tuple[str, ...]:
    scans = scans or {}
    said: list[str] = []

    def say(text: str | None) -> None:
        if text and text not in said:
            said.append(text)

    for eye in eyes:
        say(_eye_prompt(eye, groups[eye.eye], rules, facts.no_model))
        say(_oct_prompt(eye, scans.get(eye.eye, ()), facts.no_model, rules))
    unlabelled = sum(1 for f in findings if _label(f) is None)
    if unlabelled:
        say(prompts.unlabelled(unlabelled))
    for finding in findings:
        label = _label(finding)
        if label is not None and finding.laterality_mismatch:
            say(prompts.label_mismatch(label))
    if decision.code == "refer" and facts.glaucoma_suspect:
        say(prompts.also_glaucoma())
    return tuple(said)


def decide(
    findings: Sequence[ImageFinding],
    rules: RuleSet,
    *,
    models_installed: bool = True,
    octs: Sequence[OctFinding] = (),
) -> VisitOutcome:
    """The visit's outcome: the first decision of ``rules`` that matches, with prompts.
    ``octs``: the visit's OCT volumes, judged by the rule file's ``[oct]`` table."""
    findings = tuple(findings)
    _check(findings)
    if not models_installed:
        findings = tuple(_without_models(f) for f in findings)
    groups = _by_eye(findings, rules)
    scans = _octs_by_eye(octs, rules)
    doubt = _in_question(findings)
    eyes = tuple(_combine(eye, groups[eye], rules, doubt, scans[eye]) for eye in rules.eyes)
    if not models_installed:  # no automated answer from the OCTs either
        eyes = tuple(replace(e, oct_dme=None, dme=None, referable=None) if e.oct_status else e
                     for e in eyes)  # fmt: skip
    facts = _facts(findings, groups, eyes, rules, not models_installed, octs)
    found = first_match(rules, facts)
    if found is None:
        raise ValueError(f"rule set {rules.label}: no decision applies when {describe(facts)}")
    decision = found[1]
    LOGGER.debug("outcome %s by %s (%s)", decision.code, rules.label, describe(facts))
    return VisitOutcome(
        code=decision.code,
        text=decision.text,
        recall_months=decision.recall_months,
        urgency=decision.urgency,
        rule_set=rules.label,
        complete=facts.all_graded,
        eyes=eyes,
        prompts=_prompts(findings, groups, eyes, facts, decision, rules, scans),
    )
