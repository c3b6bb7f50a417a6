"""Write a labelled synthetic OCT dataset: volumes, truth and ``labels.csv``.

Volume ``i`` of the dataset with seed ``S`` is the case drawn from ``default_rng([S, i])``, so
it depends on nothing else. Files: ``volumes/NNNNNN.npy`` (uint8, frames x rows x A-scans,
display units), ``truth/NNNNNN.npz`` (``ilm_px``, ``rpe_px``, ``bm_px``, ``thickness_um``
float32 (frames, A-scans); ``fluid_mask`` bool volume) and ``labels.csv`` (:data:`COLUMNS`,
spacing in mm). Run ``python -m appliance.synth.oct.dataset --out DIR --n N --seed S``.
"""

from __future__ import annotations

import argparse
import csv
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from appliance.synth.oct.case import GEOMETRIES, OctCase, draw_oct_case
from appliance.synth.oct.render import render_oct

LOGGER = logging.getLogger(__name__)

COLUMNS = (
    "volume",
    "truth",
    "eye",
    "frames",
    "rows",
    "ascans",
    "spacing_frame_mm",
    "spacing_axial_mm",
    "spacing_lateral_mm",
    "fovea_x_mm",
    "fovea_y_mm",
    "cst_um",
    "centre_fluid",
    "ci_dme",
    "thickening_um",
    "cysts",
    "srf_um",
    "drusen",
    "gradable",
    "quality",
    "defect",
    "defect_strength",
    "seed",
)


def oct_case_for(seed: int, index: int, geometry: str = "spectralis49") -> OctCase:
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got {seed}, {index}")
    return draw_oct_case(np.random.default_rng([seed, index]), GEOMETRIES[geometry])


def write_oct_dataset(out: Path, n: int, seed: int, geometry: str = "spectralis49") -> Path:
    """Write ``n`` volumes of ``seed`` under ``out``; returns the labels file."""
    if geometry not in GEOMETRIES:
        raise ValueError(f"geometry must be one of {sorted(GEOMETRIES)}, got {geometry!r}")
    out = Path(out)
    (out / "volumes").mkdir(parents=True, exist_ok=True)
    (out / "truth").mkdir(parents=True, exist_ok=True)
    labels = out / "labels.csv"
    with labels.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for i in range(n):
            case = oct_case_for(seed, i, geometry)
            r = render_oct(case)
            volume, truth = f"volumes/{i:06d}.npy", f"truth/{i:06d}.npz"
            np.save(out / volume, r.volume)
            np.savez_compressed(
                out / truth,
                ilm_px=r.ilm_px.astype(np.float32),
                rpe_px=r.rpe_px.astype(np.float32),
                bm_px=r.bm_px.astype(np.float32),
                thickness_um=r.thickness_um.astype(np.float32),
                fluid_mask=r.fluid_mask,
            )
            sp = case.geometry.spacing_mm
            fx, fy = case.fovea_mm
            writer.writerow(
                [volume, truth, case.eye, *case.geometry.shape]
                + [f"{v:.6f}" for v in sp]
                + [f"{fx:.4f}", f"{fy:.4f}", f"{case.cst_um:.2f}", int(case.centre_fluid)]
                + [int(case.ci_dme), case.thickening_um, case.cysts, case.srf_um, case.drusen]
                + [int(case.gradable), case.quality, case.defect or "", case.defect_strength]
                + [case.seed]
            )
    LOGGER.info("wrote %d OCT volumes to %s", n, out)
    return labels


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a synthetic OCT dataset.")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--geometry", choices=sorted(GEOMETRIES), default="spectralis49")
    args = parser.parse_args(argv)
    write_oct_dataset(args.out, args.n, args.seed, args.geometry)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
