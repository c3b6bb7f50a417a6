"""One synthetic screening photograph: every parameter (:class:`Case`), its labels, its picture.

:func:`draw_case` samples a case from the training prevalence mix (:data:`PREVALENCE`);
:func:`render_case` turns it into an RGB uint8 photograph and :func:`render_layers` also
returns the ground truth drawn (lesion records and masks, disc and cup masks). The picture is
a pure function of the case: the random details all come from ``case.seed``.

Labels (all derived from the fields):

* ``dr_grade``: ICDR 0-4 (see :mod:`appliance.synth.retinopathy` for the single-field rules);
  ``referable_dr`` = grade >= 2 or DME.
* ``dme``: hard exudates within one disc diameter of the fovea (needs grade >= 2).
* ``cdr``: vertical cup-to-disc ratio; ``glaucoma_suspect`` = cdr >= 0.6 or a rim notch.
* ``quality``: ``good`` / ``usable`` / ``reject`` from the acquisition defect and its strength
  (:mod:`appliance.synth.gradability`); ``gradable`` = quality != ``reject``.

Rendering checks that the lesions actually drawn imply the case's grade and DME flag, and
raises RuntimeError otherwise, so a label can never silently disagree with its picture.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from appliance.synth.camera import CAMERAS, decode_jpeg, encode_jpeg, optics, sensor
from appliance.synth.gradability import DEFECTS, apply_defect, quality_of, strength_band
from appliance.synth.layout import FundusLayout, field_layout, mirrored
from appliance.synth.lesions import LESION_BITS
from appliance.synth.look import NEUTRAL, Look, apply_look, draw_look
from appliance.synth.retina import draw_retina
from appliance.synth.retinopathy import Lesion, has_dme, icdr_grade

LOGGER = logging.getLogger(__name__)

# Pigmentation kinds: (lowest, highest) pigment level 0..1, and whether choroid shows.
PIGMENTATIONS: dict[str, tuple[float, float, bool]] = {
    "light": (0.0, 0.3, False),
    "medium": (0.35, 0.65, False),
    "dark": (0.8, 1.0, False),
    "tessellated": (0.05, 0.4, True),
}
AGE_BANDS = ("20-39", "40-59", "60-79", "80+")
_LENS_YELLOWING = {"20-39": 0.0, "40-59": 0.03, "60-79": 0.07, "80+": 0.12}
SEXES = ("F", "M")
FIELDS = ("macula", "disc")

# The training mix drawn by draw_case (probabilities; see docs/synth/README.md).
PREVALENCE: dict[str, dict[str, float]] = {
    "dr_grade": {"0": 0.40, "1": 0.15, "2": 0.20, "3": 0.12, "4": 0.13},
    "dme_given_grade_2_to_4": {"yes": 1.0 / 3.0},  # 15 % of all images
    "glaucoma_suspect": {"yes": 0.25},  # cdr 0.6-0.9 (80 %, a third notched) or notch alone
    "ppa": {"suspect": 0.45, "other": 0.15},
    "pigmentation": {"light": 0.25, "medium": 0.40, "dark": 0.20, "tessellated": 0.15},
    "eye": {"R": 0.5, "L": 0.5},
    "field": {"macula": 0.8, "disc": 0.2},
    "defect": {"any": 0.25},  # split evenly over the six kinds
    "defect_quality": {"good": 0.15, "usable": 0.40, "reject": 0.45},
    "age_band": {"20-39": 0.15, "40-59": 0.40, "60-79": 0.35, "80+": 0.10},
    "sex": {"F": 0.5, "M": 0.5},
}


@dataclass(frozen=True)
class Case:
    """Every parameter of one synthetic photograph; see the module docstring for labels."""

    seed: int
    size: tuple[int, int]  # (height, width) in pixels
    eye: str  # "R" or "L"
    field: str  # "macula" or "disc" centred
    dr_grade: int
    dme: bool
    cdr: float  # vertical cup-to-disc ratio, 0.1-0.9
    notch: bool
    ppa: bool
    pigmentation: str
    camera: str
    defect: str | None
    defect_strength: float
    age_band: str
    sex: str
    look: Look = NEUTRAL  # this photograph's own colour and light (appliance.synth.look)

    def __post_init__(self) -> None:
        checks = [
            (self.eye in ("R", "L"), f"eye must be 'R' or 'L', got {self.eye!r}"),
            (self.field in FIELDS, f"field must be one of {FIELDS}, got {self.field!r}"),
            (self.dr_grade in range(5), f"dr_grade must be 0..4, got {self.dr_grade!r}"),
            (not self.dme or self.dr_grade >= 2, "dme needs dr_grade >= 2"),
            (0.1 <= self.cdr <= 0.9, f"cdr must be in [0.1, 0.9], got {self.cdr!r}"),
            (self.pigmentation in PIGMENTATIONS, f"unknown pigmentation {self.pigmentation!r}"),
            (self.camera in CAMERAS, f"unknown camera {self.camera!r}"),
            (self.defect is None or self.defect in DEFECTS, f"unknown defect {self.defect!r}"),
            (0.0 <= self.defect_strength <= 1.0, "defect_strength must be in [0, 1]"),
            (self.age_band in AGE_BANDS, f"age_band must be one of {AGE_BANDS}"),
            (self.sex in SEXES, f"sex must be one of {SEXES}"),
            (len(self.size) == 2 and min(self.size) >= 64, f"size too small: {self.size}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def referable_dr(self) -> bool:
        return self.dr_grade >= 2 or self.dme

    @property
    def glaucoma_suspect(self) -> bool:
        return self.cdr >= 0.6 or self.notch

    @property
    def quality(self) -> str:
        return quality_of(self.defect, self.defect_strength)

    @property
    def gradable(self) -> bool:
        return self.quality != "reject"


def _pick(rng: np.random.Generator, table: dict[str, float]) -> str:
    keys = list(table)
    p = np.array([table[k] for k in keys])
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def draw_case(
    rng: np.random.Generator, size: tuple[int, int] | None = None, max_side: int | None = None
) -> Case:
    """A case from the training mix :data:`PREVALENCE`, with a drawn :class:`Look`.

    ``size`` None = the camera's own; then ``max_side`` (if given) scales a camera's frame down,
    keeping its shape, so that its longer side lies between half of ``max_side`` and
    ``max_side`` (drawn uniformly; a smaller native frame is kept)."""
    mix = PREVALENCE
    seed = int(rng.integers(0, 2**31 - 1))
    grade = int(_pick(rng, mix["dr_grade"]))
    dme = grade >= 2 and bool(rng.random() < mix["dme_given_grade_2_to_4"]["yes"])
    suspect = bool(rng.random() < mix["glaucoma_suspect"]["yes"])
    if suspect and rng.random() < 0.8:
        cdr, notch = rng.uniform(0.6, 0.9), bool(rng.random() < 1.0 / 3.0)
    elif suspect:
        cdr, notch = rng.uniform(0.3, 0.6), True
    else:
        cdr, notch = rng.uniform(0.1, 0.5995), False
    ppa = bool(rng.random() < mix["ppa"]["suspect" if suspect else "other"])
    camera = str(rng.choice(sorted(CAMERAS)))
    defect: str | None = None
    strength = 0.0
    if rng.random() < mix["defect"]["any"]:
        defect = str(rng.choice(DEFECTS))
        low, high = strength_band(defect, _pick(rng, mix["defect_quality"]))
        strength = round(float(rng.uniform(low, high - 0.001)), 3)  # stays in its band
    eye, field = _pick(rng, mix["eye"]), _pick(rng, mix["field"])
    pigmentation = _pick(rng, mix["pigmentation"])
    age_band, sex = _pick(rng, mix["age_band"]), _pick(rng, mix["sex"])
    look = draw_look(rng)
    if size is None:
        size = CAMERAS[camera].size
        if max_side is not None:
            side = float(rng.uniform(0.5, 1.0)) * max_side
            scale = min(1.0, side / max(size))
            size = (round(size[0] * scale), round(size[1] * scale))
    return Case(
        seed=seed,
        size=size,
        eye=eye,
        field=field,
        dr_grade=grade,
        dme=dme,
        cdr=round(float(cdr), 3),
        notch=notch,
        ppa=ppa,
        pigmentation=pigmentation,
        camera=camera,
        defect=defect,
        defect_strength=float(strength),
        age_band=age_band,
        sex=sex,
        look=look,
    )


@dataclass(frozen=True)
class Rendering:
    """A rendered case with the ground truth drawn, in the picture's own orientation.

    Masks and lesion positions are those of the retina before the acquisition defect: only
    ``off_center`` moves pixels, and then the masks are not moved with them.
    """

    case: Case
    image: np.ndarray  # RGB uint8, as the camera's JPEG export decodes
    jpeg: bytes
    layout: FundusLayout
    lesions: tuple[Lesion, ...]
    lesion_bits: np.ndarray  # uint16 HxW, see appliance.synth.lesions.LESION_BITS
    disc_mask: np.ndarray  # bool HxW
    cup_mask: np.ndarray  # bool HxW

    def lesion_mask(self, kind: str | None = None) -> np.ndarray:
        """Pixels showing lesion ``kind`` (any DR lesion when None), bool HxW."""
        if kind is None:
            return self.lesion_bits != 0
        if kind not in LESION_BITS:
            raise ValueError(f"unknown lesion kind {kind!r}")
        return (self.lesion_bits & LESION_BITS[kind]) != 0


def render_layers(case: Case) -> Rendering:
    """Render ``case`` and keep the ground truth; see :class:`Rendering`."""
    profile = CAMERAS[case.camera]
    seeds = np.random.SeedSequence(case.seed).spawn(5)
    layout_seed, retina_seed, defect_seed, noise_seed, look_seed = seeds
    layout_rng = np.random.default_rng(layout_seed)
    low, high, tessellated = PIGMENTATIONS[case.pigmentation]
    pigment = float(layout_rng.uniform(low, high))
    tessellation = float(layout_rng.uniform(0.3, 0.65)) if tessellated else 0.0
    darkening = float(layout_rng.uniform(0.4, 1.0)) if case.pigmentation == "dark" else 0.0
    layout = field_layout(
        layout_rng,
        case.size,
        field=case.field,
        field_deg=profile.field_deg,
        field_fill=profile.field_fill,
        pigmentation=pigment,
        cup_ratio=case.cdr,
    )
    retina = draw_retina(
        layout,
        retina_seed,
        dr_grade=case.dr_grade,
        dme=case.dme,
        cdr=case.cdr,
        notch=case.notch,
        ppa=case.ppa,
        tessellation=tessellation,
        lens_yellowing=_LENS_YELLOWING[case.age_band],
        darkening=darkening,
    )
    if icdr_grade(retina.lesions) != case.dr_grade or has_dme(retina.lesions, layout) != case.dme:
        raise RuntimeError(f"drawn lesions disagree with the labels of {case}")
    img, bits, disc, cup = retina.image, retina.lesion_bits, retina.disc_mask, retina.cup_mask
    lesions = retina.lesions
    if case.eye == "L":
        img, bits, disc, cup = (np.ascontiguousarray(a[:, ::-1]) for a in (img, bits, disc, cup))
        flip = float(layout.width - 1)
        lesions = tuple(Lesion(x.kind, flip - x.x, x.y, x.size, x.quadrant) for x in retina.lesions)
        layout = mirrored(layout)
    look_rng = np.random.default_rng(look_seed)
    img = apply_look(img, layout, case.look, look_rng)
    rgb = optics(img, layout, profile, case.look, look_rng)
    rgb = apply_defect(
        rgb, layout, case.defect, case.defect_strength, np.random.default_rng(defect_seed)
    )
    rgb = sensor(rgb, profile, np.random.default_rng(noise_seed))
    data = encode_jpeg(rgb, profile.jpeg_quality)
    return Rendering(
        case=case,
        image=decode_jpeg(data),
        jpeg=data,
        layout=layout,
        lesions=lesions,
        lesion_bits=bits,
        disc_mask=disc,
        cup_mask=cup,
    )


def render_case(case: Case) -> np.ndarray:
    """The photograph of ``case``: RGB uint8 of shape ``(*case.size, 3)``."""
    return render_layers(case).image
