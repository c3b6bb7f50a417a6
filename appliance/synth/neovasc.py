"""Vessel-shaped signs of severe and proliferative retinopathy, as vessel segments.

Venous beading changes the calibre of existing veins; intraretinal microvascular abnormalities
(IRMA) and new vessels at the disc (NVD) or elsewhere (NVE) are extra, finer and far more
tortuous vessels. All come back as :class:`~appliance.synth.vessels.VesselSegment` lists, so
they are rasterised exactly like the normal tree. Lengths are given in disc diameters (``dd``
is the disc diameter in pixels).
"""

from __future__ import annotations

import logging
import math

import numpy as np

from appliance.synth.vessels import VesselSegment

LOGGER = logging.getLogger(__name__)


def tortuous_path(
    rng: np.random.Generator,
    start: tuple[float, float],
    heading: float,
    *,
    length: float,
    step: float,
    curl: float,
    width: float,
    branch_p: float = 0.0,
    loop: bool = False,
) -> list[VesselSegment]:
    """A fine vessel that wanders with strong, persistent curvature (pixels and radians).

    ``curl`` is the standard deviation of the change of curvature per step; ``branch_p`` the
    chance per step to sprout a shorter side branch; ``loop`` makes the end turn back on
    itself, as new vessels often do.
    """
    x, y = start
    out: list[VesselSegment] = []
    bend = 0.0
    steps = max(2, int(length / step))
    loop_turn = rng.choice((-1.0, 1.0)) * 3.4 / max(1, int(0.5 * steps))
    for i in range(steps):
        bend = 0.75 * bend + rng.normal(0.0, curl)
        heading += bend + (loop_turn if loop and i > 0.5 * steps else 0.0)
        nx, ny = x + step * math.cos(heading), y + step * math.sin(heading)
        out.append(VesselSegment(x, y, nx, ny, width, False))
        x, y = nx, ny
        if branch_p > 0 and rng.random() < branch_p and i < steps - 3:
            side = heading + rng.choice((-1.0, 1.0)) * rng.uniform(0.5, 1.2)
            out += tortuous_path(
                rng,
                (x, y),
                side,
                length=(steps - i) * step * rng.uniform(0.3, 0.6),
                step=step,
                curl=curl,
                width=0.8 * width,
                loop=bool(rng.random() < 0.4),
            )
    return out


def irma_segments(
    rng: np.random.Generator, start: tuple[float, float], heading: float, dd: float
) -> list[VesselSegment]:
    """A tuft of 2-4 short, thin, tortuous intraretinal shunt vessels."""
    out: list[VesselSegment] = []
    for _ in range(int(rng.integers(2, 5))):
        x = start[0] + rng.normal(0.0, 0.06) * dd
        y = start[1] + rng.normal(0.0, 0.06) * dd
        out += tortuous_path(
            rng,
            (x, y),
            heading + rng.normal(0.0, 0.6),
            length=rng.uniform(0.25, 0.55) * dd,
            step=0.025 * dd,
            curl=0.09,
            width=rng.uniform(0.016, 0.024) * dd,
        )
    return out


def nvd_segments(
    rng: np.random.Generator, centre: tuple[float, float], disc_radius: float, dd: float
) -> list[VesselSegment]:
    """A frond of fine new vessels on the disc, spilling up to about one DD beyond it."""
    out: list[VesselSegment] = []
    for _ in range(int(rng.integers(14, 28))):
        phi = rng.uniform(0.0, 2.0 * np.pi)
        r0 = disc_radius * math.sqrt(rng.uniform(0.0, 0.8))
        start = (centre[0] + r0 * math.cos(phi), centre[1] + r0 * math.sin(phi))
        out += tortuous_path(
            rng,
            start,
            phi + rng.normal(0.0, 0.4),
            length=rng.uniform(0.3, 0.9) * dd,
            step=0.025 * dd,
            curl=0.03,
            width=rng.uniform(0.008, 0.014) * dd,
            branch_p=0.1,
            loop=bool(rng.random() < 0.6),
        )
    return out


def nve_segments(
    rng: np.random.Generator, centre: tuple[float, float], facing: float, dd: float
) -> list[VesselSegment]:
    """A sea-fan of fine looping new vessels beside a vein, fanning out towards ``facing``."""
    out: list[VesselSegment] = []
    for _ in range(int(rng.integers(6, 12))):
        start = (centre[0] + rng.normal(0, 0.05) * dd, centre[1] + rng.normal(0, 0.05) * dd)
        out += tortuous_path(
            rng,
            start,
            facing + rng.uniform(-1.2, 1.2),
            length=rng.uniform(0.25, 0.6) * dd,
            step=0.025 * dd,
            curl=0.04,
            width=rng.uniform(0.01, 0.016) * dd,
            branch_p=0.1,
            loop=bool(rng.random() < 0.6),
        )
    return out


def bead_veins(
    segments: list[VesselSegment], chosen: np.ndarray, dd: float, rng: np.random.Generator
) -> tuple[list[VesselSegment], list[VesselSegment]]:
    """Veins with sausage-like calibre changes on the segments flagged in ``chosen``.

    Returns the whole tree (beaded segments split in three, widths modulated along the vessel)
    and the beaded pieces alone. The beads repeat every 0.22-0.35 DD and swell the vein by up
    to 60 % (narrowing it by as much in between).
    """
    period = rng.uniform(0.22, 0.35) * dd
    amp = rng.uniform(0.45, 0.6)
    phase = rng.uniform(0.0, 2.0 * np.pi)
    out: list[VesselSegment] = []
    beaded: list[VesselSegment] = []
    travelled = 0.0
    last_end: tuple[float, float] | None = None
    for seg, bead in zip(segments, chosen, strict=True):
        if not bead:
            out.append(seg)
            continue
        if last_end != (seg.x0, seg.y0):
            travelled = 0.0
        seg_len = math.hypot(seg.x1 - seg.x0, seg.y1 - seg.y0)
        for i in range(3):
            t0, t1 = i / 3.0, (i + 1) / 3.0
            s = travelled + (t0 + t1) / 2.0 * seg_len
            factor = 1.0 + amp * math.sin(2.0 * np.pi * s / period + phase)
            piece = VesselSegment(
                seg.x0 + t0 * (seg.x1 - seg.x0),
                seg.y0 + t0 * (seg.y1 - seg.y0),
                seg.x0 + t1 * (seg.x1 - seg.x0),
                seg.y0 + t1 * (seg.y1 - seg.y0),
                seg.width * factor,
                False,
            )
            out.append(piece)
            beaded.append(piece)
        travelled += seg_len
        last_end = (seg.x1, seg.y1)
    return out, beaded
