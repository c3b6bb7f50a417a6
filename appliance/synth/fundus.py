"""A small deterministic procedural colour fundus photograph.

The picture is built in layers, each a pure function of a :class:`FundusLayout` and a seeded
random generator: background colour with vignetting and choroidal texture, macula, optic disc
with cup, the retinal vessel tree, the circular camera mask and sensor noise. All lengths are
fractions of the field radius, so the same seed gives the same eye at any resolution.

Orientation follows a standard fundus photograph: the optic disc lies nasally, which is the
viewer's right for a right eye ("R") and the viewer's left for a left eye ("L"); the fovea
lies about 2.5 disc diameters temporal to the disc, near the centre of the field.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

LOGGER = logging.getLogger(__name__)

FloatImage = np.ndarray  # float32 HxW or HxWx3, values in DN (0..255)

# Centre-of-field RGB colour of a lightly and a darkly pigmented fundus.
_LIGHT_FUNDUS = np.array([236.0, 124.0, 60.0], dtype=np.float32)
_DARK_FUNDUS = np.array([160.0, 68.0, 30.0], dtype=np.float32)
# Neuroretinal rim and cup of the optic disc.
_RIM_COLOUR = np.array([244.0, 168.0, 100.0], dtype=np.float32)
_CUP_COLOUR = np.array([255.0, 226.0, 172.0], dtype=np.float32)
# Fraction of each channel a fully opaque vessel removes (veins darker than arteries).
_VEIN_ABSORPTION = np.array([0.34, 0.58, 0.50], dtype=np.float32)
_ARTERY_ABSORPTION = np.array([0.17, 0.38, 0.32], dtype=np.float32)


@dataclass(frozen=True)
class FundusLayout:
    """Where everything is in one synthetic photograph, in image pixels (x right, y down)."""

    height: int
    width: int
    eye: str  # "R" or "L"
    pigmentation: float  # 0 = lightly pigmented (blond) fundus, 1 = darkly pigmented
    field_cx: float
    field_cy: float
    field_radius: float
    disc_cx: float
    disc_cy: float
    disc_radius: float  # horizontal radius; the disc is slightly taller than wide
    cup_ratio: float  # cup diameter / disc diameter
    fovea_cx: float
    fovea_cy: float

    @property
    def nasal_sign(self) -> int:
        """+1 when nasal is towards larger x (right eye), -1 otherwise."""
        return 1 if self.eye == "R" else -1


def _check_args(size: tuple[int, int], eye: str, pigmentation: float) -> None:
    if eye not in ("R", "L"):
        raise ValueError(f"eye must be 'R' or 'L', got {eye!r}")
    if not 0.0 <= pigmentation <= 1.0:
        raise ValueError(f"pigmentation must be in [0, 1], got {pigmentation}")
    if len(size) != 2 or min(size) < 16:
        raise ValueError(f"size must be (height, width) with both >= 16, got {size}")


def _streams(seed: int) -> list[np.random.Generator]:
    """Independent random streams for layout, texture, vessels and noise."""
    return np.random.default_rng(seed).spawn(4)


def fundus_layout(
    seed: int, size: tuple[int, int] = (1024, 1024), eye: str = "R", pigmentation: float = 0.5
) -> FundusLayout:
    """The geometry :func:`make_fundus` draws for these arguments."""
    _check_args(size, eye, pigmentation)
    rng = _streams(seed)[0]
    height, width = int(size[0]), int(size[1])
    radius = 0.5 * min(height, width) * rng.uniform(0.90, 0.94)
    cx = (width - 1) / 2.0 + rng.uniform(-0.01, 0.01) * radius
    cy = (height - 1) / 2.0 + rng.uniform(-0.01, 0.01) * radius
    nasal = 1 if eye == "R" else -1
    disc_r = radius * rng.uniform(0.115, 0.13)
    fovea_x = cx - nasal * rng.uniform(0.0, 0.06) * radius
    fovea_y = cy + rng.uniform(0.0, 0.05) * radius
    disc_dist = 2.5 * 2.0 * disc_r * rng.uniform(0.95, 1.05)
    return FundusLayout(
        height=height,
        width=width,
        eye=eye,
        pigmentation=float(pigmentation),
        field_cx=float(cx),
        field_cy=float(cy),
        field_radius=float(radius),
        disc_cx=float(fovea_x + nasal * disc_dist),
        disc_cy=float(fovea_y - disc_dist * rng.uniform(0.05, 0.15)),
        disc_radius=float(disc_r),
        cup_ratio=float(rng.uniform(0.25, 0.5)),
        fovea_cx=float(fovea_x),
        fovea_cy=float(fovea_y),
    )


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


def smooth_noise(
    rng: np.random.Generator, shape: tuple[int, int], cells: float, scale_px: float
) -> FloatImage:
    """Zero-mean, unit-std band-limited noise with features about ``scale_px`` pixels across.

    ``cells`` caps the size of the random grid that is upsampled, so big images stay cheap.
    """
    height, width = shape
    gh = int(np.clip(round(height / scale_px), 2, cells))
    gw = int(np.clip(round(width / scale_px), 2, cells))
    grid = rng.standard_normal((gh + 2, gw + 2)).astype(np.float32)
    big = (width + 2 * width // gw, height + 2 * height // gh)
    up = cv2.resize(grid, big, interpolation=cv2.INTER_CUBIC)
    oy, ox = height // gh, width // gw
    out = np.ascontiguousarray(up[oy : oy + height, ox : ox + width])
    std = float(out.std())
    return (out - float(out.mean())) / (std if std > 0 else 1.0)


def _radial(layout: FundusLayout) -> np.ndarray:
    """Distance from the field centre in field radii, float32 HxW."""
    xs = np.arange(layout.width, dtype=np.float32)[None, :] - np.float32(layout.field_cx)
    ys = np.arange(layout.height, dtype=np.float32)[:, None] - np.float32(layout.field_cy)
    return np.sqrt(xs * xs + ys * ys) / np.float32(layout.field_radius)


def _box(
    layout: FundusLayout, cx: float, cy: float, half: float
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
    """Slices of a square window around (cx, cy) and its offsets from there (row, column)."""
    x0, x1 = max(0, int(cx - half)), min(layout.width, int(cx + half) + 2)
    y0, y1 = max(0, int(cy - half)), min(layout.height, int(cy + half) + 2)
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
    return (slice(y0, y1), slice(x0, x1)), dx, dy


def _background(layout: FundusLayout, rng: np.random.Generator, rho: np.ndarray) -> FloatImage:
    """Orange-red fundus with vignetting, choroidal mottling and (when light) tigroid vessels."""
    shape = (layout.height, layout.width)
    p = layout.pigmentation
    base = (1.0 - p) * _LIGHT_FUNDUS + p * _DARK_FUNDUS
    r = layout.field_radius
    mottle = smooth_noise(rng, shape, 64, r / 10.0)
    grain = smooth_noise(rng, shape, 512, r / 90.0)
    # Tigroid pattern: the choroidal vessels show through a thin pigment epithelium.
    ridges = 1.0 - np.abs(smooth_noise(rng, shape, 96, r / 14.0))
    tigroid = np.clip((ridges - 0.6) / 0.4, 0.0, 1.0) * np.clip(rho - 0.35, 0.0, 1.0)
    shade = 1.0 + 0.03 * mottle + 0.012 * grain - (0.08 * (1.0 - p) + 0.02) * tigroid
    shade *= np.clip(1.0 - 0.38 * rho**2.4, 0.0, 1.0)  # vignetting
    rho2 = rho * rho
    img = np.empty((*shape, 3), dtype=np.float32)
    for c, fade in enumerate((0.0, 0.10, 0.12)):  # green and blue fade faster outwards
        img[..., c] = shade * (base[c] * (1.0 - fade * rho2))
    return img


def _apply_macula(img: FloatImage, layout: FundusLayout) -> None:
    dd = 2.0 * layout.disc_radius
    window, dx, dy = _box(layout, layout.fovea_cx, layout.fovea_cy, 2.5 * dd)
    d2 = (dx * dx + dy * dy) / np.float32(dd * dd)
    depth = 0.18 + 0.10 * layout.pigmentation
    shade = 1.0 - depth * np.exp(-d2 / 0.8) - 0.12 * np.exp(-d2 / 0.04)
    reflex = 0.10 * 255.0 * np.exp(-d2 / 0.0012)
    patch = img[window] * shade[..., None]
    patch += reflex[..., None] * np.array([0.6, 0.5, 0.4], dtype=np.float32)
    img[window] = patch


def _apply_disc(img: FloatImage, layout: FundusLayout, rng: np.random.Generator) -> None:
    rx = layout.disc_radius
    window, dx, dy = _box(layout, layout.disc_cx, layout.disc_cy, 1.6 * rx)
    patch = img[window]
    ell = np.sqrt((dx / rx) ** 2 + (dy / (1.08 * rx)) ** 2)  # the disc is a little taller
    # Faint pale peripapillary halo, then the disc with a soft edge.
    halo = 0.10 * np.exp(-(((ell - 1.0) / 0.25) ** 2))
    patch += halo[..., None] * (_RIM_COLOUR - patch)
    disc = np.clip((1.0 - ell) / 0.08 + 0.5, 0.0, 1.0)
    mottle = 1.0 + 0.04 * smooth_noise(rng, ell.shape, 64, rx / 4.0)
    rim = (_RIM_COLOUR * (1.0 - 0.08 * layout.pigmentation)) * mottle[..., None]
    patch += disc[..., None] * (rim - patch)
    cup_dx = dx + np.float32(layout.nasal_sign * 0.12 * rx)  # cups sit slightly temporally
    cup_r = layout.cup_ratio * rx
    cell = np.sqrt((cup_dx / cup_r) ** 2 + (dy / (1.1 * cup_r)) ** 2)
    cup = np.clip((1.0 - cell) / 0.35, 0.0, 1.0) ** 1.5
    patch += cup[..., None] * (_CUP_COLOUR - patch)
    img[window] = patch


def _draw_vessel(mask: FloatImage, seg: VesselSegment, width: float) -> None:
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


def _vessel_masks(
    layout: FundusLayout, segments: list[VesselSegment]
) -> tuple[FloatImage, FloatImage, FloatImage]:
    """Rasterise the vessel tree into vein, artery and arterial light-reflex opacity maps."""
    shape = (layout.height, layout.width)
    veins = np.zeros(shape, np.float32)
    arteries = np.zeros(shape, np.float32)
    reflex = np.zeros(shape, np.float32)
    for seg in segments:
        _draw_vessel(arteries if seg.artery else veins, seg, seg.width)
        if seg.artery and seg.width >= 4.0:
            _draw_vessel(reflex, seg, 0.25 * seg.width)
    return veins, arteries, reflex


def _apply_vessels(img: FloatImage, layout: FundusLayout, rng: np.random.Generator) -> None:
    segments = grow_vessel_tree(layout, rng)
    veins, arteries, reflex = _vessel_masks(layout, segments)
    img *= 1.0 - veins[..., None] * _VEIN_ABSORPTION
    img *= 1.0 - arteries[..., None] * _ARTERY_ABSORPTION
    img += (0.06 * reflex)[..., None] * (np.float32(255.0) - img)


def _apply_camera(
    img: FloatImage, layout: FundusLayout, rng: np.random.Generator, rho: np.ndarray
) -> np.ndarray:
    """Circular field stop, black surround and sensor noise; returns uint8 RGB."""
    edge_px = max(1.0, layout.field_radius / 300.0)
    soft = np.clip((1.0 - rho) * np.float32(layout.field_radius / edge_px) + 0.5, 0.0, 1.0)
    img *= soft[..., None]
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(1.8)
    img += np.float32(2.5)
    return np.clip(img, 0, 255).astype(np.uint8)


def render_fundus(layout: FundusLayout, seed: int) -> np.ndarray:
    """Draw ``layout`` as an RGB uint8 photograph; the random details come from ``seed``."""
    _, texture_rng, vessel_rng, noise_rng = _streams(seed)
    rho = _radial(layout)
    img = _background(layout, texture_rng, rho)
    _apply_macula(img, layout)
    _apply_disc(img, layout, texture_rng)
    _apply_vessels(img, layout, vessel_rng)
    return _apply_camera(img, layout, noise_rng, rho)


def make_fundus(
    seed: int, size: tuple[int, int] = (1024, 1024), eye: str = "R", pigmentation: float = 0.5
) -> np.ndarray:
    """A synthetic colour fundus photograph: RGB uint8 of shape ``(height, width, 3)``.

    ``size`` is ``(height, width)``; ``eye`` is ``"R"`` or ``"L"`` (the two mirror each other);
    ``pigmentation`` runs from 0 (light, orange, tigroid) to 1 (dark brown-red). The same
    arguments always give the same array.
    """
    layout = fundus_layout(seed, size, eye, pigmentation)
    return render_fundus(layout, seed)
