"""How one photograph differs from the next on the same camera: colour, light and the eye's own
reflections, drawn per photograph (:class:`Look`) and applied to the drawn retina.

Real cameras' photographs differ far more than one camera profile's fixed cast and vignetting:
white balance from red through brown to yellow (fundus pigment, lens, camera settings), a
tone curve, the small-pupil vignette of an undilated eye, eyelash shadows at the top or bottom
of the field, the bright reflections a flash leaves on the cornea and lens, and the strong
sheen a young retina's inner limiting membrane throws along the vessels and around the
macula. None of these stops a grader from grading the photograph, so none changes its labels;
the acquisition defects that do are :mod:`appliance.synth.gradability`'s.

:func:`draw_look` samples a look from :data:`LOOK_MIX`; :data:`NEUTRAL` adds nothing (a case
built by hand without a look renders as before). :func:`apply_look` works on the float retina
before the camera's optics; the cast and black level go through
:func:`appliance.synth.camera.optics`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from appliance.synth.layout import FundusLayout

# Probability of each optional feature in a drawn look (see docs/synth/README.md).
LOOK_MIX: dict[str, float] = {
    "small_pupil": 0.2,
    "lashes": 0.12,
    "flash": 0.3,
    "sheen": 0.15,
    "grey_surround": 0.3,
}


@dataclass(frozen=True)
class Look:
    """One photograph's appearance on top of its camera profile; see the module docstring."""

    cast: tuple[float, float, float] = (1.0, 1.0, 1.0)  # RGB gains on the profile's cast
    gamma: float = 1.0  # tone curve exponent on the lit retina
    pupil: float = 0.0  # small-pupil vignette depth at the field edge, 0..0.35
    lashes: float = 0.0  # eyelash shadow darkness, 0..0.55
    lashes_side: int = -1  # -1 top, +1 bottom
    flashes: int = 0  # corneal / lens reflections drawn
    sheen: float = 0.0  # young-retina reflex strength, 0..1
    black_level: float = 2.5  # DN of the surround
    surround_noise: float = 0.0  # DN, standard deviation of the surround's noise

    def __post_init__(self) -> None:
        checks = [
            (all(0.5 <= g <= 1.6 for g in self.cast), f"cast gains out of range: {self.cast}"),
            (0.7 <= self.gamma <= 1.4, f"gamma out of range: {self.gamma}"),
            (0.0 <= self.pupil <= 0.35, f"pupil out of range: {self.pupil}"),
            (0.0 <= self.lashes <= 0.55, f"lashes out of range: {self.lashes}"),
            (self.lashes_side in (-1, 1), "lashes_side must be -1 or 1"),
            (0 <= self.flashes <= 3, f"flashes out of range: {self.flashes}"),
            (0.0 <= self.sheen <= 1.0, f"sheen out of range: {self.sheen}"),
            (0.0 <= self.black_level <= 20.0, f"black_level out of range: {self.black_level}"),
            (0.0 <= self.surround_noise <= 6.0, "surround_noise out of range"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


NEUTRAL = Look()


def draw_look(rng: np.random.Generator) -> Look:
    """A look from :data:`LOOK_MIX`: white balance and tone always vary, the rest sometimes."""
    # Red (light fundus, warm flash) through brown (pigment) to yellow (old lens, green-heavy
    # balance): green and blue move more than red, as they do between real cameras.
    red = float(rng.uniform(0.92, 1.12))
    green = float(rng.uniform(0.8, 1.15))
    blue = float(rng.uniform(0.6, 1.35))
    grey = rng.random() < LOOK_MIX["grey_surround"]
    return Look(
        cast=(round(red, 3), round(green, 3), round(blue, 3)),
        gamma=round(float(rng.uniform(0.85, 1.15)), 3),
        pupil=round(float(rng.uniform(0.12, 0.33)), 3)
        if rng.random() < LOOK_MIX["small_pupil"]
        else 0.0,
        lashes=round(float(rng.uniform(0.2, 0.5)), 3) if rng.random() < LOOK_MIX["lashes"] else 0.0,
        lashes_side=-1 if rng.random() < 0.75 else 1,
        flashes=int(rng.integers(1, 3)) if rng.random() < LOOK_MIX["flash"] else 0,
        sheen=round(float(rng.uniform(0.35, 1.0)), 3) if rng.random() < LOOK_MIX["sheen"] else 0.0,
        black_level=round(float(rng.uniform(4.0, 14.0)), 2) if grey else 2.5,
        surround_noise=round(float(rng.uniform(0.5, 4.0)), 2) if grey else 0.0,
    )


def apply_look(
    img: np.ndarray, layout: FundusLayout, look: Look, rng: np.random.Generator
) -> np.ndarray:
    """The float RGB retina (0..255) with the look's tone, vignette, lashes, sheen and flashes."""
    if look == NEUTRAL:
        return img
    h, w = layout.height, layout.width
    xs = (np.arange(w, dtype=np.float32) - np.float32(layout.field_cx))[None, :]
    ys = (np.arange(h, dtype=np.float32) - np.float32(layout.field_cy))[:, None]
    r = np.float32(layout.field_radius)
    rho = np.sqrt(xs * xs + ys * ys) / r
    out = img
    if look.gamma != 1.0:
        out = np.float32(255.0) * (np.clip(out, 0, 255) / np.float32(255.0)) ** np.float32(
            look.gamma
        )
    if look.sheen > 0:
        out = _sheen(out, layout, look.sheen, rng, xs, ys)
    gain = np.ones((h, w), np.float32)
    if look.pupil > 0:
        gain *= 1.0 - np.float32(look.pupil) * np.clip((rho - 0.45) / 0.55, 0.0, 1.0) ** 2
    if look.lashes > 0:
        gain *= _lashes(h, w, layout, look, rng, ys)
    out = out * gain[..., None]
    for _ in range(look.flashes):
        out = _flash(out, layout, rng, xs, ys)
    return out


def _sheen(
    img: np.ndarray,
    layout: FundusLayout,
    strength: float,
    rng: np.random.Generator,
    xs: np.ndarray,
    ys: np.ndarray,
) -> np.ndarray:
    """A young retina's reflex: a bright ring around the fovea and patchy sheen along the
    arcades (whitish-blue light reflected off the inner limiting membrane)."""
    dd = 2.0 * layout.disc_radius
    fx = xs + np.float32(layout.field_cx - layout.fovea_cx)
    fy = ys + np.float32(layout.field_cy - layout.fovea_cy)
    dist = np.sqrt(fx * fx + fy * fy) / np.float32(dd)
    ring_radius = float(rng.uniform(1.1, 1.7))
    ring = np.exp(-(((dist - ring_radius) / 0.12) ** 2))
    # patchy sheen: smooth noise, strongest between fovea and disc (around the arcades)
    small = rng.random((24, 24)).astype(np.float32)
    patches = cv2.resize(
        cv2.GaussianBlur(small, (0, 0), 1.5),
        (layout.width, layout.height),
        interpolation=cv2.INTER_LINEAR,
    )
    patches = np.clip((patches - patches.mean()) / (patches.std() + 1e-6) - 0.3, 0.0, None)
    arcade = np.exp(-(((dist - 2.3) / 1.1) ** 2))
    light = np.float32(strength) * (28.0 * ring + 22.0 * patches * arcade).astype(np.float32)
    return img + light[..., None] * np.array([0.75, 0.95, 1.0], np.float32)


def _lashes(
    h: int, w: int, layout: FundusLayout, look: Look, rng: np.random.Generator, ys: np.ndarray
) -> np.ndarray:
    """The lid's soft shadow along the field's top (or bottom) edge, with darker lash streaks
    reaching into the field from it."""
    r = np.float32(layout.field_radius)
    xs = np.arange(w, dtype=np.float32)[None, :] - np.float32(layout.field_cx)
    edge = np.sqrt(np.maximum(r * r - xs * xs, 0.0))  # field edge's distance above/below centre
    depth = edge + ys * np.float32(-look.lashes_side)  # distance into the field from that edge
    shade = 0.5 * np.clip(1.0 - depth / (0.12 * r), 0.0, 1.0)  # the lid's shadow
    for _ in range(int(rng.integers(3, 7))):
        x0 = float(rng.uniform(-0.75, 0.75)) * r
        reach = float(rng.uniform(0.15, 0.35)) * r
        width = float(rng.uniform(0.02, 0.06)) * r
        tilt = float(rng.uniform(-0.6, 0.6))
        centre = np.float32(x0) + np.float32(tilt) * depth
        band = np.exp(-(((xs - centre) / np.float32(width)) ** 2)) * np.clip(
            1.0 - depth / np.float32(reach), 0.0, 1.0
        )
        shade = np.maximum(shade, band)
    shade = cv2.GaussianBlur(shade.astype(np.float32), (0, 0), max(1.0, 0.01 * float(r)))
    return 1.0 - np.float32(look.lashes) * shade


def _flash(
    img: np.ndarray, layout: FundusLayout, rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray
) -> np.ndarray:
    """One bright, bluish-white, soft-edged reflection away from the field centre."""
    r = float(layout.field_radius)
    angle = float(rng.uniform(0.0, 2 * math.pi))
    at = float(rng.uniform(0.55, 0.92)) * r
    cx, cy = at * math.cos(angle), at * math.sin(angle)
    size = float(rng.uniform(0.03, 0.1)) * r
    elong = float(rng.uniform(1.0, 2.5))  # crescents: stretched along the field edge
    dx, dy = xs - np.float32(cx), ys - np.float32(cy)
    along = dx * np.float32(-math.sin(angle)) + dy * np.float32(math.cos(angle))
    across = dx * np.float32(math.cos(angle)) + dy * np.float32(math.sin(angle))
    blob = np.exp(-((along / np.float32(size * elong)) ** 2 + (across / np.float32(size)) ** 2))
    peak = float(rng.uniform(35.0, 100.0))
    return img + (np.float32(peak) * blob)[..., None] * np.array([0.9, 1.0, 1.1], np.float32)
