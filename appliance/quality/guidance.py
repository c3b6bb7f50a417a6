"""Reason codes of the quality gate and the plain-words retake advice for each.

The texts are for the camera operator, not for an eye specialist: say what is wrong, then what
to do before the next photograph.
"""

from __future__ import annotations

import logging

LOGGER = logging.getLogger(__name__)

# The order in which reasons are reported: what to fix first comes first (the right kind of
# picture, then aiming, then exposure and lighting, then focus, then haze).
REASON_ORDER: tuple[str, ...] = (
    "not_fundus",
    "off_center",
    "too_dark",
    "too_bright",
    "uneven_illumination",
    "out_of_focus",
    "low_contrast",
)

GUIDANCE: dict[str, str] = {
    "not_fundus": (
        "Not a retina photo: this picture does not show the back of the eye — check that the"
        " camera sent the right image, then take a new photo of the eye."
    ),
    "off_center": (
        "Off centre: part of the round view is cut off — ask the patient to look at the"
        " fixation light and move the camera until the circle sits in the middle, then retake."
    ),
    "too_dark": (
        "Too dark: the pupil may be small — consider dilation or dim the room, then retake."
    ),
    "too_bright": (
        "Too bright: lower the flash level and check the camera is not too close to the eye,"
        " then retake."
    ),
    "uneven_illumination": (
        "Uneven lighting: one side is shadowed — centre the camera on the pupil, ask the"
        " patient to open wide and keep still, and consider dilation if the pupil is small."
    ),
    "out_of_focus": (
        "Out of focus: clean the lens, ask the patient to keep still, and refocus before the"
        " next photo."
    ),
    "low_contrast": (
        "Hazy, low contrast: clean the lens and ask the patient to blink, then retake; if it"
        " stays hazy the eye may have a cataract — note this for the reviewer."
    ),
}
