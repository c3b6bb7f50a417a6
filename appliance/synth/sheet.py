"""A labelled contact sheet of what the generator draws, for people to look at.

``python -m appliance.synth.sheet docs/synth/contact_sheet.png`` writes a grid of small
labelled tiles: DR grades and DME on one eye, disc close-ups across cup-to-disc ratios with
notch and atrophy, pigmentation kinds and the left eye, the camera profiles, the acquisition
defects, and close-ups of single lesions at full resolution.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from appliance.synth.camera import CAMERAS
from appliance.synth.case import Case, Rendering, render_layers
from appliance.synth.gradability import DEFECT_LEVELS, DEFECTS
from appliance.synth.look import Look
from appliance.synth.retinopathy import Lesion

LOGGER = logging.getLogger(__name__)

TILE = 208
_BASE = Case(
    seed=31,
    size=(768, 768),
    eye="R",
    field="macula",
    dr_grade=0,
    dme=False,
    cdr=0.3,
    notch=False,
    ppa=False,
    pigmentation="medium",
    camera="desktop45",
    defect=None,
    defect_strength=0.0,
    age_band="40-59",
    sex="F",
)


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    out = np.ascontiguousarray(tile)
    for colour, thick in (((0, 0, 0), 3), ((255, 255, 255), 1)):
        cv2.putText(
            out, text, (5, TILE - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.42, colour, thick, cv2.LINE_AA
        )
    return out


def _fit(rgb: np.ndarray) -> np.ndarray:
    """Letterbox ``rgb`` into a square tile."""
    h, w = rgb.shape[:2]
    scale = TILE / max(h, w)
    small = cv2.resize(
        rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
    )
    tile = np.zeros((TILE, TILE, 3), np.uint8)
    y, x = (TILE - small.shape[0]) // 2, (TILE - small.shape[1]) // 2
    tile[y : y + small.shape[0], x : x + small.shape[1]] = small
    return tile


def _crop(r: Rendering, cx: float, cy: float, half: float) -> np.ndarray:
    h, w = r.image.shape[:2]
    x0, x1 = int(max(0, cx - half)), int(min(w, cx + half))
    y0, y1 = int(max(0, cy - half)), int(min(h, cy + half))
    return cv2.resize(
        r.image[y0:y1, x0:x1],
        (TILE, TILE),
        interpolation=cv2.INTER_AREA if (x1 - x0) > TILE else cv2.INTER_CUBIC,
    )


def _disc_crop(r: Rendering) -> np.ndarray:
    """2.5 disc diameters around the disc, as the glaucoma model sees it."""
    lay = r.layout
    return _crop(r, lay.disc_cx, lay.disc_cy, 1.25 * lay.disc_diameter)


def _whole(case: Case, text: str) -> np.ndarray:
    return _label(_fit(render_layers(case).image), text)


def _rows() -> list[list[np.ndarray]]:
    grades = [_whole(replace(_BASE, dr_grade=g), f"grade {g}") for g in range(5)]
    grades.append(_whole(replace(_BASE, dr_grade=2, dme=True), "grade 2 + DME"))

    discs = []
    for cdr, notch, ppa in (
        (0.15, False, False),
        (0.4, False, False),
        (0.65, False, False),
        (0.85, False, False),
        (0.5, True, False),
        (0.4, False, True),
    ):
        r = render_layers(replace(_BASE, seed=31, cdr=cdr, notch=notch, ppa=ppa, size=(1536, 1536)))
        text = f"cdr {cdr:.2f}" + (" notch" if notch else "") + (" PPA" if ppa else "")
        discs.append(_label(_disc_crop(r), text))

    looks = [
        _whole(replace(_BASE, seed=12, pigmentation=p), p)
        for p in ("light", "medium", "dark", "tessellated")
    ]
    looks.append(_whole(replace(_BASE, seed=12, eye="L"), "left eye"))
    looks.append(_whole(replace(_BASE, seed=12, field="disc"), "disc-centred"))

    cameras = [
        _whole(
            replace(_BASE, seed=5, camera=name, size=profile.size, dr_grade=1),
            f"{name} {profile.megapixels:.1f}MP",
        )
        for name, profile in CAMERAS.items()
    ]
    cameras.append(_whole(replace(_BASE, seed=5, age_band="80+", dr_grade=1), "age 80+ lens"))
    cameras.append(_whole(replace(_BASE, seed=5, dr_grade=1, look=_LOOK), "a drawn look"))

    defects = []
    for defect in DEFECTS:
        strength = min(1.0, DEFECT_LEVELS[defect].reject + 0.1)
        case = replace(_BASE, seed=8, defect=defect, defect_strength=strength)
        defects.append(_whole(case, f"{defect} {strength:.2f}"))

    closeups = _closeups()
    return [grades, discs, looks, cameras[:6], cameras[6:], defects, closeups[:6], closeups[6:12]]


# One look with every optional feature, to show them (appliance.synth.look).
_LOOK = Look(
    cast=(1.08, 0.9, 0.75),
    gamma=0.95,
    pupil=0.25,
    lashes=0.4,
    flashes=2,
    sheen=0.8,
    black_level=9.0,
    surround_noise=2.5,
)


def _isolation(r: Rendering, lesion: Lesion) -> float:
    """Distance to the nearest other lesion: close-ups show the most isolated example."""
    others = [math.hypot(o.x - lesion.x, o.y - lesion.y) for o in r.lesions if o is not lesion]
    rho = math.hypot(lesion.x - r.layout.field_cx, lesion.y - r.layout.field_cy)
    inside = rho < 0.8 * r.layout.field_radius
    return (min(others) if others else 0.0) * (1.0 if inside else 0.1)


def _closeups() -> list[np.ndarray]:
    """Single lesions at full resolution, about one disc diameter across."""
    big = (1536, 1536)
    pdr = render_layers(replace(_BASE, dr_grade=4, dme=True, size=big))
    others = (
        render_layers(replace(_BASE, seed=17, dr_grade=4, dme=True, size=big)),
        render_layers(replace(_BASE, seed=56, dr_grade=4, size=big)),
    )
    severe = render_layers(replace(_BASE, dr_grade=3, size=big))
    wanted = (
        "microaneurysm",
        "haemorrhage",
        "flame_haemorrhage",
        "hard_exudate",
        "cotton_wool_spot",
        "venous_beading",
        "irma",
        "nvd",
        "nve",
        "preretinal_haemorrhage",
        "vitreous_haemorrhage",
    )
    tiles = []
    for kind in wanted:
        sources = (severe, pdr, *others) if kind == "irma" else (pdr, *others)
        for r in sources:
            found = [x for x in r.lesions if x.kind == kind]
            if found:
                dd = r.layout.disc_diameter
                half = {"nvd": 1.0, "preretinal_haemorrhage": 1.4, "vitreous_haemorrhage": 3.0}
                if kind == "hard_exudate":  # exudates come in clusters: show one
                    lesion = min(found, key=lambda x: _isolation(r, x))
                else:
                    lesion = max(found, key=lambda x: _isolation(r, x))
                tiles.append(_label(_crop(r, lesion.x, lesion.y, half.get(kind, 0.6) * dd), kind))
                break
    return tiles


def contact_sheet() -> np.ndarray:
    """The sheet as an RGB uint8 array (six tiles a row)."""
    blank = np.zeros((TILE, TILE, 3), np.uint8)
    rows = [row + [blank] * (6 - len(row)) for row in _rows() if row]
    return np.concatenate([np.concatenate(row[:6], axis=1) for row in rows], axis=0)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    out = Path(args[0] if args else "docs/synth/contact_sheet.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(contact_sheet()).save(out, optimize=True)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
