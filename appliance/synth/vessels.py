"""The retinal vessel tree: grown as straight segments, rasterised as opacity maps.

All lengths while growing are in disc diameters (DD), so the tree scales with the picture.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from appliance.synth.layout import FundusLayout

LOGGER = logging.getLogger(__name__)

FloatImage = np.ndarray  # float32 HxW, opacity 0..1

# Fraction of each channel a fully opaque vessel removes (veins darker than arteries).
VEIN_ABSORPTION = np.array([0.34, 0.58, 0.50], dtype=np.float32)
ARTERY_ABSORPTION = np.array([0.17, 0.38, 0.32], dtype=np.float32)


@dataclass(frozen=True)
class VesselSegment:
    """One straight piece of a vessel, in image pixels."""

    x0: float
    y0: float
    x1: float
    y1: float
    width: float
    artery: bool


class _TreeBuilder:
    """Grows the retinal vessel tree of one eye; all lengths are in disc diameters (DD)."""

    STEP = 0.06  # DD per segment
    MIN_WIDTH = 0.010  # DD; thinner branches end
    MAX_SEGMENTS = 8000

    def __init__(self, layout: FundusLayout, rng: np.random.Generator) -> None:
        self.layout = layout
        self.rng = rng
        self.dd = 2.0 * layout.disc_radius
        self.segments: list[VesselSegment] = []

    # -- geometry helpers ------------------------------------------------------------------
    def _inside(self, x: float, y: float) -> bool:
        lay = self.layout
        return bool(np.hypot(x - lay.field_cx, y - lay.field_cy) < 0.985 * lay.field_radius)

    def _near_fovea(self, x: float, y: float) -> bool:
        lay = self.layout
        return bool(np.hypot(x - lay.fovea_cx, y - lay.fovea_cy) < 0.3 * self.dd)

    def _crossed_raphe(self, x: float, y: float, side: float) -> bool:
        """Temporal vessels do not cross the horizontal raphe through the fovea."""
        lay = self.layout
        temporal = lay.nasal_sign * (x - lay.fovea_cx) < -0.3 * self.dd
        return bool(temporal and side != 0 and np.sign(y - lay.fovea_cy) != side)

    def _add(self, x0: float, y0: float, x1: float, y1: float, w: float, artery: bool) -> None:
        self.segments.append(VesselSegment(x0, y0, x1, y1, w * self.dd, artery))

    # -- growth ----------------------------------------------------------------------------
    def walk(
        self, x: float, y: float, heading: float, width: float, artery: bool, depth: int
    ) -> None:
        """A smoothly wandering, tapering branch that may split into smaller ones."""
        rng = self.rng
        side = float(np.sign(y - self.layout.fovea_cy))
        curl = 0.0
        step = self.STEP * self.dd
        next_split = rng.exponential(1.4)
        travelled = 0.0
        lay = self.layout
        while width >= self.MIN_WIDTH and len(self.segments) < self.MAX_SEGMENTS:
            # Smooth random bending, gently steered away from the disc: vessels radiate.
            curl = 0.85 * curl + rng.normal(0.0, 0.025)
            away = np.arctan2(y - lay.disc_cy, x - lay.disc_cx)
            heading += curl + 0.05 * np.sin(away - heading)
            nx, ny = x + step * np.cos(heading), y + step * np.sin(heading)
            if not self._inside(nx, ny) or self._near_fovea(nx, ny):
                return
            if self._crossed_raphe(nx, ny, side):
                return
            self._add(x, y, nx, ny, width, artery)
            x, y = nx, ny
            width *= np.exp(-self.STEP / 2.6)
            travelled += self.STEP
            if depth < 4 and travelled >= next_split and width > 2.5 * self.MIN_WIDTH:
                turn = np.radians(rng.uniform(30.0, 70.0)) * rng.choice((-1.0, 1.0))
                self.walk(x, y, heading + turn, width * rng.uniform(0.55, 0.8), artery, depth + 1)
                width *= 0.9
                heading -= 0.3 * turn
                travelled = 0.0
                next_split = rng.exponential(1.4)

    def arcade(self, vsign: float, artery: bool) -> None:
        """A major temporal arcade: leaves the disc vertically, bows around the macula."""
        lay, rng, dd = self.layout, self.rng, self.dd
        fov_u = abs(lay.disc_cx - lay.fovea_cx) / dd
        fov_v = (lay.fovea_cy - lay.disc_cy) / dd
        clearance = rng.uniform(1.5, 1.9) + (0.12 if artery else 0.0)
        v_top = abs(vsign * clearance - fov_v)  # vertical rise from disc when over the fovea
        a = fov_u / v_top**2
        v = np.linspace(0.0, 3.6, 900)
        u = a * v**2
        pts = np.stack([u, vsign * v], axis=1)
        seg = np.hypot(*np.diff(pts, axis=0).T)
        s = np.concatenate([[0.0], np.cumsum(seg)])
        s_new = np.arange(0.0, s[-1], self.STEP)
        pts = np.stack([np.interp(s_new, s, pts[:, 0]), np.interp(s_new, s, pts[:, 1])], axis=1)
        tangent = np.gradient(pts, axis=0)
        normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
        normal /= np.maximum(np.hypot(normal[:, 0], normal[:, 1]), 1e-9)[:, None]
        wiggle = sum(
            amp * np.sin(2 * np.pi * s_new / period + rng.uniform(0, 2 * np.pi))
            for amp, period in ((0.09, 1.7), (0.025, 0.55))
        )
        pts = pts + normal * (wiggle * np.clip(s_new / 0.5, 0.0, 1.0))[:, None]
        start = np.array([rng.uniform(-0.08, 0.08), vsign * rng.uniform(0.0, 0.08)])
        pts = pts + start
        xs = lay.disc_cx - lay.nasal_sign * pts[:, 0] * dd
        ys = lay.disc_cy + pts[:, 1] * dd
        width = (0.062 if artery else 0.085) * rng.uniform(0.93, 1.07)
        next_branch = rng.uniform(0.5, 1.0)
        for i in range(1, len(xs)):
            if not self._inside(xs[i], ys[i]) or width < self.MIN_WIDTH:
                return
            self._add(xs[i - 1], ys[i - 1], xs[i], ys[i], width, artery)
            width *= np.exp(-self.STEP / 9.0)
            if s_new[i] >= next_branch:
                next_branch = s_new[i] + rng.uniform(0.6, 1.3)
                self._branch_off(xs, ys, i, width, artery)
                width *= 0.92

    def _branch_off(
        self, xs: np.ndarray, ys: np.ndarray, i: int, width: float, artery: bool
    ) -> None:
        lay, rng = self.layout, self.rng
        heading = float(np.arctan2(ys[i] - ys[i - 1], xs[i] - xs[i - 1]))
        # Which turn points away from the fovea (towards the periphery)?
        left = heading - np.pi / 2
        away = np.cos(left) * (xs[i] - lay.fovea_cx) + np.sin(left) * (ys[i] - lay.fovea_cy)
        outward = -1.0 if away > 0 else 1.0
        sign = outward if rng.random() < 0.6 else -outward
        turn = -sign * np.radians(rng.uniform(35.0, 75.0))
        self.walk(xs[i], ys[i], heading + turn, width * rng.uniform(0.45, 0.75), artery, 1)

    def grow(self) -> list[VesselSegment]:
        lay, rng, dd = self.layout, self.rng, self.dd
        for vsign in (-1.0, 1.0):
            for artery in (False, True):
                self.arcade(vsign, artery)
        nasal_angle = 0.0 if lay.nasal_sign > 0 else np.pi
        for vsign in (-1.0, 1.0):
            for artery in (False, True):
                tilt = np.radians(rng.uniform(35.0, 70.0))
                heading = nasal_angle + lay.nasal_sign * vsign * tilt
                x0 = lay.disc_cx + rng.uniform(-0.05, 0.05) * dd
                y0 = lay.disc_cy + vsign * rng.uniform(0.0, 0.1) * dd
                width = (0.042 if artery else 0.055) * rng.uniform(0.9, 1.1)
                self.walk(x0, y0, heading, width, artery, 0)
        for _ in range(int(rng.integers(2, 5))):  # small papillomacular and nasal twigs
            temporal = rng.random() < 0.6
            base = nasal_angle + (np.pi if temporal else 0.0)
            heading = base + np.radians(rng.uniform(-25.0, 25.0))
            x0 = lay.disc_cx + np.cos(heading) * 0.3 * dd
            y0 = lay.disc_cy + np.sin(heading) * 0.3 * dd
            self.walk(x0, y0, heading, rng.uniform(0.014, 0.022), bool(rng.random() < 0.5), 2)
        return self.segments


def grow_vessel_tree(layout: FundusLayout, rng: np.random.Generator) -> list[VesselSegment]:
    """The retinal vessels of ``layout`` as straight segments (arcades, nasal trunks, twigs)."""
    return _TreeBuilder(layout, rng).grow()


def draw_vessel(mask: FloatImage, seg: VesselSegment, width: float) -> None:
    """Paint one segment's opacity into ``mask`` (max-combined), anti-aliased, round-capped.

    The cross-section is that of a cylinder: full opacity on the centre line, fading to the
    edges. Segments narrower than a pixel keep their area by getting fainter.
    """
    radius = 0.5 * max(width, 1.0) + 0.5
    h, w = mask.shape
    xa, xb = (
        max(0, int(min(seg.x0, seg.x1) - radius)),
        min(w, int(max(seg.x0, seg.x1) + radius) + 2),
    )
    ya, yb = (
        max(0, int(min(seg.y0, seg.y1) - radius)),
        min(h, int(max(seg.y0, seg.y1) + radius) + 2),
    )
    if xa >= xb or ya >= yb:
        return
    px = np.arange(xa, xb, dtype=np.float32)[None, :] - np.float32(seg.x0)
    py = np.arange(ya, yb, dtype=np.float32)[:, None] - np.float32(seg.y0)
    dx, dy = np.float32(seg.x1 - seg.x0), np.float32(seg.y1 - seg.y0)
    length2 = float(dx * dx + dy * dy)
    t = np.clip((px * dx + py * dy) / length2, 0.0, 1.0) if length2 > 0 else np.float32(0.0)
    ex, ey = px - t * dx, py - t * dy
    depth = np.sqrt(np.clip(1.0 - (ex * ex + ey * ey) / np.float32(radius * radius), 0.0, 1.0))
    if width < 1.0:
        depth *= np.float32(width)
    window = mask[ya:yb, xa:xb]
    np.maximum(window, depth, out=window)


def vessel_masks(
    layout: FundusLayout, segments: list[VesselSegment]
) -> tuple[FloatImage, FloatImage, FloatImage]:
    """Rasterise the vessel tree into vein, artery and arterial light-reflex opacity maps."""
    shape = (layout.height, layout.width)
    veins = np.zeros(shape, np.float32)
    arteries = np.zeros(shape, np.float32)
    reflex = np.zeros(shape, np.float32)
    for seg in segments:
        draw_vessel(arteries if seg.artery else veins, seg, seg.width)
        if seg.artery and seg.width >= 4.0:
            draw_vessel(reflex, seg, 0.25 * seg.width)
    return veins, arteries, reflex


# Concentric passes (width fraction, opacity) whose sum approximates a cylinder's profile.
_PASSES = ((1.0, 0.62), (0.72, 0.88), (0.4, 1.0))


def rasterise(
    shape: tuple[int, int], segments: list[VesselSegment], width_scale: float = 1.0
) -> FloatImage:
    """Opacity (float32 0..1) of ``segments`` drawn with OpenCV, fast at any resolution.

    Each segment is drawn as three concentric anti-aliased strokes on a canvas supersampled
    twice, then area-averaged down: full opacity on the centre line, fading to the edges like
    :func:`draw_vessel`, and strokes thinner than a pixel keep their area by getting fainter.
    """
    height, width = shape
    ss = 2
    canvas = np.zeros((height * ss, width * ss), np.uint8)
    if segments:
        arr = np.array([(s.x0, s.y0, s.x1, s.y1, s.width) for s in segments], np.float64)
        pts = np.rint((ss * (arr[:, :4] + 0.5) - 0.5) * 8.0).astype(np.int32).reshape(-1, 2, 2)
        wide = arr[:, 4] * width_scale * ss
        for frac, level in _PASSES:
            stroke = wide * frac
            thick = np.maximum(1, np.rint(stroke)).astype(np.int64)
            value = np.rint(np.clip(stroke / thick, 0.0, 1.0) * level * 16.0).astype(np.int64)
            keys = thick * 32 + value
            for key in np.unique(keys):
                if key % 32 == 0:
                    continue
                sel = pts[keys == key]
                shade = float(min(255, (key % 32) * 16))
                cv2.polylines(canvas, list(sel), False, shade, int(key // 32), cv2.LINE_AA, 3)
    small = cv2.resize(canvas, (width, height), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32) * np.float32(1.0 / 255.0)


def vessel_layers(
    shape: tuple[int, int], segments: list[VesselSegment]
) -> tuple[FloatImage, FloatImage, FloatImage]:
    """Vein, artery and arterial light-reflex opacity, like :func:`vessel_masks` but faster."""
    veins = [s for s in segments if not s.artery]
    arteries = [s for s in segments if s.artery]
    reflex = [s for s in arteries if s.width >= 4.0]
    return (
        rasterise(shape, veins),
        rasterise(shape, arteries),
        rasterise(shape, reflex, width_scale=0.25),
    )
