"""Where lesions may go: inside the field, off the disc, in a quadrant, clear of vessels.

:class:`Placer` draws candidate points and rejects those that break a hard rule (outside the
field, on the disc or its atrophy, wrong quadrant, a caller's region test) or, for the first
tries, a soft one (on a visible vessel, overlapping a lesion already placed). Soft rules keep
small lesions visible and countable; they are dropped rather than fail when space is short.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np

from appliance.synth.disc import DiscModel
from appliance.synth.layout import FundusLayout
from appliance.synth.retinopathy import quadrant_of
from appliance.synth.vessels import VesselSegment

LOGGER = logging.getLogger(__name__)

_SOFT_TRIES = 60
_MAX_TRIES = 2000


class Placer:
    """Samples lesion positions for one eye (pixels, right-eye frame)."""

    def __init__(
        self,
        layout: FundusLayout,
        disc: DiscModel,
        segments: list[VesselSegment],
        rng: np.random.Generator,
    ) -> None:
        self.layout = layout
        self.rng = rng
        self.dd = layout.disc_diameter
        self.segments = segments
        arr = np.array([(s.x0, s.y0, s.x1, s.y1, s.width, s.artery) for s in segments], float)
        arr = arr.reshape(-1, 6)
        self._x0, self._y0 = arr[:, 0], arr[:, 1]
        self._dx, self._dy = arr[:, 2] - arr[:, 0], arr[:, 3] - arr[:, 1]
        self._len2 = np.maximum(self._dx**2 + self._dy**2, 1e-9)
        self._half_w = 0.5 * arr[:, 4]
        self._vein = arr[:, 5] == 0.0
        self._disc = disc
        self._keep_out = max(disc.rx, disc.ry) + disc.ppa_width * (disc.ppa_angle is not None)
        self._keep_out += 0.15 * self.dd
        self._taken: list[tuple[float, float, float]] = []

    # -- tests on a point ----------------------------------------------------------------
    def rho(self, x: float, y: float) -> float:
        """Distance from the field centre in field radii."""
        lay = self.layout
        return math.hypot(x - lay.field_cx, y - lay.field_cy) / lay.field_radius

    def in_frame(self, x: float, y: float, radius: float = 0.0) -> bool:
        """Whether a lesion of ``radius`` at (x, y) shows whole inside the frame (a camera whose
        frame cuts the field circle must not record lesions the photograph does not show)."""
        lay = self.layout
        margin = radius + 0.02 * min(lay.height, lay.width)
        return margin <= x <= lay.width - 1 - margin and margin <= y <= lay.height - 1 - margin

    def from_disc(self, x: float, y: float) -> float:
        """Distance from the disc centre in disc diameters."""
        return math.hypot(x - self.layout.disc_cx, y - self.layout.disc_cy) / self.dd

    def from_fovea(self, x: float, y: float) -> float:
        """Distance from the fovea in disc diameters."""
        return math.hypot(x - self.layout.fovea_cx, y - self.layout.fovea_cy) / self.dd

    def vessel_gap(self, x: float, y: float) -> float:
        """Distance in pixels from (x, y) to the edge of the nearest vessel (< 0: on one)."""
        if not len(self._x0):
            return math.inf
        px, py = x - self._x0, y - self._y0
        t = np.clip((px * self._dx + py * self._dy) / self._len2, 0.0, 1.0)
        d = np.hypot(px - t * self._dx, py - t * self._dy) - self._half_w
        return float(d.min())

    def _crowded(self, x: float, y: float, radius: float) -> bool:
        return any(math.hypot(x - a, y - b) < 1.2 * (radius + r) for a, b, r in self._taken)

    # -- sampling --------------------------------------------------------------------------
    def point(
        self,
        *,
        radius: float,
        quadrant: str | None = None,
        around: tuple[float, float] | None = None,
        spread: float = 0.0,
        ok: Callable[[float, float], bool] | None = None,
        max_rho: float = 0.88,
        on_disc: bool = False,
    ) -> tuple[float, float]:
        """A point for a lesion of ``radius`` pixels; it is remembered for later spacing.

        Candidates are uniform over the field, or normal with ``spread`` pixels ``around`` a
        centre. Raises RuntimeError when no point obeys the hard rules (never expected).
        """
        lay, rng = self.layout, self.rng
        for attempt in range(_MAX_TRIES):
            if around is None or attempt >= _MAX_TRIES // 2:
                r = max_rho * lay.field_radius * math.sqrt(rng.random())
                phi = rng.uniform(0.0, 2.0 * math.pi)
                x, y = lay.field_cx + r * math.cos(phi), lay.field_cy + r * math.sin(phi)
            else:
                x = around[0] + rng.normal(0.0, spread)
                y = around[1] + rng.normal(0.0, spread)
            if self.rho(x, y) > max_rho or not self.in_frame(x, y, radius):
                continue
            if not on_disc and self.from_disc(x, y) * self.dd < self._keep_out + radius:
                continue
            if quadrant is not None and quadrant_of(lay, x, y) != quadrant:
                continue
            if ok is not None and not ok(x, y):
                continue
            if attempt < _SOFT_TRIES and (
                self.vessel_gap(x, y) < 0.5 * radius + 0.5 or self._crowded(x, y, radius)
            ):
                continue
            self._taken.append((x, y, radius))
            return x, y
        raise RuntimeError("no room for a lesion under these constraints")

    def vein_site(
        self, quadrant: str, min_width_dd: float, near_dd: tuple[float, float]
    ) -> tuple[float, float, float] | None:
        """A point on a vein of at least ``min_width_dd`` in ``quadrant``, between ``near_dd``
        disc diameters from the disc, with the vein's direction; None when there is none."""
        lay = self.layout
        mx, my = self._x0 + 0.5 * self._dx, self._y0 + 0.5 * self._dy
        dist = np.hypot(mx - lay.disc_cx, my - lay.disc_cy) / self.dd
        rho = np.hypot(mx - lay.field_cx, my - lay.field_cy) / lay.field_radius
        good = (
            self._vein
            & (2.0 * self._half_w >= min_width_dd * self.dd)
            & (dist >= near_dd[0])
            & (dist <= near_dd[1])
            & (rho < 0.8)
            & (mx >= 0.05 * lay.width)
            & (mx <= 0.95 * lay.width)
            & (my >= 0.05 * lay.height)
            & (my <= 0.95 * lay.height)
        )
        candidates = [
            int(i) for i in np.flatnonzero(good) if quadrant_of(lay, mx[i], my[i]) == quadrant
        ]
        if not candidates:
            return None
        i = candidates[int(self.rng.integers(len(candidates)))]
        return float(mx[i]), float(my[i]), float(math.atan2(self._dy[i], self._dx[i]))
