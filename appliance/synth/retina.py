"""The retina of one case, drawn in the right-eye frame before the camera sees it.

Layers, back to front: fundus background (pigment, choroidal tessellation), macula, optic disc
(atrophy, rim, cup), deep lesions (microaneurysms, dot/blot haemorrhages, hard exudates), the
vessel tree (bent at the cup edge, beaded where planned) with IRMA, nerve-fibre-layer lesions
(flame haemorrhages, cotton-wool spots), new vessels, preretinal and vitreous blood, and the
yellowing of an ageing lens. Every lesion drawn is recorded, and its visible pixels are set in
a bit mask (:data:`~appliance.synth.lesions.LESION_BITS`), so labels are counted, not assumed.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

from appliance.synth import lesions as les
from appliance.synth.disc import DiscModel, bend_vessels, disc_model, draw_disc
from appliance.synth.fundus import apply_macula, background, radial
from appliance.synth.layout import FundusLayout
from appliance.synth.neovasc import bead_veins, irma_segments, nvd_segments, nve_segments
from appliance.synth.placement import Placer
from appliance.synth.retinopathy import (
    DME_CLEAR_DD,
    QUADRANTS,
    Findings,
    Lesion,
    plan_findings,
    quadrant_of,
)
from appliance.synth.vessels import (
    ARTERY_ABSORPTION,
    VEIN_ABSORPTION,
    VesselSegment,
    grow_vessel_tree,
    vessel_layers,
)

LOGGER = logging.getLogger(__name__)

_VEIL = np.array([118.0, 34.0, 22.0], dtype=np.float32)  # colour of dense vitreous blood
# Smallest radius drawn for dots and specks: below it, small pictures would hide them.
_MIN_RADIUS_PX = 0.7


@dataclass(frozen=True)
class RetinaDrawing:
    """The drawn retina with its ground truth, all in the right-eye frame."""

    image: np.ndarray  # float32 HxWx3, DN
    lesion_bits: np.ndarray  # uint16 HxW, bitwise OR of LESION_BITS of the lesions shown
    lesions: tuple[Lesion, ...]
    findings: Findings
    disc: DiscModel
    disc_mask: np.ndarray  # bool HxW
    cup_mask: np.ndarray  # bool HxW


def _tessellate(
    img: np.ndarray, layout: FundusLayout, rng: np.random.Generator, strength: float
) -> None:
    """Choroidal vessels showing through a thin pigment epithelium, radiating from the pole."""
    pole_x = 0.5 * (layout.disc_cx + layout.fovea_cx)
    pole_y = 0.5 * (layout.disc_cy + layout.fovea_cy)
    n_ang, n_rad = 150, 12
    grid = rng.standard_normal((n_rad + 4, n_ang)).astype(np.float32)
    xs = (np.arange(layout.width, dtype=np.float32) - np.float32(pole_x))[None, :]
    ys = (np.arange(layout.height, dtype=np.float32) - np.float32(pole_y))[:, None]
    rad = np.sqrt(xs * xs + ys * ys) / np.float32(layout.field_radius)
    ang = np.arctan2(np.broadcast_to(ys, rad.shape), np.broadcast_to(xs, rad.shape))
    map_x = ((ang + np.float32(np.pi)) * np.float32(n_ang / (2 * np.pi))).astype(np.float32)
    map_y = (1.0 + rad * np.float32(n_rad / 1.6)).astype(np.float32)
    noise = cv2.remap(grid, map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_WRAP)
    vessels = np.clip(1.0 - np.abs(noise) / 0.9, 0.0, 1.0) ** 0.5
    fade = np.clip((rad - 0.1) / 0.4, 0.0, 1.0) * np.float32(strength)
    dark = (fade * (1.0 - vessels))[..., None]
    img *= 1.0 - dark * np.array([0.32, 0.36, 0.26], dtype=np.float32)
    img *= 1.0 + (fade * vessels)[..., None] * np.array([0.06, 0.04, 0.0], dtype=np.float32)


class _Painter:
    """Places and draws the planned lesions, one canvas per kind."""

    def __init__(self, layout: FundusLayout, placer: Placer, rng: np.random.Generator) -> None:
        self.layout = layout
        self.placer = placer
        self.rng = rng
        self.dd = layout.disc_diameter
        self.canvases: dict[str, les.Canvas] = {}
        self.lesions: list[Lesion] = []

    def canvas(self, kind: str) -> les.Canvas:
        if kind not in self.canvases:
            self.canvases[kind] = les.Canvas(self.layout.height, self.layout.width)
        return self.canvases[kind]

    def record(self, kind: str, x: float, y: float, size: float) -> None:
        self.lesions.append(Lesion(kind, x, y, size, quadrant_of(self.layout, x, y)))

    def pole(self) -> tuple[float, float]:
        lay = self.layout
        return 0.5 * (lay.disc_cx + lay.fovea_cx), 0.5 * (lay.disc_cy + lay.fovea_cy)

    def nerve_fibre_angle(self, x: float, y: float) -> float:
        lay = self.layout
        return math.atan2(y - lay.disc_cy, x - lay.disc_cx) + float(self.rng.normal(0.0, 0.15))

    # -- deep lesions ------------------------------------------------------------------------
    def microaneurysms(self, n: int) -> None:
        lay, rng = self.layout, self.rng
        for _ in range(n):
            r = max(self.dd * rng.uniform(1 / 80, 1 / 50), _MIN_RADIUS_PX)
            x, y = self.placer.point(
                radius=r, around=(lay.fovea_cx, lay.fovea_cy), spread=1.6 * self.dd
            )
            self.canvas("microaneurysm").add(les.microaneurysm_stamp(x, y, r, rng))
            self.record("microaneurysm", x, y, r)

    def haemorrhages(self, counts: tuple[int, ...], flame_fraction: float) -> None:
        rng, dd = self.rng, self.dd
        lay = self.layout
        for quadrant, count in zip(QUADRANTS, counts, strict=True):
            for _ in range(count):
                if rng.random() < flame_fraction:
                    length = dd * rng.uniform(0.2, 0.5)
                    x, y = self.placer.point(
                        radius=0.5 * length,
                        quadrant=quadrant,
                        around=(lay.disc_cx, lay.disc_cy),
                        spread=1.6 * dd,
                        ok=lambda x, y: 0.7 <= self.placer.from_disc(x, y) <= 3.2,
                    )
                    width = dd * rng.uniform(0.06, 0.12)
                    angle = self.nerve_fibre_angle(x, y)
                    stamp = les.flame_stamp(x, y, length, width, angle, rng)
                    self.canvas("flame_haemorrhage").add(stamp)
                    self.record("flame_haemorrhage", x, y, 0.5 * length)
                    continue
                blot = bool(rng.random() < 0.45)
                r = dd * (rng.uniform(1 / 16, 1 / 6) if blot else rng.uniform(1 / 30, 1 / 16))
                x, y = self.placer.point(
                    radius=r, quadrant=quadrant, around=self.pole(), spread=0.45 * lay.field_radius
                )
                self.canvas("haemorrhage").add(les.haemorrhage_stamp(x, y, r, rng, blot))
                self.record("haemorrhage", x, y, r)

    def exudate_cluster(self, macular: bool) -> None:
        lay, rng, dd, placer = self.layout, self.rng, self.dd, self.placer
        circinate = bool(rng.random() < 0.35)
        ring = dd * rng.uniform(0.25, 0.55)
        extent = ring if circinate else dd * rng.uniform(0.12, 0.3)
        if macular:
            cx, cy = placer.point(
                radius=0.0,
                around=(lay.fovea_cx, lay.fovea_cy),
                spread=0.3 * dd,
                ok=lambda x, y: placer.from_fovea(x, y) <= 0.6,
            )
        else:
            clear = DME_CLEAR_DD + extent / dd + 0.1
            cx, cy = placer.point(
                radius=extent,
                around=(lay.fovea_cx, lay.fovea_cy),
                spread=2.0 * dd,
                ok=lambda x, y: clear <= placer.from_fovea(x, y) <= clear + 2.5,
            )
        n = int(rng.integers(14, 45) if circinate else rng.integers(6, 30))
        for i in range(n):
            r = dd * rng.uniform(1 / 90, 1 / 30) * (2.0 if rng.random() < 0.1 else 1.0)
            r = max(r, _MIN_RADIUS_PX)
            if circinate:
                phi = rng.uniform(0.3, 2 * np.pi - 0.3)
                rr = ring * (1.0 + rng.normal(0.0, 0.1))
                x, y = cx + rr * math.cos(phi), cy + rr * math.sin(phi)
            elif i == 0:
                x, y = cx, cy
            else:
                x, y = cx + rng.normal(0.0, extent), cy + rng.normal(0.0, extent)
            if placer.rho(x, y) > 0.9 or placer.from_disc(x, y) < 0.8:
                continue
            if not macular and placer.from_fovea(x, y) < DME_CLEAR_DD + r / dd:
                continue
            self.canvas("hard_exudate").add(les.exudate_stamp(x, y, r, rng))
            self.record("hard_exudate", x, y, r)

    # -- nerve fibre layer and beyond ------------------------------------------------------------
    def cotton_wool_spots(self, n: int) -> None:
        lay, rng, dd, placer = self.layout, self.rng, self.dd, self.placer
        for _ in range(n):
            r = dd * rng.uniform(0.12, 0.28)
            x, y = placer.point(
                radius=r,
                around=(lay.disc_cx, lay.disc_cy),
                spread=2.0 * dd,
                ok=lambda x, y: (
                    0.9 <= placer.from_disc(x, y) <= 3.6 and placer.from_fovea(x, y) >= 0.6
                ),
            )
            stamp = les.cotton_wool_stamp(x, y, r, self.nerve_fibre_angle(x, y), rng)
            self.canvas("cotton_wool_spot").add(stamp)
            self.record("cotton_wool_spot", x, y, r)

    def vessel_lesion(self, kind: str, segments: list[VesselSegment], x: float, y: float) -> None:
        self.canvas(kind).add_segments(segments)
        self.record(kind, x, y, 0.3 * self.dd)

    def irma(self, sites: int) -> None:
        rng = self.rng
        for quadrant in rng.permutation(QUADRANTS)[:sites]:
            site = self.placer.vein_site(str(quadrant), 0.02, (1.2, 4.5))
            if site is None:
                x, y = self.placer.point(radius=0.3 * self.dd, quadrant=str(quadrant), max_rho=0.8)
                heading = rng.uniform(0.0, 2 * np.pi)
            else:
                side = rng.choice((-1.0, 1.0))
                heading = site[2] + side * np.pi / 2
                off = self.dd * rng.uniform(0.08, 0.2)
                x, y = site[0] + off * math.cos(heading), site[1] + off * math.sin(heading)
            self.vessel_lesion("irma", irma_segments(rng, (x, y), heading, self.dd), x, y)

    def nve(self, sites: int) -> None:
        rng = self.rng
        for quadrant in rng.permutation(QUADRANTS)[:sites]:
            site = self.placer.vein_site(str(quadrant), 0.03, (1.2, 4.0))
            if site is None:
                x, y = self.placer.point(radius=0.4 * self.dd, quadrant=str(quadrant), max_rho=0.75)
                facing = rng.uniform(0.0, 2 * np.pi)
            else:
                facing = site[2] + rng.choice((-1.0, 1.0)) * np.pi / 2
                x, y = site[0], site[1]
            self.vessel_lesion("nve", nve_segments(rng, (x, y), facing, self.dd), x, y)

    def preretinal(self, spare_macula: bool) -> None:
        """A boat-shaped haemorrhage; ``spare_macula`` keeps it off macular exudates (DME)."""
        rng, dd, placer = self.rng, self.dd, self.placer
        half_width, depth = dd * rng.uniform(0.5, 1.1), dd * rng.uniform(0.45, 0.9)
        clear = (1.3 + max(half_width, depth) / dd) if spare_macula else 0.0

        def ok(x: float, y: float) -> bool:
            return placer.from_disc(x, y) > 1.2 and placer.from_fovea(x, y) > clear

        x, y = placer.point(
            radius=half_width,
            around=self.pole(),
            spread=1.2 * dd,
            max_rho=0.8 if spare_macula else 0.65,
            ok=ok,
        )
        stamp = les.preretinal_stamp(x, y - 0.5 * depth, half_width, depth, rng)
        self.canvas("preretinal_haemorrhage").add(stamp)
        self.record("preretinal_haemorrhage", x, y, half_width)


def _bead(
    segments: list[VesselSegment], painter: _Painter, n_quadrants: int
) -> list[VesselSegment]:
    """Bead the major veins of ``n_quadrants`` quadrants that have enough of them."""
    lay, dd = painter.layout, painter.dd
    eligible = np.array(
        [
            not s.artery
            and s.width >= 0.03 * dd
            and painter.placer.from_disc(s.x0, s.y0) >= 1.0
            and painter.placer.rho(s.x0, s.y0) < 0.9
            for s in segments
        ]
    )
    quads = np.array([quadrant_of(lay, s.x0, s.y0) for s in segments])
    usable = [q for q in QUADRANTS if np.count_nonzero(eligible & (quads == q)) >= 8]
    chosen: list[str] = []
    if len(usable) >= 2:
        chosen = [str(q) for q in painter.rng.permutation(usable)[:n_quadrants]]
    picked = eligible & np.isin(quads, list(chosen))
    segments, beaded = bead_veins(segments, picked, dd, painter.rng)
    for quadrant in chosen:
        mine = [s for s in beaded if quadrant_of(lay, s.x0, s.y0) == quadrant]
        painter.vessel_lesion("venous_beading", mine, mine[0].x0, mine[0].y0)
    return segments


def draw_retina(
    layout: FundusLayout,
    seed: np.random.SeedSequence,
    *,
    dr_grade: int,
    dme: bool,
    cdr: float,
    notch: bool,
    ppa: bool,
    tessellation: float,
    lens_yellowing: float,
    darkening: float = 0.0,
) -> RetinaDrawing:
    """Draw one right-eye retina; see the module docstring for the layers."""
    tex_rng, vessel_rng, disc_rng, plan_rng, shape_rng = (
        np.random.default_rng(s) for s in seed.spawn(5)
    )
    rho = radial(layout)
    img = background(layout, tex_rng, rho)
    if darkening > 0:  # heavy pigment: darker and browner than the generator's darkest
        img *= 1.0 - np.float32(darkening) * np.array([0.3, 0.24, 0.12], np.float32)
    if tessellation > 0:
        _tessellate(img, layout, tex_rng, tessellation)
    apply_macula(img, layout)
    model = disc_model(layout, disc_rng, cdr, notch, ppa)
    window, disc_alpha, cup_alpha = draw_disc(img, layout, model, disc_rng)
    segments = bend_vessels(grow_vessel_tree(layout, vessel_rng), model)

    findings = plan_findings(dr_grade, dme, plan_rng)
    painter = _Painter(layout, Placer(layout, model, segments, plan_rng), shape_rng)
    segments, findings = _deep_lesions(img, rho, painter, findings, segments, dr_grade)

    veins, arteries, reflex = vessel_layers((layout.height, layout.width), segments)
    veins[window] *= 1.0 - 0.3 * cup_alpha
    arteries[window] *= 1.0 - 0.3 * cup_alpha
    img *= 1.0 - veins[..., None] * VEIN_ABSORPTION
    img *= 1.0 - arteries[..., None] * ARTERY_ABSORPTION
    img += (0.06 * reflex)[..., None] * (np.float32(255.0) - img)

    painter.irma(findings.irma_sites)
    painter.cotton_wool_spots(findings.cotton_wool_spots)
    if findings.nvd:
        segs = nvd_segments(shape_rng, (model.cx, model.cy), model.rx, painter.dd)
        painter.vessel_lesion("nvd", segs, model.cx, model.cy)
    painter.nve(findings.nve_sites)
    if findings.preretinal:
        painter.preretinal(spare_macula=findings.macular_exudates)
    for kind in ("irma", "flame_haemorrhage", "nvd", "nve", "preretinal_haemorrhage"):
        if kind in painter.canvases:
            painter.canvases[kind].absorb(img, les.ABSORPTION[kind])
    if "cotton_wool_spot" in painter.canvases:
        painter.canvases["cotton_wool_spot"].paint(img, les.PAINT["cotton_wool_spot"], _light(rho))
    if findings.vitreous:
        _vitreous(img, layout, painter, shape_rng)
    if lens_yellowing > 0:
        img *= np.array([1.0, 1.0 - 0.3 * lens_yellowing, 1.0 - lens_yellowing], np.float32)

    bits = _lesion_bits(painter, (layout.height, layout.width))
    disc_mask = np.zeros(bits.shape, bool)
    cup_mask = np.zeros(bits.shape, bool)
    disc_mask[window] = disc_alpha > 0.5
    cup_mask[window] = cup_alpha > 0.5
    return RetinaDrawing(
        image=img,
        lesion_bits=bits,
        lesions=tuple(painter.lesions),
        findings=findings,
        disc=model,
        disc_mask=disc_mask,
        cup_mask=cup_mask,
    )


def _deep_lesions(
    img: np.ndarray,
    rho: np.ndarray,
    painter: _Painter,
    findings: Findings,
    segments: list[VesselSegment],
    dr_grade: int,
) -> tuple[list[VesselSegment], Findings]:
    """Beading, microaneurysms, haemorrhages and exudates: the lesions under the vessels."""
    if findings.beading_quadrants:
        segments = _bead(segments, painter, findings.beading_quadrants)
        beaded = {x.quadrant for x in painter.lesions if x.kind == "venous_beading"}
        if len(beaded) < 2 and dr_grade == 3:  # too few veins to bead: IRMA instead
            findings = _without_beading(findings)
            painter.irma(1)
    painter.microaneurysms(findings.microaneurysms)
    painter.haemorrhages(findings.haemorrhages, findings.flame_fraction)
    if findings.macular_exudates:
        painter.exudate_cluster(macular=True)
    for _ in range(findings.exudate_clusters):
        painter.exudate_cluster(macular=False)
    for kind in ("microaneurysm", "haemorrhage"):
        if kind in painter.canvases:
            painter.canvases[kind].absorb(img, les.ABSORPTION[kind])
    if "hard_exudate" in painter.canvases:
        painter.canvases["hard_exudate"].paint(img, les.PAINT["hard_exudate"], _light(rho))
    return segments, findings


def _lesion_bits(painter: _Painter, shape: tuple[int, int]) -> np.ndarray:
    """Per-pixel lesion bits (uint16, see ``les.LESION_BITS``) of what the painter drew."""
    bits = np.zeros(shape, np.uint16)
    for kind, canvas in painter.canvases.items():
        if (win := canvas.window) is not None:
            bit = np.uint16(les.LESION_BITS[kind])
            bits[win] |= np.where(canvas.alpha[win] > les.MASK_LEVEL, bit, np.uint16(0))
    if (boat := painter.canvases.get("preretinal_haemorrhage")) is not None:
        hidden = boat.alpha > 0.6  # what lies behind dense preretinal blood does not show
        bits[hidden] = np.uint16(les.LESION_BITS["preretinal_haemorrhage"])
    return bits


def _light(rho: np.ndarray) -> np.ndarray:
    """The background's own fall-off of illumination towards the field edge."""
    return np.clip(1.0 - 0.38 * rho**2.4, 0.0, 1.0)


def _without_beading(findings: Findings) -> Findings:
    return replace(findings, beading_quadrants=0)


def _vitreous(
    img: np.ndarray, layout: FundusLayout, painter: _Painter, rng: np.random.Generator
) -> None:
    """A veil of blood: detail washes out and the picture turns dark red where it is dense."""
    shape = (layout.height, layout.width)
    field = (layout.field_cx, layout.field_cy, layout.field_radius)
    alpha = les.vitreous_haze(shape, field, rng, float(rng.uniform(0.3, 0.55)))
    k = max(1, int(layout.field_radius / 40))
    small_size = (max(1, shape[1] // k), max(1, shape[0] // k))
    small = cv2.resize(img, small_size, interpolation=cv2.INTER_AREA)
    blurred = cv2.resize(
        cv2.GaussianBlur(small, (0, 0), 3.0), (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR
    )
    a = alpha[..., None]
    img *= 1.0 - a
    img += a * (0.5 * blurred * np.array([0.8, 0.4, 0.4], np.float32) + 0.5 * _VEIL)
    painter.canvas("vitreous_haemorrhage").add(les.Stamp(alpha, 0, 0))
    below = layout.field_cy + 0.4 * layout.field_radius
    painter.record("vitreous_haemorrhage", layout.field_cx, below, layout.field_radius)
