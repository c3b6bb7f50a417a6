"""Who signs, and what a signature means (21 CFR Part 11 §11.50, §11.200).

A clinician signs with their password re-entered (``Accounts.confirm_signature``); the
signature records the signer's printed full name and credentials (user fields, set on the
admin Users page or with ``appliance users add/profile``), the moment, and its meaning:

* ``reviewed and approved`` — the first sign-off accepts the automated result;
* ``reviewed and overridden`` — the first sign-off replaces the automated outcome or a grade
  with the clinician's own;
* ``amended`` — any later sign-off of the same visit (it replaces the signed report).

The meaning is shown next to the password field before signing, printed on the signed PDF,
kept in the ``reviews`` row and in the sign-off's audit event.
"""

from __future__ import annotations

from appliance.errors import RejectedInput

MAX_PROFILE = 64  # one DICOM PN component group; what the report's signer block prints
MEANINGS = {
    "accept": "reviewed and approved",
    "override": "reviewed and overridden",
    "amend": "amended",
}
OUTCOME_WORDS = {  # a signed decision in words (station, signed report)
    "refer": "Refer to an eye care professional",
    "glaucoma_refer": "Refer for glaucoma assessment",
    "rescreen": "Rescreen at the routine interval",
    "retake": "Retake the photographs",
}
TITLES = frozenset({"dr", "dr.", "prof", "prof.", "mr", "mr.", "mrs", "mrs.", "ms", "ms.", "mx"})


def meaning(decision: str, *, amendment: bool) -> str:
    """What a signature means: see the module docstring."""
    if amendment:
        return MEANINGS["amend"]
    if decision not in ("accept", "override"):
        raise ValueError(f"decision must be 'accept' or 'override', got {decision!r}")
    return MEANINGS[decision]


def check_profile(full_name: str, credentials: str) -> tuple[str, str]:
    """The full name and credentials, spaces tidied, or RejectedInput saying what is wrong."""
    name, creds = " ".join(full_name.split()), " ".join(credentials.split())
    for label, value in (("full name", name), ("credentials", creds)):
        if len(value) > MAX_PROFILE:
            raise RejectedInput(
                f"the {label} has at most {MAX_PROFILE} characters", reason="bad_profile"
            )
        if any(c in value for c in "^\\=") or not value.isprintable():
            raise RejectedInput(
                f"the {label} may not contain '^', '\\', '=' or control characters",
                reason="bad_profile",
            )
    return name, creds


def person_name(full_name: str) -> str:
    """A printed full name as a DICOM PN: ``Family^Given^Middle^Prefix`` ("Dr A. Grader" →
    ``Grader^A.^^Dr``); the last word is the family name."""
    words = full_name.split()
    prefix = [w for w in words[:1] if w.lower() in TITLES]
    rest = words[len(prefix) :]
    if not rest:
        return "^".join(["", "", "", *prefix]).rstrip("^")
    family, given, middle = rest[-1], rest[:1] if len(rest) > 1 else [], rest[1:-1]
    parts = [family, " ".join(given), " ".join(middle), " ".join(prefix)]
    return "^".join(parts).rstrip("^")[:64]


def oct_dme_words(eye: str, value: bool) -> str:
    """A clinician's OCT answer in words, as the signer block and the station print it:
    "Right eye: centre-involving macular oedema on OCT: no (clinician)"."""
    side = {"R": "Right eye", "L": "Left eye"}.get(eye, eye)
    return f"{side}: centre-involving macular oedema on OCT: {'yes' if value else 'no'} (clinician)"
