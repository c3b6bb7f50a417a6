"""The macula as surfaces: layer boundaries and pathology as pure functions of position (mm).

Coordinates follow the en-face view of a fundus photograph: ``x`` (along a B-scan, the A-scan
index) increases to the viewer's right, ``y`` (across B-scans, the frame index) increases
downwards (frame 0 is superior); both in mm from the scan centre. Depth ``z`` is in µm from the
top of the frame, increasing downwards. For a right eye (OD) nasal is +x (the disc lies to the
right of the fovea), for a left eye (OS) nasal is -x.

:func:`surfaces` gives every boundary of :data:`LAYERS` at given (x, y) positions; the total
retinal thickness (ILM to the outer boundary of the RPE, the Cirrus convention) is a smooth
function of the case's fields, so the labels (central subfield thickness, centre-involving
fluid) are computed from it on a fine grid, independent of how the volume is sampled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

LOGGER = logging.getLogger(__name__)

# Layers from the vitreous down, with their display reflectivity (0-1, before speckle, fall-off
# and the signal level). A layer of zero thickness simply does not show.
LAYERS: tuple[tuple[str, float], ...] = (
    ("vitreous", 0.04),
    ("rnfl", 0.66),  # retinal nerve fibre layer (includes the bright ILM line)
    ("gcl_ipl", 0.50),  # ganglion cell + inner plexiform layers
    ("inl", 0.24),  # inner nuclear layer
    ("opl", 0.55),  # outer plexiform layer
    ("onl", 0.16),  # outer nuclear layer with Henle fibres
    ("myoid", 0.30),  # external limiting membrane to ellipsoid zone
    ("ez", 0.86),  # ellipsoid zone
    ("os", 0.32),  # photoreceptor outer segments
    ("iz", 0.60),  # interdigitation zone
    ("srf", 0.03),  # subretinal fluid (zero thickness without it)
    ("rpe", 0.97),  # retinal pigment epithelium
    ("drusen", 0.42),  # drusen material between RPE and Bruch's membrane
    ("choroid", 0.45),
    ("sclera", 0.14),
)
LAYER_NAMES = tuple(name for name, _ in LAYERS)
FLUID_REFLECTIVITY = 0.03  # intraretinal cysts and subretinal fluid

# Fixed thicknesses (µm) of the outer retina.
MYOID_UM = 20.0
EZ_UM = 12.0
IZ_UM = 8.0
RPE_UM = 24.0
ILM_UM = 10.0  # the inner retina never gets thinner than this (ILM + a trace of RNFL)


@dataclass(frozen=True)
class Cyst:
    """An intraretinal cyst: an ellipsoid, round en face, in the INL or ONL."""

    x: float  # mm
    y: float  # mm
    radius_mm: float  # en-face radius
    half_height_um: float  # axial half-height
    layer: str  # "inl" or "onl"

    @property
    def bump_um(self) -> float:
        """How much the host layer swells at the cyst's centre (room for the cyst + tissue)."""
        return 2.0 * self.half_height_um + 15.0


@dataclass(frozen=True)
class Bump:
    """A smooth dome: subretinal fluid (``power`` 1.5 in a disc) or a druse (Gaussian)."""

    x: float
    y: float
    radius_mm: float
    height_um: float


@dataclass(frozen=True)
class Anatomy:
    """Everything about one eye's macula the surfaces need (drawn from a case's seed)."""

    eye: str
    fovea: tuple[float, float]  # mm
    pit_width_mm: float
    inner_scale: float
    onl_peak_um: float
    os_um: float
    thickening_um: float  # diffuse, centred on the fovea
    cysts: tuple[Cyst, ...]
    srf: Bump | None
    drusen: tuple[Bump, ...]
    bm_depth_um: float  # Bruch's membrane depth at the scan centre (before placement shift)
    curvature_um_per_mm2: float
    tilt_um_per_mm: tuple[float, float]
    choroid_um: float


def _gauss(d2: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-d2 / (2.0 * sigma * sigma))


def srf_height(anat: Anatomy, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Subretinal fluid height (µm) at (x, y)."""
    if anat.srf is None:
        return np.zeros(np.broadcast(x, y).shape)
    s = anat.srf
    d2 = ((x - s.x) ** 2 + (y - s.y) ** 2) / (s.radius_mm**2)
    return s.height_um * np.clip(1.0 - d2, 0.0, None) ** 1.5


def drusen_height(anat: Anatomy, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """RPE elevation above Bruch's membrane (µm) at (x, y)."""
    out = np.zeros(np.broadcast(x, y).shape)
    for d in anat.drusen:
        out = out + d.height_um * _gauss((x - d.x) ** 2 + (y - d.y) ** 2, d.radius_mm / 2.0)
    return out


def _swelling(anat: Anatomy, x: np.ndarray, y: np.ndarray, layer: str) -> np.ndarray:
    out = np.zeros(np.broadcast(x, y).shape)
    for c in anat.cysts:
        if c.layer == layer:
            out = out + c.bump_um * _gauss((x - c.x) ** 2 + (y - c.y) ** 2, 1.5 * c.radius_mm)
    return out


def layer_thicknesses(anat: Anatomy, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Thickness (µm) of each retinal layer from the RNFL to the RPE, plus SRF and drusen."""
    fx, fy = anat.fovea
    r = np.sqrt((x - fx) ** 2 + (y - fy) ** 2)
    nasal_mm = (x - fx) if anat.eye == "R" else (fx - x)
    far = 95.0 + 75.0 * np.exp(-(((r - 1.2) / 1.1) ** 2))
    inner = ILM_UM + anat.inner_scale * far * (1.0 - np.exp(-((r / anat.pit_width_mm) ** 2)))
    rnfl_share = 0.10 + 0.12 * np.minimum(r, 3.0) / 3.0 + 0.06 * np.clip(nasal_mm / 3.0, 0, 1)
    diffuse = anat.thickening_um * np.exp(-((r / 1.6) ** 2))
    rest = inner * (1.0 - rnfl_share)
    onl = 70.0 + anat.onl_peak_um * np.exp(-((r / 0.7) ** 2))
    return {
        "rnfl": inner * rnfl_share,
        "gcl_ipl": rest * 0.52,
        "inl": rest * 0.26 + 0.5 * diffuse + _swelling(anat, x, y, "inl"),
        "opl": rest * 0.22,
        "onl": onl + 0.5 * diffuse + _swelling(anat, x, y, "onl"),
        "myoid": np.full_like(r, MYOID_UM),
        "ez": np.full_like(r, EZ_UM),
        "os": anat.os_um + 10.0 * np.exp(-((r / 0.6) ** 2)),
        "iz": np.full_like(r, IZ_UM),
        "srf": srf_height(anat, x, y),
        "rpe": np.full_like(r, RPE_UM),
        "drusen": drusen_height(anat, x, y),
    }


def thickness_um(anat: Anatomy, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Retinal thickness (µm), ILM to the outer boundary of the RPE, at (x, y)."""
    t = layer_thicknesses(anat, x, y)
    names = LAYER_NAMES[1 : LAYER_NAMES.index("rpe") + 1]
    return np.asarray(sum(t[name] for name in names))


def surfaces(anat: Anatomy, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Depth (µm) of the top of every layer of :data:`LAYERS` after the vitreous, shape (14, ...).

    Row ``k`` is where layer ``k + 1`` starts: row 0 is the ILM, row 10 the top of the RPE,
    row 11 its outer boundary, row 12 Bruch's membrane (top of the choroid), row 13 the sclera.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    t = layer_thicknesses(anat, x, y)
    tx, ty = anat.tilt_um_per_mm
    bm = anat.bm_depth_um - anat.curvature_um_per_mm2 * (x * x + y * y) + tx * x + ty * y
    bm = np.broadcast_to(bm, np.broadcast(x, y).shape)
    retinal = LAYER_NAMES[1 : LAYER_NAMES.index("drusen") + 1]
    tops = [bm]
    for name in reversed(retinal):
        tops.append(tops[-1] - t[name])
    out = np.stack(tops[::-1] + [bm + anat.choroid_um])
    return out


def cyst_mask(anat: Anatomy, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Which points (x, y mm; depth z µm, before any placement shift) lie in a cyst."""
    mask = np.zeros(np.broadcast(x, y, z).shape, dtype=bool)
    index = {name: k - 1 for k, name in enumerate(LAYER_NAMES)}
    for c in anat.cysts:
        centre = surfaces(anat, np.array(c.x), np.array(c.y))
        k = index[c.layer]
        depth = 0.5 * (centre[k] + centre[k + 1])
        inside = ((x - c.x) ** 2 + (y - c.y) ** 2) / c.radius_mm**2 + (
            (z - depth) / c.half_height_um
        ) ** 2
        mask |= inside < 1.0
    return mask


def fluid_footprint(anat: Anatomy, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Where, en face, there is intraretinal or subretinal fluid at (x, y)."""
    out = srf_height(anat, x, y) > 0.0
    for c in anat.cysts:
        out = out | (((x - c.x) ** 2 + (y - c.y) ** 2) < c.radius_mm**2)
    return np.asarray(out)


def vessel_shadow(
    eye: str, fovea: tuple[float, float], rng: np.random.Generator, x: np.ndarray, y: np.ndarray
) -> np.ndarray:
    """Transmission (0-1) under the retinal vessels at (x, y): arcades from the disc side."""
    fx, fy = fovea
    side = 1.0 if eye == "R" else -1.0
    disc = np.array([fx + side * 4.0, fy - 0.3])
    shadow = np.ones(np.broadcast(x, y).shape)
    for k in range(int(rng.integers(6, 10))):
        up = 1.0 if k % 2 == 0 else -1.0
        start_angle = rng.uniform(0.35, 1.3) * up  # radians off the horizontal, towards fovea
        bend = rng.uniform(0.15, 0.45) * -up
        width = rng.uniform(0.04, 0.09)  # mm
        depth = rng.uniform(0.35, 0.65)  # transmission under it
        t = np.linspace(0.0, 9.0, 200)
        angle = np.pi + start_angle if side > 0 else -start_angle
        theta = angle + (bend * t / 3.0) * (1 if side > 0 else -1)
        step = np.stack([np.cos(theta), np.sin(theta)], axis=1) * (t[1] - t[0])
        path = disc + np.cumsum(step, axis=0)
        d2 = np.full(shadow.shape, np.inf)
        for px, py in path[::2]:
            d2 = np.minimum(d2, (x - px) ** 2 + (y - py) ** 2)
        profile = np.exp(-d2 / (2 * (width / 2.0) ** 2))
        shadow = shadow * (1.0 - (1.0 - depth) * profile)
    faz = np.sqrt((x - fx) ** 2 + (y - fy) ** 2) < 0.3  # the foveal avascular zone
    return np.where(faz, 1.0, shadow)
