"""Where the parts of one synthetic fundus photograph lie: field, optic disc and fovea.

Orientation follows a standard fundus photograph: the optic disc lies nasally, which is the
viewer's right for a right eye ("R") and the viewer's left for a left eye ("L"); the fovea
lies about 2.5 disc diameters temporal to the disc, near the centre of the field.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

LOGGER = logging.getLogger(__name__)


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

    @property
    def disc_diameter(self) -> float:
        """The disc diameter (DD) in pixels, the unit lesion sizes and distances are given in."""
        return 2.0 * self.disc_radius


def check_args(size: tuple[int, int], eye: str, pigmentation: float) -> None:
    if eye not in ("R", "L"):
        raise ValueError(f"eye must be 'R' or 'L', got {eye!r}")
    if not 0.0 <= pigmentation <= 1.0:
        raise ValueError(f"pigmentation must be in [0, 1], got {pigmentation}")
    if len(size) != 2 or min(size) < 16:
        raise ValueError(f"size must be (height, width) with both >= 16, got {size}")


def streams(seed: int) -> list[np.random.Generator]:
    """Independent random streams for layout, texture, vessels and noise."""
    return np.random.default_rng(seed).spawn(4)


def fundus_layout(
    seed: int, size: tuple[int, int] = (1024, 1024), eye: str = "R", pigmentation: float = 0.5
) -> FundusLayout:
    """The geometry :func:`make_fundus` draws for these arguments."""
    check_args(size, eye, pigmentation)
    rng = streams(seed)[0]
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


def field_layout(
    rng: np.random.Generator,
    size: tuple[int, int],
    *,
    field: str,
    field_deg: float,
    field_fill: float,
    pigmentation: float,
    cup_ratio: float,
) -> FundusLayout:
    """A right-eye layout for a camera with a ``field_deg`` field, centred on macula or disc.

    ``field_fill`` is the field diameter over the shorter frame side; above 1 the frame cuts
    the circle (at top and bottom on a wide sensor, on every side for a crop). The optic disc
    subtends about 5.5 degrees, so its size relative to the field follows from ``field_deg``.
    Left eyes are drawn as right eyes and mirrored (see :func:`mirrored`).
    """
    if field not in ("macula", "disc"):
        raise ValueError(f"field must be 'macula' or 'disc', got {field!r}")
    check_args(size, "R", pigmentation)
    height, width = int(size[0]), int(size[1])
    fill = field_fill * rng.uniform(0.985, 1.015)
    if field_fill < 1.0:  # a whole circle stays inside the frame
        fill = min(0.99, fill)
    radius = 0.5 * min(height, width) * fill
    cx = (width - 1) / 2.0 + rng.uniform(-0.01, 0.01) * radius
    cy = (height - 1) / 2.0 + rng.uniform(-0.01, 0.01) * radius
    disc_r = radius * rng.uniform(0.115, 0.13) * 45.0 / field_deg
    dd = 2.0 * disc_r
    disc_dist = 2.5 * dd * rng.uniform(0.93, 1.07)
    drop = disc_dist * rng.uniform(0.05, 0.15)  # the fovea lies a little below the disc
    if field == "macula":
        fovea_x = cx - rng.uniform(0.0, 0.05) * radius
        fovea_y = cy + rng.uniform(-0.02, 0.05) * radius
        disc_x, disc_y = fovea_x + disc_dist, fovea_y - drop
    else:
        disc_x = cx + rng.uniform(-0.04, 0.08) * radius
        disc_y = cy + rng.uniform(-0.05, 0.05) * radius
        fovea_x, fovea_y = disc_x - disc_dist, disc_y + drop
    return FundusLayout(
        height=height,
        width=width,
        eye="R",
        pigmentation=float(pigmentation),
        field_cx=float(cx),
        field_cy=float(cy),
        field_radius=float(radius),
        disc_cx=float(disc_x),
        disc_cy=float(disc_y),
        disc_radius=float(disc_r),
        cup_ratio=float(cup_ratio),
        fovea_cx=float(fovea_x),
        fovea_cy=float(fovea_y),
    )


def mirrored(layout: FundusLayout) -> FundusLayout:
    """The same layout left-right mirrored, with the other eye's label."""
    flip = float(layout.width - 1)
    return replace(
        layout,
        eye="L" if layout.eye == "R" else "R",
        field_cx=flip - layout.field_cx,
        disc_cx=flip - layout.disc_cx,
        fovea_cx=flip - layout.fovea_cx,
    )
