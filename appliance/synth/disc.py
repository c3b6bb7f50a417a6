"""The optic disc drawn for glaucoma labels: cup-to-disc ratio, ISNT rim, notch, atrophy.

Everything is drawn in the right-eye frame (left eyes are mirrored afterwards), with angles
about the disc centre measured in image coordinates: 0 is nasal (+x), pi/2 inferior (+y, down),
pi temporal and 3 pi/2 superior.

The disc is an ellipse a little taller than wide. The cup is a smaller ellipse whose vertical
diameter is exactly ``cdr`` times the disc's (the vertical cup-to-disc ratio), a little wider
or narrower than tall, shifted slightly temporally and superiorly so that the neuroretinal rim
is widest inferiorly, then superiorly, nasally and temporally in a healthy disc (the ISNT
rule); advanced cups may lose the inferior rim first. A notch is a focal, inferotemporal
thinning of the rim on top of that (``cdr`` describes the cup without its notch). Vessels
crossing the cup margin bend there (:func:`bend_vessels`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from appliance.synth.fundus import box, smooth_noise
from appliance.synth.layout import FundusLayout
from appliance.synth.vessels import VesselSegment

LOGGER = logging.getLogger(__name__)

_RIM = np.array([234.0, 142.0, 100.0], dtype=np.float32)  # pink-orange neuroretinal rim
_CUP = np.array([250.0, 220.0, 168.0], dtype=np.float32)  # pale cup
_BETA_PPA = np.array([222.0, 192.0, 150.0], dtype=np.float32)  # bare sclera showing through
_PIGMENT = np.array([70.0, 40.0, 24.0], dtype=np.float32)  # clumped pigment (alpha zone)
_NOTCH_CENTRE = 0.7 * math.pi  # 36 degrees from inferior towards temporal
_NOTCH_SIGMA = math.radians(11.0)


@dataclass(frozen=True)
class DiscModel:
    """Geometry of one optic disc in image pixels; see the module docstring for the angles."""

    cx: float
    cy: float
    rx: float  # horizontal semi-axis of the disc margin
    ry: float  # vertical semi-axis (discs are a little taller than wide)
    cdr: float  # vertical cup diameter / vertical disc diameter
    cup_rx: float
    cup_ry: float  # = cdr * ry
    cup_dx: float  # cup centre offset from the disc centre (pixels; < 0 temporal)
    cup_dy: float  # (< 0 superior)
    notch_angle: float | None
    notch_depth: float  # share of the rim the notch removes at its deepest
    ppa_angle: float | None  # centre of the atrophy crescent, or None
    ppa_extent: float  # half-width of the crescent, radians
    ppa_width: float  # widest radial extent beyond the margin, pixels

    def disc_radius(self, theta: np.ndarray) -> np.ndarray:
        c, s = np.cos(theta), np.sin(theta)
        return 1.0 / np.sqrt((c / self.rx) ** 2 + (s / self.ry) ** 2)

    def _ellipse_cup(self, theta: np.ndarray) -> np.ndarray:
        """Distance from the disc centre to the cup ellipse along ``theta`` (ray casting)."""
        c, s = np.cos(theta) / self.cup_rx, np.sin(theta) / self.cup_ry
        ox, oy = -self.cup_dx / self.cup_rx, -self.cup_dy / self.cup_ry
        a = c * c + s * s
        b = 2.0 * (c * ox + s * oy)
        q = ox * ox + oy * oy - 1.0  # < 0: the disc centre lies inside the cup
        return (-b + np.sqrt(np.maximum(b * b - 4.0 * a * q, 0.0))) / (2.0 * a)

    def cup_radius(self, theta: np.ndarray) -> np.ndarray:
        cup = self._ellipse_cup(theta)
        if self.notch_angle is None:
            return cup
        d = np.angle(np.exp(1j * (theta - self.notch_angle)))
        rim = np.maximum(self.disc_radius(theta) - cup, 0.0)
        return cup + self.notch_depth * rim * np.exp(-0.5 * (d / _NOTCH_SIGMA) ** 2)

    def rim_width(self, theta: np.ndarray) -> np.ndarray:
        return self.disc_radius(theta) - self.cup_radius(theta)

    def cup_area(self) -> float:
        """Area of the cup in pixels (numerical integral over the angle)."""
        theta = np.linspace(0.0, 2.0 * np.pi, 720, endpoint=False)
        return float(np.mean(0.5 * self.cup_radius(theta) ** 2) * 2.0 * np.pi)


def disc_model(
    layout: FundusLayout, rng: np.random.Generator, cdr: float, notch: bool, ppa: bool
) -> DiscModel:
    """A disc for ``layout`` (right-eye frame) with the given cup-to-disc ratio and signs.

    The random draws do not depend on ``cdr``, so the same ``rng`` seed with a larger ``cdr``
    gives the same disc with a larger cup.
    """
    if not 0.0 < cdr < 1.0:
        raise ValueError(f"cdr must be in (0, 1), got {cdr}")
    rx = layout.disc_radius
    ry = rx * rng.uniform(1.05, 1.12)
    aspect = rng.uniform(1.0, 1.15)  # cup width / cup height: cups are round to wide
    # The disc's extra height is the budget that keeps the rim I > S > N > T: the cup moves
    # temporally (thinning T) and superiorly (thinning S) by less than that in all.
    budget = ry - rx
    shift_t = rng.uniform(0.3, 0.5) * budget
    shift_s = rng.uniform(0.12, 0.25) * budget
    inferior_loss = rng.random() < 0.5
    notch_depth = float(rng.uniform(0.55, 0.8))
    notch_angle = _NOTCH_CENTRE + float(rng.uniform(-0.05, 0.08)) * math.pi
    ppa_angle = math.pi + float(rng.normal(0.0, 0.2))
    ppa_extent = float(rng.uniform(0.7, 1.5))
    ppa_width = float(rng.uniform(0.18, 0.45)) * rx
    room = min(1.0, 2.5 * (1.0 - cdr))  # offsets shrink with the rim, keeping the cup inside
    cup_ry = cdr * ry
    cup_dx = -shift_t * room
    cup_dy = -shift_s * room
    cup_rx = min(cup_ry * aspect, rx + cup_dx - 0.03 * rx)
    if cdr >= 0.7 and inferior_loss:  # advanced cupping often thins the inferior rim first
        cup_dy = 0.5 * (ry - cup_ry)
    return DiscModel(
        cx=layout.disc_cx,
        cy=layout.disc_cy,
        rx=rx,
        ry=ry,
        cdr=float(cdr),
        cup_rx=cup_rx,
        cup_ry=cup_ry,
        cup_dx=cup_dx,
        cup_dy=cup_dy,
        notch_angle=notch_angle if notch else None,
        notch_depth=notch_depth,
        ppa_angle=ppa_angle if ppa else None,
        ppa_extent=ppa_extent,
        ppa_width=ppa_width,
    )


def _polar(dx: np.ndarray, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r = np.sqrt(dx * dx + dy * dy)
    theta = np.arctan2(np.broadcast_to(dy, r.shape), np.broadcast_to(dx, r.shape))
    return r, theta


def _apply_ppa(
    patch: np.ndarray, model: DiscModel, r: np.ndarray, theta: np.ndarray, rng: np.random.Generator
) -> None:
    """Peripapillary atrophy: a pale crescent (beta zone) with a pigmented fringe (alpha)."""
    assert model.ppa_angle is not None
    d = np.abs(np.angle(np.exp(1j * (theta - model.ppa_angle))))
    along = np.clip(1.0 - d / model.ppa_extent, 0.0, 1.0)
    wobble = 1.0 + 0.25 * smooth_noise(rng, r.shape, 32, model.rx / 3.0)
    width = model.ppa_width * np.sqrt(along) * wobble
    beyond = r - model.disc_radius(theta)  # pixels outside the disc margin
    edge = max(1.0, 0.05 * model.rx)
    beta = np.clip((width - beyond) / edge + 0.5, 0.0, 1.0) * (along > 0)
    mottle = 1.0 + 0.08 * smooth_noise(rng, r.shape, 32, model.rx / 6.0)
    patch += (0.85 * beta)[..., None] * (_BETA_PPA * mottle[..., None] - patch)
    fringe = np.exp(-(((beyond - width) / (0.18 * model.ppa_width + edge)) ** 2)) * (along > 0)
    clumps = np.clip(smooth_noise(rng, r.shape, 64, model.rx / 8.0), 0.0, None)
    patch += (np.clip(0.5 * fringe * clumps, 0.0, 0.6))[..., None] * (_PIGMENT - patch)


def draw_disc(
    img: np.ndarray, layout: FundusLayout, model: DiscModel, rng: np.random.Generator
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
    """Paint atrophy, rim and cup into ``img`` (float RGB, in place).

    Returns the window drawn in and the disc and cup opacity (0..1) inside it.
    """
    reach = model.ry + model.ppa_width + 0.3 * model.rx
    window, dx, dy = box(layout, model.cx, model.cy, reach)
    patch = img[window]
    r, theta = _polar(dx, dy)
    if model.ppa_angle is not None:
        _apply_ppa(patch, model, r, theta, rng)
    disc_r = model.disc_radius(theta)
    edge = max(1.0, 0.06 * model.rx)
    disc = np.clip((disc_r - r) / edge + 0.5, 0.0, 1.0)
    ring = 0.18 * np.exp(-(((r - disc_r) / (0.07 * model.rx + 0.5)) ** 2))  # scleral ring
    patch += ring[..., None] * (_CUP - patch)
    mottle = 1.0 + 0.05 * smooth_noise(rng, r.shape, 64, model.rx / 4.0)
    dim = 1.0 - 0.1 * layout.pigmentation
    rim = _RIM * np.float32(dim) * mottle[..., None]
    patch += disc[..., None] * (rim - patch)
    cup_r = model.cup_radius(theta)
    cup = np.clip((cup_r - r) / max(1.0, 0.1 * model.rx) + 0.5, 0.0, 1.0) * disc
    depth = np.clip(1.0 - r / np.maximum(cup_r, 1e-3), 0.0, 1.0)
    cup_colour = _CUP * np.float32(dim) * (0.97 + 0.05 * depth)[..., None]
    patch += cup[..., None] * (cup_colour - patch)
    img[window] = patch
    return window, disc.astype(np.float32), cup.astype(np.float32)


def bend_vessels(segments: list[VesselSegment], model: DiscModel) -> list[VesselSegment]:
    """Vessels on the disc, with a kink where they climb out of the cup.

    Inside the cup the vessels are turned nasally about the disc centre (more so in big cups,
    whose walls are steep), so each one bends at the cup margin. Segments on the disc are
    split in three first so the bend is smooth at any resolution.
    """
    delta = 0.05 + 0.25 * model.cdr  # radians of nasal turn on the cup floor
    reach = 1.05 * max(model.rx, model.ry)
    ends = np.array([(s.x0, s.y0, s.x1, s.y1) for s in segments], np.float64).reshape(-1, 4)
    near = (
        np.minimum(
            np.hypot(ends[:, 0] - model.cx, ends[:, 1] - model.cy),
            np.hypot(ends[:, 2] - model.cx, ends[:, 3] - model.cy),
        )
        <= reach
    )
    if not near.any():
        return list(segments)
    t = np.linspace(0.0, 1.0, 4)[None, :]
    sel = ends[near]
    xs = sel[:, :1] + t * (sel[:, 2:3] - sel[:, :1]) - model.cx
    ys = sel[:, 1:2] + t * (sel[:, 3:4] - sel[:, 1:2]) - model.cy
    r, theta = np.hypot(xs, ys), np.arctan2(ys, xs)
    cup = model.cup_radius(theta)
    inside = np.clip((cup - r) / (0.25 * cup), 0.0, 1.0)
    turn = delta * inside * inside * (3.0 - 2.0 * inside) * -np.sin(theta)
    xs, ys = model.cx + r * np.cos(theta + turn), model.cy + r * np.sin(theta + turn)
    bent = iter(range(len(sel)))
    out: list[VesselSegment] = []
    for seg, on_disc in zip(segments, near, strict=True):
        if not on_disc:
            out.append(seg)
            continue
        k = next(bent)
        for i in range(3):
            out.append(
                VesselSegment(
                    float(xs[k, i]),
                    float(ys[k, i]),
                    float(xs[k, i + 1]),
                    float(ys[k, i + 1]),
                    seg.width,
                    seg.artery,
                )
            )
    return out
