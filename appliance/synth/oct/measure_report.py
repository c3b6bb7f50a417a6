"""Target figures of the OCT baseline on held-out synthetic volumes, for one seed.

``python -m appliance.synth.oct.measure_report --n 40 --seed S [--geometry small]`` draws ``n``
cases, renders them, measures them (:func:`appliance.inference.oct.measure.measure_oct`) and
grades their quality (:func:`appliance.quality.oct.assess_oct`, with the measured fovea), then
prints: ILM / RPE boundary MAE (px and µm) and CST MAE (µm) over the gradable volumes,
centre-involving DME sensitivity and specificity (measured CST >= ``CI_DME_CST_UM`` or fluid
score >= 0.5 in the central subfield) and the quality AUROC (score vs the gradable label).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from appliance.inference.oct.measure import measure_oct
from appliance.quality.oct import assess_oct
from appliance.synth.oct.case import CI_DME_CST_UM, GEOMETRIES, draw_oct_case
from appliance.synth.oct.render import render_oct

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class Figures:
    n: int
    gradable: int
    ilm_mae_px: float
    rpe_mae_px: float
    ilm_mae_um: float
    rpe_mae_um: float
    cst_mae_um: float
    dme_sensitivity: float
    dme_specificity: float
    dme_positives: int
    fluid_sensitivity: float
    fluid_specificity: float
    quality_auroc: float


def auroc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """Mann-Whitney AUROC: chance that a positive scores higher than a negative (ties 1/2)."""
    s = np.asarray(scores, dtype=np.float64)
    p = np.asarray(positive, dtype=bool)
    pos, neg = s[p], s[~p]
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (pos.size * neg.size))


def _rate(hits: list[bool]) -> float:
    return float(np.mean(hits)) if hits else float("nan")


def compute_figures(n: int, seed: int, geometry: str = "small") -> Figures:
    """Render, measure and grade ``n`` cases of ``seed``; see the module docstring."""
    g = GEOMETRIES[geometry]
    rng = np.random.default_rng([seed, 1016])
    ilm_err: list[np.ndarray] = []
    rpe_err: list[np.ndarray] = []
    cst_err: list[float] = []
    dme_pos: list[bool] = []
    dme_neg: list[bool] = []
    fluid_pos: list[bool] = []
    fluid_neg: list[bool] = []
    scores: list[float] = []
    labels: list[bool] = []
    for _ in range(n):
        case = draw_oct_case(rng, g)
        r = render_oct(case)
        m = measure_oct(r.volume, r.spacing_mm, case.eye)
        q = assess_oct(r.volume, r.spacing_mm, m.fovea_mm)
        scores.append(q.score)
        labels.append(case.gradable)
        if not case.gradable:
            continue
        valid = np.isfinite(r.ilm_px) & np.isfinite(m.ilm_px) & (r.ilm_px >= 0)
        ilm_err.append(np.abs(m.ilm_px - r.ilm_px)[valid])
        rpe_err.append(np.abs(m.rpe_px - r.rpe_px)[valid])
        cst_err.append(abs(m.cst_um - case.cst_um))
        called = m.cst_um >= CI_DME_CST_UM or m.fluid.p_centre >= 0.5
        (dme_pos if case.ci_dme else dme_neg).append(called if case.ci_dme else not called)
        found = m.fluid.p_centre >= 0.5
        (fluid_pos if case.centre_fluid else fluid_neg).append(
            found if case.centre_fluid else not found
        )
    axial_um = g.spacing_mm[1] * 1000.0
    ilm = float(np.mean(np.concatenate(ilm_err))) if ilm_err else float("nan")
    rpe = float(np.mean(np.concatenate(rpe_err))) if rpe_err else float("nan")
    return Figures(
        n=n,
        gradable=len(cst_err),
        ilm_mae_px=ilm,
        rpe_mae_px=rpe,
        ilm_mae_um=ilm * axial_um,
        rpe_mae_um=rpe * axial_um,
        cst_mae_um=float(np.mean(cst_err)) if cst_err else float("nan"),
        dme_sensitivity=_rate(dme_pos),
        dme_specificity=_rate(dme_neg),
        dme_positives=len(dme_pos),
        fluid_sensitivity=_rate(fluid_pos),
        fluid_specificity=_rate(fluid_neg),
        quality_auroc=auroc(scores, labels),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--geometry", choices=sorted(GEOMETRIES), default="small")
    args = parser.parse_args(argv)
    f = compute_figures(args.n, args.seed, args.geometry)
    print(f"OCT baseline, seed {args.seed}, {args.geometry}: {f.n} volumes, {f.gradable} gradable")
    print(f"  ILM MAE {f.ilm_mae_px:.2f} px ({f.ilm_mae_um:.1f} µm)   target <= 2 px")
    print(f"  RPE MAE {f.rpe_mae_px:.2f} px ({f.rpe_mae_um:.1f} µm)   target <= 2 px")
    print(f"  CST MAE {f.cst_mae_um:.1f} µm   target <= 10 µm")
    print(
        f"  CI-DME sensitivity {f.dme_sensitivity:.3f} ({f.dme_positives} positive),"
        f" specificity {f.dme_specificity:.3f}   targets >= 0.95, >= 0.90"
    )
    print(
        f"  centre fluid sensitivity {f.fluid_sensitivity:.3f},"
        f" specificity {f.fluid_specificity:.3f}"
    )
    print(f"  quality AUROC {f.quality_auroc:.3f}   target >= 0.98")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
