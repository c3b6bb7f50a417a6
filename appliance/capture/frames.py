"""Header values read without trusting them, and the eye an image names.

Every reader here answers "no value" for an element that is absent, damaged or of the wrong
kind, rather than raising: a camera's odd header is said in plain words by the caller
(``capture/oct.py``), never crashed on. :func:`image_eye` is the one rule for which eye an
image shows, used by ingest (``capture/decode.py``: the capture's eye) and by the OCT reader
(``capture/oct.py``: the eye the measurement counts), so the two never disagree.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from pydicom.dataset import Dataset


def text(ds: Dataset, keyword: str) -> str:
    """A short text value, control and format characters (escapes, bidi overrides) left out."""
    try:
        found = str(ds.get(keyword, "") or "")
    except Exception:
        return ""
    return "".join(c for c in found if unicodedata.category(c)[0] != "C").strip()[:64]


def first(seq: Any) -> Dataset | None:
    try:
        return seq[0] if seq else None
    except Exception:
        return None


def value(ds: Dataset, keyword: str) -> Any:
    """An element's value, or None when absent or unreadable (a damaged value is no value)."""
    try:
        return ds.get(keyword)
    except Exception:
        return None


def frame_items(ds: Dataset, keyword: str) -> list[Dataset]:
    """The first item of ``keyword`` in the shared functional groups when there; else in every
    frame's group that has one (a camera may repeat it per frame, and frames may disagree)."""
    shared = first(value(ds, "SharedFunctionalGroupsSequence"))
    item = first(value(shared, keyword)) if shared is not None else None
    if item is not None:
        return [item]
    frames = value(ds, "PerFrameFunctionalGroupsSequence") or []
    found = (first(value(group, keyword)) for group in frames)
    return [item for item in found if item is not None]


def image_eye(ds: Dataset) -> tuple[str | None, str | None]:
    """(eye, problem): the eye the image's own attributes name (Image Laterality and each Frame
    Laterality, letter case aside; the series' Laterality only when they say nothing), None when
    none does; a problem when they name both eyes (``B``, or ``R`` in one and ``L`` in another)."""
    said = [text(ds, "ImageLaterality")]
    said += [text(item, "FrameLaterality") for item in frame_items(ds, "FrameAnatomySequence")]
    sides = {side.upper() for side in said if side} or {text(ds, "Laterality").upper()} - {""}
    if not sides:
        return None, None
    if sides - {"L", "R"} or len(sides) > 1:
        named = " and ".join(sorted(sides))
        return None, f"it names both eyes ({named} in its Image / Frame Laterality)"
    return sides.pop(), None
