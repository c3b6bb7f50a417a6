"""Target figures of the OCT baseline on held-out synthetic volumes, for one seed.

``python -m appliance.synth.oct.measure_report --n 40 --seed S [--geometry small]`` draws ``n``
cases in memory (no files), renders them and hands them to the validation harness
(:func:`appliance.validate.oct_run.measure_item`: :func:`measure_oct` and :func:`assess_oct`
with the measured fovea; :func:`appliance.validate.oct_report.compute_oct_report`), then
prints: ILM / RPE boundary MAE (px and µm) and CST MAE (µm), centre-involving DME sensitivity
and specificity (measured CST >= ``CI_DME_CST_UM`` or fluid score >= 0.5 in the central
subfield) and centre fluid sensitivity / specificity — over the gradable volumes the quality
check also passed — and the quality AUROC (score vs the gradable label, every volume). For
sets written to disk, ``appliance validate --oct DIR`` gives the full report.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from appliance.synth.oct.case import CI_DME_CST_UM, GEOMETRIES, OctCase, draw_oct_case
from appliance.synth.oct.render import render_oct
from appliance.validate.oct_report import OctResult, compute_oct_report
from appliance.validate.oct_run import measure_item
from appliance.validate.oct_set import OctItem, OctSample

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class Figures:
    n: int
    gradable: int  # reference-gradable volumes the quality check also passed
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


def _sample(case: OctCase) -> OctSample:
    r = render_oct(case)
    return OctSample(r.volume, r.ilm_px, r.rpe_px, r.fluid_mask)


def _value(block: dict[str, Any] | None, *path: str) -> float:
    node: Any = block
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    return float("nan") if node is None else float(node)


def compute_figures(n: int, seed: int, geometry: str = "small") -> Figures:
    """Render, measure and grade ``n`` cases of ``seed``; see the module docstring."""
    g = GEOMETRIES[geometry]
    rng = np.random.default_rng([seed, 1016])
    items: list[OctItem] = []
    results: list[OctResult] = []
    for i in range(n):
        case = draw_oct_case(rng, g)
        item = OctItem(
            name=f"case {i}", files=(), eye=case.eye, spacing_mm=g.spacing_mm,
            loader=lambda case=case: _sample(case),  # type: ignore[misc]
            cst_um=case.cst_um, centre_fluid=case.centre_fluid, ci_dme=case.ci_dme,
            gradable=case.gradable,
        )  # fmt: skip
        items.append(item)
        results.append(measure_item(item, item.load())[0])
    report = compute_oct_report(items, results, cst_threshold_um=CI_DME_CST_UM, n_bootstrap=0)
    ilm, rpe = report["boundaries"]["ilm"], report["boundaries"]["rpe"]
    dme, fluid = report["ci_dme"], report["fluid_centre"]
    return Figures(
        n=n,
        gradable=int(report["cst"]["mae_um"]["n"]),
        ilm_mae_px=_value(ilm, "mae_px", "value"),
        rpe_mae_px=_value(rpe, "mae_px", "value"),
        ilm_mae_um=_value(ilm, "mae_um", "value"),
        rpe_mae_um=_value(rpe, "mae_um", "value"),
        cst_mae_um=_value(report["cst"], "mae_um", "value"),
        dme_sensitivity=_value(dme, "sensitivity", "value"),
        dme_specificity=_value(dme, "specificity", "value"),
        dme_positives=int(_value(dme, "sensitivity", "denominator")),
        fluid_sensitivity=_value(fluid, "sensitivity", "value"),
        fluid_specificity=_value(fluid, "specificity", "value"),
        quality_auroc=_value(report["quality"], "auroc", "value"),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--geometry", choices=sorted(GEOMETRIES), default="small")
    args = parser.parse_args(argv)
    f = compute_figures(args.n, args.seed, args.geometry)
    print(
        f"OCT baseline, seed {args.seed}, {args.geometry}: {f.n} volumes,"
        f" {f.gradable} gradable and passed by the quality check"
    )
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
