"""Diabetic retinopathy lesions as small opacity stamps, and how they colour the picture.

Each ``*_stamp`` function draws one lesion analytically on a small window around it and returns
a :class:`Stamp`: opacity 0..1 (float32) and the window's top-left pixel. Edges are
anti-aliased from the signed distance to the outline, and lesions smaller than a pixel keep
their integrated darkness by getting fainter, so they look alike at any resolution. Stamps of
one kind are max-combined in a :class:`Canvas`, which then darkens (red lesions absorb light)
or paints (exudates and cotton-wool spots scatter it) the float RGB picture.

Sizes are the caller's business (the planner in :mod:`appliance.synth.retinopathy` gives them
in disc diameters); colours and textures are decided here.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from appliance.synth.fundus import smooth_noise
from appliance.synth.vessels import VesselSegment, rasterise

LOGGER = logging.getLogger(__name__)

LESION_KINDS: tuple[str, ...] = (
    "microaneurysm",
    "haemorrhage",  # dot and blot intraretinal haemorrhages
    "flame_haemorrhage",  # nerve fibre layer (splinter) haemorrhages
    "hard_exudate",
    "cotton_wool_spot",
    "venous_beading",
    "irma",
    "nvd",
    "nve",
    "preretinal_haemorrhage",
    "vitreous_haemorrhage",
)
LESION_BITS: dict[str, int] = {kind: 1 << i for i, kind in enumerate(LESION_KINDS)}
MASK_LEVEL = 0.25  # opacity from which a pixel counts as showing the lesion

# Fraction of each channel (R, G, B) a fully opaque lesion removes.
ABSORPTION: dict[str, np.ndarray] = {
    "microaneurysm": np.array([0.40, 0.70, 0.60], dtype=np.float32),
    "haemorrhage": np.array([0.38, 0.68, 0.58], dtype=np.float32),
    "flame_haemorrhage": np.array([0.30, 0.62, 0.52], dtype=np.float32),
    "irma": np.array([0.30, 0.56, 0.48], dtype=np.float32),
    "nvd": np.array([0.26, 0.54, 0.44], dtype=np.float32),
    "nve": np.array([0.26, 0.54, 0.44], dtype=np.float32),
    "preretinal_haemorrhage": np.array([0.5, 0.84, 0.78], dtype=np.float32),
}
# Colour that a fully opaque bright lesion shows in full illumination.
PAINT: dict[str, np.ndarray] = {
    "hard_exudate": np.array([250.0, 232.0, 150.0], dtype=np.float32),
    "cotton_wool_spot": np.array([240.0, 226.0, 196.0], dtype=np.float32),
}


@dataclass(frozen=True)
class Stamp:
    """One lesion's opacity on the window whose top-left pixel is (x0, y0)."""

    alpha: np.ndarray  # float32 HxW, 0..1
    x0: int
    y0: int


class Canvas:
    """Full-frame opacity of one lesion kind; stamps are combined by maximum."""

    def __init__(self, height: int, width: int) -> None:
        self.alpha = np.zeros((height, width), np.float32)
        self._box: tuple[int, int, int, int] | None = None  # x0, y0, x1, y1

    def add(self, stamp: Stamp) -> None:
        h, w = self.alpha.shape
        ph, pw = stamp.alpha.shape
        x0, y0 = max(stamp.x0, 0), max(stamp.y0, 0)
        x1, y1 = min(stamp.x0 + pw, w), min(stamp.y0 + ph, h)
        if x0 >= x1 or y0 >= y1:
            return
        part = stamp.alpha[y0 - stamp.y0 : y1 - stamp.y0, x0 - stamp.x0 : x1 - stamp.x0]
        window = self.alpha[y0:y1, x0:x1]
        np.maximum(window, part, out=window)
        b = self._box
        self._box = (
            (x0, y0, x1, y1)
            if b is None
            else (min(b[0], x0), min(b[1], y0), max(b[2], x1), max(b[3], y1))
        )

    def add_segments(self, segments: list[VesselSegment]) -> None:
        """Draw vessel-shaped lesions (IRMA, new vessels, beaded veins) like the vessel tree."""
        if not segments:
            return
        h, w = self.alpha.shape
        np.maximum(self.alpha, rasterise((h, w), segments), out=self.alpha)
        xs = [v for s in segments for v in (s.x0, s.x1)]
        ys = [v for s in segments for v in (s.y0, s.y1)]
        reach = max(s.width for s in segments) + 2.0
        box = (
            max(0, int(min(xs) - reach)),
            max(0, int(min(ys) - reach)),
            min(w, int(max(xs) + reach) + 2),
            min(h, int(max(ys) + reach) + 2),
        )
        b = self._box
        self._box = (
            box
            if b is None
            else (min(b[0], box[0]), min(b[1], box[1]), max(b[2], box[2]), max(b[3], box[3]))
        )

    @property
    def window(self) -> tuple[slice, slice] | None:
        if self._box is None:
            return None
        x0, y0, x1, y1 = self._box
        return slice(y0, y1), slice(x0, x1)

    def absorb(self, img: np.ndarray, absorption: np.ndarray) -> None:
        """Darken ``img`` (float RGB, in place) where the lesion lies."""
        if (win := self.window) is not None:
            img[win] *= 1.0 - self.alpha[win][..., None] * absorption

    def paint(self, img: np.ndarray, colour: np.ndarray, light: np.ndarray) -> None:
        """Blend ``img`` towards ``colour`` dimmed by ``light`` (the field's illumination)."""
        if (win := self.window) is not None:
            a = self.alpha[win][..., None]
            target = colour * light[win][..., None]
            img[win] += a * (target - img[win])


def _grid(cx: float, cy: float, half: float) -> tuple[int, int, np.ndarray, np.ndarray]:
    """Top-left pixel of a window reaching ``half`` pixels around (cx, cy), and offsets."""
    x0, y0 = math.floor(cx - half), math.floor(cy - half)
    n = math.ceil(2.0 * half) + 2
    dx = np.arange(x0, x0 + n, dtype=np.float32)[None, :] - np.float32(cx)
    dy = np.arange(y0, y0 + n, dtype=np.float32)[:, None] - np.float32(cy)
    return x0, y0, dx, dy


def _cover(signed_px: np.ndarray, edge_px: float) -> np.ndarray:
    """Anti-aliased coverage from the signed distance inside an outline (pixels)."""
    return np.clip(signed_px / np.float32(max(edge_px, 1.0)) + 0.5, 0.0, 1.0)


def _lobed_radius(
    rng: np.random.Generator, theta: np.ndarray, irregularity: float, lobes: int = 4
) -> np.ndarray:
    """1 + a few random harmonics of the angle: an irregular, star-shaped outline."""
    out = np.ones_like(theta)
    for k in range(2, 2 + lobes):
        out += irregularity / k * rng.uniform(0.3, 1.0) * np.cos(k * theta + rng.uniform(0, 6.3))
    return out


def _subpixel(radius: float) -> tuple[float, float]:
    """(radius to draw, opacity factor): below a pixel, draw 1 px and fade to keep the area."""
    if radius >= 1.0:
        return radius, 1.0
    return 1.0, max(radius, 0.05) ** 2


def microaneurysm_stamp(cx: float, cy: float, radius: float, rng: np.random.Generator) -> Stamp:
    """A small sharp round dark-red dot with a slightly darker centre."""
    r, fade = _subpixel(radius)
    x0, y0, dx, dy = _grid(cx, cy, r + 2.0)
    d = np.sqrt(dx * dx + dy * dy)
    core = 0.85 + 0.15 * np.clip(1.0 - d / r, 0.0, 1.0)
    alpha = _cover(r - d, 0.15 * r) * core * np.float32(fade * rng.uniform(0.85, 1.0))
    return Stamp(alpha.astype(np.float32), x0, y0)


def haemorrhage_stamp(
    cx: float, cy: float, radius: float, rng: np.random.Generator, blot: bool
) -> Stamp:
    """A dot (round, sharp) or blot (irregular, blurred edge, mottled) haemorrhage."""
    r, fade = _subpixel(radius)
    x0, y0, dx, dy = _grid(cx, cy, 1.5 * r + 2.0)
    d = np.sqrt(dx * dx + dy * dy)
    theta = np.arctan2(dy, dx)
    outline = r * _lobed_radius(rng, theta, 0.3 if blot else 0.1, lobes=5)
    alpha = _cover(outline - d, (0.35 if blot else 0.15) * r)
    if blot:
        mottle = smooth_noise(rng, alpha.shape, 8, max(r / 2.5, 1.0))
        alpha *= np.clip(0.78 + 0.1 * mottle + 0.15 * (1.0 - d / (1.4 * r)), 0.0, 1.0)
    alpha *= np.float32(fade * rng.uniform(0.8, 0.95))
    return Stamp(alpha.astype(np.float32), x0, y0)


def flame_stamp(
    cx: float,
    cy: float,
    length: float,
    width: float,
    angle: float,
    rng: np.random.Generator,
) -> Stamp:
    """A splinter of blood along the nerve fibres: striated, with a brush-like feathered end.

    ``angle`` points along the fibres away from the disc; the end towards the disc is blunt
    and the far end frays into streaks of different lengths.
    """
    w, fade = _subpixel(0.5 * width)
    half_len = 0.5 * length
    x0, y0, dx, dy = _grid(cx, cy, half_len + w + 2.0)
    ca, sa = np.float32(math.cos(angle)), np.float32(math.sin(angle))
    u = (dx * ca + dy * sa) / np.float32(half_len)  # -1 (disc side) .. 1 along the fibres
    v = (-dx * sa + dy * ca) / np.float32(w)  # -1 .. 1 across
    # Each streak across the flame ends at its own length: a frayed, feathery far end.
    fray = np.zeros_like(v)
    for k in (1.5, 3.0, 5.0):
        fray += np.cos(k * np.pi * v + rng.uniform(0.0, 6.3)) / k
    reach = 0.8 + 0.2 * fray
    base = np.sqrt(np.clip((u + 1.0) / 0.5, 0.0, 1.0))  # rounded end towards the disc
    taper = np.clip((reach - u) / (reach + 0.4), 0.0, 1.0) ** 0.6
    half_w = base * taper
    alpha = _cover((half_w - np.abs(v)) * np.float32(w), 0.6 * w)
    alpha *= 0.85 + 0.15 * np.cos(2.0 * np.pi * 1.5 * v + 2.0 * fray)
    alpha *= np.float32(fade * rng.uniform(0.75, 0.9))
    return Stamp(np.clip(alpha, 0.0, 1.0).astype(np.float32), x0, y0)


def exudate_stamp(cx: float, cy: float, radius: float, rng: np.random.Generator) -> Stamp:
    """A waxy yellow speck: sharp, slightly irregular outline, a little denser inside."""
    r, fade = _subpixel(radius)
    x0, y0, dx, dy = _grid(cx, cy, 1.4 * r + 2.0)
    d = np.sqrt(dx * dx + dy * dy)
    outline = r * _lobed_radius(rng, np.arctan2(dy, dx), 0.35, lobes=3)
    body = 0.8 + 0.2 * np.clip(1.0 - d / outline, 0.0, 1.0)
    alpha = _cover(outline - d, 0.15 * r) * body * np.float32(fade * rng.uniform(0.8, 0.95))
    return Stamp(alpha.astype(np.float32), x0, y0)


def cotton_wool_stamp(
    cx: float, cy: float, radius: float, angle: float, rng: np.random.Generator
) -> Stamp:
    """A pale fluffy patch with a feathery edge, stretched along the nerve fibres."""
    a = max(radius, 1.0)
    b = a * rng.uniform(0.55, 0.85)
    x0, y0, dx, dy = _grid(cx, cy, 1.5 * a + 2.0)
    ca, sa = np.float32(math.cos(angle)), np.float32(math.sin(angle))
    u, v = dx * ca + dy * sa, -dx * sa + dy * ca
    theta = np.arctan2(v / np.float32(b), u / np.float32(a))
    ell = np.sqrt((u / np.float32(a)) ** 2 + (v / np.float32(b)) ** 2)
    outline = _lobed_radius(rng, theta, 0.16, lobes=5)
    fluff = smooth_noise(rng, ell.shape, 24, max(b / 4.0, 1.0))
    # Fine striation along the nerve fibres, and a soft, uneven, feathery margin.
    fibres = np.cos(2.0 * np.pi * v / np.float32(max(b / 2.5, 1.5)) + 0.8 * fluff)
    body = np.clip((outline - ell) / 0.6 + 0.35 + 0.15 * fluff, 0.0, 1.0)
    alpha = body**1.5 * (0.8 + 0.12 * fluff + 0.08 * fibres)
    alpha *= np.float32(rng.uniform(0.5, 0.7))
    return Stamp(np.clip(alpha, 0.0, 1.0).astype(np.float32), x0, y0)


def preretinal_stamp(
    cx: float, top: float, half_width: float, depth: float, rng: np.random.Generator
) -> Stamp:
    """A boat-shaped haemorrhage: flat fluid level on top, round below, paler serum above."""
    x0, y0, dx, dy = _grid(cx, top + 0.5 * depth, max(half_width, 0.5 * depth) + 3.0)
    y = dy + np.float32(0.5 * depth)  # distance below the fluid level
    ell = np.sqrt((dx / np.float32(half_width)) ** 2 + (y / np.float32(depth)) ** 2)
    lobes = _lobed_radius(rng, np.arctan2(y, dx), 0.12, lobes=4)
    edge = 0.06 * depth + 1.0
    alpha = _cover((lobes - ell) * np.float32(depth), edge) * _cover(y, 0.4 * edge)
    # Red cells settle: dense below, a paler band of serum under the level, a mottled body.
    serum = np.clip(1.0 - y / np.float32(0.25 * depth), 0.0, 1.0)
    mottle = smooth_noise(rng, alpha.shape, 12, max(depth / 5.0, 1.0))
    settle = np.clip(y / np.float32(depth), 0.0, 1.0)
    alpha *= np.clip(0.78 + 0.15 * settle - 0.45 * serum + 0.05 * mottle, 0.0, 1.0)
    return Stamp(alpha.astype(np.float32), x0, y0)


def vitreous_haze(
    shape: tuple[int, int],
    field: tuple[float, float, float],
    rng: np.random.Generator,
    strength: float,
) -> np.ndarray:
    """Opacity of a patchy veil of blood in the vitreous, settled towards the bottom."""
    h, w = shape
    cx, cy, radius = field
    ys = (np.arange(h, dtype=np.float32)[:, None] - np.float32(cy)) / np.float32(radius)
    drift = np.clip(0.5 + 0.6 * ys, 0.0, 1.0)  # denser below
    clouds = smooth_noise(rng, shape, 24, radius / 4.0)
    return np.clip(strength * drift * (0.55 + 0.35 * clouds), 0.0, 0.85).astype(np.float32)
