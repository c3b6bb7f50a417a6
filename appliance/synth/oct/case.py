"""One synthetic macular OCT volume: every parameter (:class:`OctCase`) and the labels it implies.

:func:`draw_oct_case` samples a case from :data:`OCT_PREVALENCE`; :func:`anatomy_of` turns its
seed and fields into the surfaces of :mod:`appliance.synth.oct.anatomy`;
:func:`appliance.synth.oct.render.render_oct` draws the volume. Everything random comes from
``case.seed``, so the volume and its truth are pure functions of the case.

Labels (all derived from the fields, through the anatomy on a fine 10 µm en-face grid):

* ``cst_um``: central subfield thickness, mean ILM-RPE thickness within 0.5 mm of the fovea.
* ``centre_fluid``: intraretinal cysts or subretinal fluid inside that 1 mm circle.
* ``ci_dme``: centre-involving DME = ``cst_um >= CI_DME_CST_UM`` or ``centre_fluid``.
* ``quality``: ``good`` / ``usable`` / ``reject`` from the acquisition defect and its strength
  (:data:`OCT_DEFECT_LEVELS`); ``gradable`` = quality != ``reject``.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass

import numpy as np

from appliance.synth.gradability import DefectLevels
from appliance.synth.oct.anatomy import Anatomy, Bump, Cyst, fluid_footprint, thickness_um

LOGGER = logging.getLogger(__name__)

# Centre-involving DME threshold on the ILM-RPE central subfield thickness (µm). Devices differ
# (DRCR.net: Cirrus 290 F / 305 M, Spectralis 305 F / 320 M with ILM-BM); the synthetic eyes
# use one device-neutral value. The appliance's own threshold will come from the rule file.
CI_DME_CST_UM = 300.0


@dataclass(frozen=True)
class OctGeometry:
    """Volume shape (frames, depth rows, A-scans) and its physical extent."""

    frames: int
    rows: int
    ascans: int
    width_mm: float = 6.0  # along a B-scan
    height_mm: float = 6.0  # across B-scans (first to last frame)
    depth_mm: float = 1.92  # of the whole frame

    def __post_init__(self) -> None:
        if self.frames < 3 or self.rows < 64 or self.ascans < 64:
            raise ValueError(f"volume too small: {self.frames}x{self.rows}x{self.ascans}")
        if min(self.width_mm, self.height_mm, self.depth_mm) <= 0:
            raise ValueError("extents must be > 0")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.frames, self.rows, self.ascans)

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """(between B-scans, axial per row, lateral per A-scan), mm."""
        return (
            self.height_mm / (self.frames - 1),
            self.depth_mm / self.rows,
            self.width_mm / (self.ascans - 1),
        )

    def grid_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """x (1, A) and y (F, 1) of every A-scan, mm from the scan centre."""
        x = np.linspace(-self.width_mm / 2, self.width_mm / 2, self.ascans)[None, :]
        y = np.linspace(-self.height_mm / 2, self.height_mm / 2, self.frames)[:, None]
        return x, y


# Named scan patterns. Axial ~3.9 µm, lateral ~11.7 µm, B-scan spacing 125 µm for spectralis49.
GEOMETRIES: dict[str, OctGeometry] = {
    "spectralis49": OctGeometry(49, 496, 512, depth_mm=1.92),
    "cirrus128": OctGeometry(128, 1024, 512, depth_mm=2.0),
    "compact": OctGeometry(49, 248, 256, depth_mm=1.92),
    "small": OctGeometry(25, 256, 256, depth_mm=1.92),
}


# What each strength means (appliance/synth/oct/render.py, docs/synth/oct.md): low_signal
# scales the signal by 1 - 0.85 s; clipped puts the ILM of 0.5 s of the A-scans above the
# frame; decentred moves the fovea 1.5 s mm; motion makes one axial jump of 80 s µm (and 1-3
# smaller ones) between B-scans; blink blanks 40 s % of the B-scans.
OCT_DEFECT_LEVELS: dict[str, DefectLevels] = {
    "low_signal": DefectLevels(usable=0.3, reject=0.6),
    "clipped": DefectLevels(usable=0.05, reject=0.2),
    "decentred": DefectLevels(usable=0.2, reject=0.45),
    "motion": DefectLevels(usable=0.2, reject=0.45),
    "blink": DefectLevels(usable=0.05, reject=0.15),
}
OCT_DEFECTS = tuple(OCT_DEFECT_LEVELS)

OCT_PREVALENCE: dict[str, dict[str, float]] = {
    "pathology": {"normal": 0.45, "thickening": 0.12, "cysts": 0.25, "srf": 0.10, "both": 0.08},
    "fluid_in_centre": {"yes": 0.6},
    "drusen": {"yes": 0.15},
    "eye": {"R": 0.5, "L": 0.5},
    "defect": {"any": 0.35},  # split evenly over the five kinds
    "defect_quality": {"good": 0.15, "usable": 0.35, "reject": 0.50},
}


def oct_quality_of(defect: str | None, strength: float) -> str:
    """``good``, ``usable`` or ``reject`` for a volume with ``defect`` at ``strength``."""
    if defect is None:
        return "good"
    if defect not in OCT_DEFECT_LEVELS:
        raise ValueError(f"defect must be one of {OCT_DEFECTS} or None, got {defect!r}")
    return OCT_DEFECT_LEVELS[defect].quality(strength)


def strength_band(defect: str, quality: str) -> tuple[float, float]:
    """The strengths [low, high) that give ``quality`` for ``defect``."""
    levels = OCT_DEFECT_LEVELS[defect]
    return {
        "good": (0.0, levels.usable),
        "usable": (levels.usable, levels.reject),
        "reject": (levels.reject, min(1.0, levels.reject * 2.0)),
    }[quality]


@dataclass(frozen=True)
class OctCase:
    """Every parameter of one synthetic OCT volume; see the module docstring for labels."""

    seed: int
    geometry: OctGeometry
    eye: str  # "R" or "L"
    thickening_um: float  # diffuse, centred on the fovea (0 = none)
    cysts: int  # number of intraretinal cysts
    srf_um: float  # subretinal fluid dome height (0 = none)
    fluid_in_centre: bool  # cysts / SRF placed in the central subfield (else outside it)
    drusen: int
    defect: str | None
    defect_strength: float

    def __post_init__(self) -> None:
        checks = [
            (self.eye in ("R", "L"), f"eye must be 'R' or 'L', got {self.eye!r}"),
            (0.0 <= self.thickening_um <= 250.0, "thickening_um must be in [0, 250]"),
            (0 <= self.cysts <= 12, "cysts must be in 0..12"),
            (0.0 <= self.srf_um <= 300.0, "srf_um must be in [0, 300]"),
            (0 <= self.drusen <= 12, "drusen must be in 0..12"),
            (self.defect is None or self.defect in OCT_DEFECTS, f"unknown defect {self.defect!r}"),
            (0.0 <= self.defect_strength <= 1.0, "defect_strength must be in [0, 1]"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def quality(self) -> str:
        return oct_quality_of(self.defect, self.defect_strength)

    @property
    def gradable(self) -> bool:
        return self.quality != "reject"

    @property
    def fovea_mm(self) -> tuple[float, float]:
        return anatomy_of(self).fovea

    @property
    def cst_um(self) -> float:
        return _labels(self)[0]

    @property
    def centre_fluid(self) -> bool:
        return _labels(self)[1]

    @property
    def ci_dme(self) -> bool:
        return self.cst_um >= CI_DME_CST_UM or self.centre_fluid


def _pick(rng: np.random.Generator, table: dict[str, float]) -> str:
    keys = list(table)
    p = np.array([table[k] for k in keys])
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def healthy_case(seed: int, geometry: OctGeometry, eye: str = "R") -> OctCase:
    """A healthy volume with no acquisition defect: the base that the contact sheet and the
    tests vary with :func:`dataclasses.replace`."""
    return OctCase(
        seed=seed, geometry=geometry, eye=eye, thickening_um=0.0, cysts=0, srf_um=0.0,
        fluid_in_centre=False, drusen=0, defect=None, defect_strength=0.0,
    )  # fmt: skip


def draw_oct_case(rng: np.random.Generator, geometry: OctGeometry) -> OctCase:
    """A case from the mix :data:`OCT_PREVALENCE`."""
    mix = OCT_PREVALENCE
    seed = int(rng.integers(0, 2**31 - 1))
    kind = _pick(rng, mix["pathology"])
    thickening = 0.0
    if kind == "thickening":
        thickening = float(rng.uniform(20.0, 160.0))
    elif kind != "normal" and rng.random() < 0.5:
        thickening = float(rng.uniform(0.0, 60.0))
    cysts = int(rng.integers(1, 9)) if kind in ("cysts", "both") else 0
    srf = float(rng.uniform(40.0, 220.0)) if kind in ("srf", "both") else 0.0
    centre = kind in ("cysts", "srf", "both") and rng.random() < mix["fluid_in_centre"]["yes"]
    drusen = int(rng.integers(1, 8)) if rng.random() < mix["drusen"]["yes"] else 0
    defect: str | None = None
    strength = 0.0
    if rng.random() < mix["defect"]["any"]:
        defect = str(rng.choice(OCT_DEFECTS))
        low, high = strength_band(defect, _pick(rng, mix["defect_quality"]))
        strength = round(float(rng.uniform(low, high - 0.001)), 3)
    return OctCase(
        seed=seed,
        geometry=geometry,
        eye=_pick(rng, mix["eye"]),
        thickening_um=round(thickening, 1),
        cysts=cysts,
        srf_um=round(srf, 1),
        fluid_in_centre=bool(centre),
        drusen=drusen,
        defect=defect,
        defect_strength=float(strength),
    )


def _spot(
    rng: np.random.Generator, fovea: tuple[float, float], lo: float, hi: float
) -> tuple[float, float]:
    """A point between ``lo`` and ``hi`` mm from the fovea (uniform over the annulus)."""
    r = math.sqrt(rng.uniform(lo * lo, hi * hi))
    a = rng.uniform(0.0, 2.0 * math.pi)
    return fovea[0] + r * math.cos(a), fovea[1] + r * math.sin(a)


@functools.lru_cache(maxsize=256)
def anatomy_of(case: OctCase) -> Anatomy:
    """The case's macula: random details from the first child of ``case.seed``."""
    rng = np.random.default_rng(np.random.SeedSequence(case.seed).spawn(1)[0])
    g = case.geometry
    jitter = rng.normal(0.0, 0.04, size=2)
    offset = np.zeros(2)
    if case.defect == "decentred":
        a = rng.uniform(0.0, 2.0 * math.pi)
        offset = 1.5 * case.defect_strength * np.array([math.cos(a), math.sin(a)])
    fovea = (float(jitter[0] + offset[0]), float(jitter[1] + offset[1]))
    cysts: list[Cyst] = []
    for k in range(case.cysts):
        if case.fluid_in_centre and k == 0:
            x, y = _spot(rng, fovea, 0.0, 0.3)
        elif case.fluid_in_centre:
            x, y = _spot(rng, fovea, 0.0, 1.2)
        else:
            x, y = _spot(rng, fovea, 0.85, 2.3)
        # a cyst at the fovea is at least 160 µm across, so B-scans 125 µm apart see it
        radius = float(rng.uniform(0.08 if case.fluid_in_centre and k == 0 else 0.05, 0.16))
        r = math.hypot(x - fovea[0], y - fovea[1])
        layer = "onl" if r < 0.6 or rng.random() < 0.5 else "inl"
        cysts.append(Cyst(x, y, radius, float(rng.uniform(25.0, 70.0)), layer))
    srf: Bump | None = None
    if case.srf_um > 0:
        radius = float(rng.uniform(0.6, 1.4))
        if case.fluid_in_centre:
            x, y = _spot(rng, fovea, 0.0, 0.3)
        else:
            x, y = _spot(rng, fovea, 0.6 + radius, 0.9 + radius)
        srf = Bump(x, y, radius, case.srf_um)
    drusen = tuple(
        Bump(
            *_spot(rng, fovea, 0.0, 2.5), float(rng.uniform(0.08, 0.2)), float(rng.uniform(25, 80))
        )
        for _ in range(case.drusen)
    )
    return Anatomy(
        eye=case.eye,
        fovea=fovea,
        pit_width_mm=float(rng.uniform(0.42, 0.6)),
        inner_scale=float(rng.uniform(0.88, 1.08)),
        onl_peak_um=float(rng.uniform(30.0, 55.0)),
        os_um=float(rng.uniform(25.0, 35.0)),
        thickening_um=case.thickening_um,
        cysts=tuple(cysts),
        srf=srf,
        drusen=drusen,
        bm_depth_um=float(rng.uniform(0.55, 0.65)) * g.depth_mm * 1000.0,
        curvature_um_per_mm2=float(rng.uniform(3.0, 12.0)),
        tilt_um_per_mm=(float(rng.uniform(-15, 15)), float(rng.uniform(-10, 10))),
        choroid_um=float(rng.uniform(180.0, 320.0)),
    )


def central_disc(
    fovea: tuple[float, float], radius_mm: float = 0.5, step_mm: float = 0.01
) -> tuple[np.ndarray, np.ndarray]:
    """Points of a fine grid (``step_mm``) inside the disc of ``radius_mm`` around ``fovea``."""
    n = int(math.ceil(radius_mm / step_mm))
    offsets = (np.arange(-n, n + 1) + 0.0) * step_mm
    dx, dy = np.meshgrid(offsets, offsets)
    inside = dx * dx + dy * dy <= radius_mm * radius_mm
    return fovea[0] + dx[inside], fovea[1] + dy[inside]


@functools.lru_cache(maxsize=256)
def _labels(case: OctCase) -> tuple[float, bool]:
    anat = anatomy_of(case)
    x, y = central_disc(anat.fovea)
    cst = float(np.mean(thickness_um(anat, x, y)))
    fluid = bool(np.any(fluid_footprint(anat, x, y)))
    return cst, fluid
