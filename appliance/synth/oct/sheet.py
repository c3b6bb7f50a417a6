"""The labelled OCT contact sheet in ``docs/synth/``: the central B-scan of chosen cases.

``python -m appliance.synth.oct.sheet docs/synth/oct_contact_sheet.png`` renders a normal
eye, each pathology and each acquisition defect just past its reject level (spectralis49
geometry), and tiles the B-scan through the fovea (or the middle one) with its label.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from appliance.synth.oct.case import GEOMETRIES, OCT_DEFECT_LEVELS, OctCase, healthy_case
from appliance.synth.oct.render import render_oct

LOGGER = logging.getLogger(__name__)

TILE = (248, 256)  # height, width of each tile (half the spectralis49 B-scan)


def sheet_cases() -> list[tuple[str, OctCase]]:
    """The cases on the sheet, with their labels."""
    base = healthy_case(2024, GEOMETRIES["spectralis49"])
    r = dataclasses.replace
    cases = [
        ("normal OD", base),
        ("normal OS", r(base, eye="L", seed=7)),
        ("central cysts", r(base, cysts=6, fluid_in_centre=True, thickening_um=30.0)),
        ("subretinal fluid", r(base, srf_um=150.0, fluid_in_centre=True)),
        ("drusen", r(base, drusen=8, seed=11)),
        ("diffuse thickening", r(base, thickening_um=120.0)),
    ]
    for defect, levels in OCT_DEFECT_LEVELS.items():
        cases.append((f"{defect} (reject)", r(base, defect=defect, defect_strength=levels.reject)))
    return cases


def draw_sheet(columns: int = 4) -> np.ndarray:
    """The sheet as a greyscale uint8 image."""
    tiles = []
    for label, case in sheet_cases():
        rendering = render_oct(case)
        frame = int(round(rendering.fovea_index[0]))
        frame = min(max(frame, 0), case.geometry.frames - 1)
        if frame in rendering.blank_frames or case.defect == "blink":
            frame = rendering.blank_frames[0] if rendering.blank_frames else frame
        tile = cv2.resize(rendering.volume[frame], TILE[::-1], interpolation=cv2.INTER_AREA)
        text = f"{label}  CST {case.cst_um:.0f} um"
        cv2.putText(tile, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 255, 1, cv2.LINE_AA)
        tiles.append(tile)
    while len(tiles) % columns:
        tiles.append(np.zeros(TILE, dtype=np.uint8))
    rows = [np.hstack(tiles[i : i + columns]) for i in range(0, len(tiles), columns)]
    return np.vstack(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Draw the OCT contact sheet.")
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    if not cv2.imwrite(str(args.out), draw_sheet()):
        raise OSError(f"could not write {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
