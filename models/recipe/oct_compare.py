"""The OCT fluid model side by side with the classical baseline on held-out synthetic seeds.

    python models/recipe/oct_compare.py [--seeds 207,208,209] [--n 60] [--models DIR]
    python models/recipe/oct_compare.py --decide   # the install rule on those seeds' figures

Volume ``i`` of seed ``S`` is ``oct_case_for(S, i, "compact")``: the same volumes as
``appliance synth --oct --seed S --n 60 --geometry compact`` writes (README "OCT"). Each is
measured once by the classical baseline (``measure_oct``, ``assess_oct``: boundaries, CST,
fovea, quality and the classical fluid scores) and its fluid is measured again by the
installed ``oct-fluid`` model (INT8 unless ``--variant fp32``) with the same boundaries and
fovea (the classical measurement is cached in ``--work``); both sets of results go through
the validation harness (:func:`appliance.validate.oct_report.compute_oct_report`, bootstrap
1,000, seed 0). Writes
``models/validation/oct-fluid/seed-S.json`` (both reports' figures and the timings) and prints
one Markdown table row per seed and method. Timings are per volume on ``--threads`` threads.
"""

from __future__ import annotations

import argparse
import json
import pickle
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from appliance.inference.oct.fluid import detect_fluid  # noqa: E402
from appliance.inference.oct.fluid_net import TASK, FluidNet  # noqa: E402
from appliance.inference.oct.measure import measure_oct  # noqa: E402
from appliance.quality.oct import assess_oct  # noqa: E402
from appliance.synth.oct.dataset import oct_case_for  # noqa: E402
from appliance.synth.oct.render import render_oct  # noqa: E402
from appliance.validate.oct_report import OctResult, compute_oct_report  # noqa: E402
from appliance.validate.oct_run import _boundary_error  # noqa: E402
from appliance.validate.oct_set import OctItem, OctSample  # noqa: E402

GEOMETRY = "compact"
HELD_OUT = (207, 208, 209)  # round 3's held-out seeds, never used before (201-206 spent)
# Stated before round 3's held-out seeds were measured (issue #16 targets; safety first):
INSTALL_RULE = (
    "install (models/oct-fluid.*) only if, on every held-out seed, the model's centre-involving "
    "DME sensitivity is >= 0.95 and specificity >= 0.90, and its central-fluid sensitivity is "
    "not lower than the classical detector's on the same volumes; otherwise it stays a "
    "candidate (models/candidates/) with its figures"
)


def _pick(block: Any, *path: str) -> Any:
    for part in path:
        block = block.get(part) if isinstance(block, dict) else None
    return block


def figures(report: dict[str, Any]) -> dict[str, Any]:
    return {
        "n": report["n_volumes"] if "n_volumes" in report else None,
        "measured": _pick(report, "cst", "mae_um", "n"),
        "cst_mae_um": _pick(report, "cst", "mae_um"),
        "ilm_mae_px": _pick(report, "boundaries", "ilm", "mae_px"),
        "rpe_mae_px": _pick(report, "boundaries", "rpe", "mae_px"),
        "ci_dme_sensitivity": _pick(report, "ci_dme", "sensitivity"),
        "ci_dme_specificity": _pick(report, "ci_dme", "specificity"),
        "fluid_centre": report.get("fluid_centre"),
        "fluid_any": report.get("fluid_any"),
    }


def classical(seed: int, n: int, work: Path) -> list[dict[str, Any]]:
    """The classical measurement of every volume of ``seed`` (cached under ``work``: it does
    not depend on the model, so it runs once, also while the model trains)."""
    path = work / f"classical-{seed}-{n}.pkl"
    if path.is_file():
        return pickle.loads(path.read_bytes())  # noqa: S301 (our own cache)
    rows = []
    for i in range(n):
        case = oct_case_for(seed, i, GEOMETRY)
        r = render_oct(case)
        spacing = case.geometry.spacing_mm
        t0 = time.perf_counter()
        m = measure_oct(r.volume, spacing, case.eye)
        t1 = time.perf_counter()
        detect_fluid(r.volume, m.ilm_px, m.rpe_px, spacing, m.fovea_mm)
        t2 = time.perf_counter()
        q = assess_oct(r.volume, spacing, m.fovea_mm)
        rows.append({
            "case": case, "volume": r.volume, "fluid_mask_any": bool(r.fluid_mask.any()),
            "ilm_px": m.ilm_px, "rpe_px": m.rpe_px, "fovea_mm": m.fovea_mm,
            "cst_um": float(m.cst_um), "p_centre": float(m.fluid.p_centre),
            "p_any": float(m.fluid.p_any), "quality_score": float(q.score),
            "quality_gradable": bool(q.gradable), "quality_reasons": tuple(q.reasons),
            "ilm_error_px": _boundary_error(r.ilm_px, m.ilm_px, r.volume.shape[1]),
            "rpe_error_px": _boundary_error(r.rpe_px, m.rpe_px, r.volume.shape[1]),
            "measure_oct_ms": (t1 - t0) * 1000, "classical_fluid_ms": (t2 - t1) * 1000,
        })  # fmt: skip
    work.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(rows))
    return rows


def run_seed(seed: int, n: int, net: FluidNet, work: Path) -> dict[str, Any]:
    items: list[OctItem] = []
    results: dict[str, list[OctResult]] = {"classical": [], "model": []}
    ms: dict[str, list[float]] = {"measure_oct": [], "classical_fluid": [], "model_fluid": []}
    for i, row in enumerate(classical(seed, n, work)):
        case = row["case"]
        spacing = case.geometry.spacing_mm
        item = OctItem(
            name=f"{i:06d}", files=(), eye=case.eye, spacing_mm=spacing,
            loader=lambda: OctSample(np.zeros((3, 64, 64), np.uint8)),
            cst_um=case.cst_um, centre_fluid=case.centre_fluid, ci_dme=case.ci_dme,
            gradable=case.gradable, quality=case.quality,
        )  # fmt: skip
        items.append(item)
        t0 = time.perf_counter()
        learned = net.detect(row["volume"], row["ilm_px"], row["rpe_px"], spacing, row["fovea_mm"])
        ms["model_fluid"].append((time.perf_counter() - t0) * 1000)
        ms["measure_oct"].append(row["measure_oct_ms"])
        ms["classical_fluid"].append(row["classical_fluid_ms"])
        common = dict(
            cst_um=row["cst_um"], quality_score=row["quality_score"],
            quality_gradable=row["quality_gradable"], quality_reasons=row["quality_reasons"],
            axial_um=spacing[1] * 1000.0, ilm_error_px=row["ilm_error_px"],
            rpe_error_px=row["rpe_error_px"], any_fluid_truth=row["fluid_mask_any"],
        )  # fmt: skip
        results["classical"].append(
            OctResult(p_centre=row["p_centre"], p_any=row["p_any"], **common)
        )
        results["model"].append(
            OctResult(p_centre=float(learned.p_centre), p_any=float(learned.p_any), **common)
        )
    out: dict[str, Any] = {"seed": seed, "n": n, "geometry": GEOMETRY}
    for method, res in results.items():
        report = compute_oct_report(items, res, n_bootstrap=1000, seed=0)
        out[method] = figures(report)
    out["ms_per_volume_median"] = {k: round(float(np.median(v)), 1) for k, v in ms.items()}
    out["model"]["card"] = net.card.summary() | {"variant": net.session.variant}
    return out


def _fmt(block: Any, digits: int = 3) -> str:
    if not block or block.get("value") is None:
        return "–"
    text = f"{block['value']:.{digits}f}"
    if "numerator" in block:
        text += f" ({block['numerator']}/{block['denominator']})"
    return text


def row(result: dict[str, Any], method: str) -> str:
    f = result[method]
    ms = result["ms_per_volume_median"]
    fluid_ms = ms["classical_fluid"] if method == "classical" else ms["model_fluid"]
    return (
        f"| {result['seed']} | {method} | {f['measured']} | {_fmt(f['cst_mae_um'], 1)} µm | "
        f"{_fmt(f['ilm_mae_px'], 2)} / {_fmt(f['rpe_mae_px'], 2)} px | "
        f"{_fmt(f['ci_dme_sensitivity'])} | {_fmt(f['ci_dme_specificity'])} | "
        f"{_fmt(_pick(f, 'fluid_centre', 'auroc'))} | "
        f"{_fmt(_pick(f, 'fluid_centre', 'sensitivity'))} | "
        f"{_fmt(_pick(f, 'fluid_centre', 'specificity'))} | "
        f"{_fmt(_pick(f, 'fluid_any', 'auroc'))} | "
        f"{_fmt(_pick(f, 'fluid_any', 'specificity'))} | "
        f"{fluid_ms:.0f} ms (of {ms['measure_oct']:.0f}) |"
    )


def _shown(path: Path) -> str:
    resolved = path.resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(path)


def write_validation(models: Path, out: Path, seeds: list[int], variant: str) -> None:
    """The card's ``validation`` block: each seed's model and classical fluid / DME figures."""
    path = models / f"{TASK}.card.json"
    card = json.loads(path.read_text(encoding="utf-8"))
    per_seed = []
    for seed in seeds:
        result = json.loads((out / f"seed-{seed}.json").read_text(encoding="utf-8"))
        entry: dict[str, Any] = {"seed": seed, "n": result["n"]}
        for method in ("model", "classical"):
            f = result[method]
            entry[method] = {
                "measured": f["measured"],
                "central_fluid_auroc": _pick(f, "fluid_centre", "auroc", "value"),
                "central_fluid_sensitivity": _pick(f, "fluid_centre", "sensitivity"),
                "central_fluid_specificity": _pick(f, "fluid_centre", "specificity"),
                "any_fluid_auroc": _pick(f, "fluid_any", "auroc", "value"),
                "any_fluid_specificity": _pick(f, "fluid_any", "specificity"),
                "ci_dme_sensitivity": f["ci_dme_sensitivity"],
                "ci_dme_specificity": f["ci_dme_specificity"],
            }
        entry["ms_per_volume_median"] = result["ms_per_volume_median"]
        per_seed.append(entry)
    card["validation"] = {
        "dataset": f"held-out synthetic OCT volumes, {GEOMETRY}, generator seeds "
        f"{', '.join(map(str, seeds))} (never used for training or thresholds)",
        "method": "models/recipe/oct_compare.py through appliance.validate.oct_report "
        f"(classical boundaries and fovea for both; {variant} where the card names it, else "
        "the variant it names)",
        "seeds": per_seed,
        "report": f"{_shown(out)}/seed-{{{','.join(map(str, seeds))}}}.json",
    }
    path.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def verdict(results: list[dict[str, Any]]) -> tuple[bool, list[str]]:
    """:data:`INSTALL_RULE` applied to the held-out seeds' results: (install, why)."""
    why = []
    for result in results:
        model, classical_ = result["model"], result["classical"]
        sens = _pick(model, "ci_dme_sensitivity", "value")
        spec = _pick(model, "ci_dme_specificity", "value")
        central = _pick(model, "fluid_centre", "sensitivity", "value")
        central_classical = _pick(classical_, "fluid_centre", "sensitivity", "value")
        seed = result["seed"]
        if sens is None or sens < 0.95:
            why.append(f"seed {seed}: CI-DME sensitivity {sens} < 0.95")
        if spec is None or spec < 0.90:
            why.append(f"seed {seed}: CI-DME specificity {spec} < 0.90")
        if central is None:
            why.append(f"seed {seed}: central-fluid sensitivity not measurable (no such volume)")
        elif central_classical is not None and central < central_classical:
            why.append(f"seed {seed}: central-fluid sensitivity {central} below the classical "
                       f"detector's {central_classical}")  # fmt: skip
    return not why, why


def decide(models: Path, out: Path, seeds: list[int], install_to: Path) -> bool:
    """Apply :data:`INSTALL_RULE`: record the verdict on the card; copy the card and the files
    it names to ``install_to`` when it passes, else remove any ``oct-fluid`` files there."""
    results = [
        json.loads((out / f"seed-{seed}.json").read_text(encoding="utf-8")) for seed in seeds
    ]
    install, why = verdict(results)
    path = models / f"{TASK}.card.json"
    card = json.loads(path.read_text(encoding="utf-8"))
    card["installed"] = install
    card["install_rule"] = INSTALL_RULE
    card["decision"] = (
        f"Installed: the rule holds on held-out seeds {', '.join(map(str, seeds))}."
        if install
        else f"Not installed (kept in models/candidates/): {'; '.join(why)}."
    )
    path.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    names = [path.name] + [entry["path"] for entry in card["files"].values()]
    if install and install_to.resolve() != models.resolve():
        install_to.mkdir(parents=True, exist_ok=True)
        for name in names[1:] + names[:1]:  # the card last: never a card without its files
            shutil.copy2(models / name, install_to / name)
    elif not install and install_to.resolve() != models.resolve():
        for stale in install_to.glob(f"{TASK}.*"):
            if stale.is_file():
                stale.unlink()
    return install


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default=",".join(map(str, HELD_OUT)))
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--models", type=Path, default=ROOT / "models" / "candidates")
    parser.add_argument("--variant", default="int8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "models" / "validation" / "oct-fluid" / "round3"
    )
    parser.add_argument("--work", type=Path, default=ROOT / "var" / "recipe-oct")
    parser.add_argument(
        "--classical-only", action="store_true", help="fill the classical cache and stop"
    )
    parser.add_argument(
        "--card",
        action="store_true",
        help="write the seeds' figures (from --out) into the card's validation block and stop",
    )
    parser.add_argument(
        "--decide",
        action="store_true",
        help="figures into the card, then the install rule: copy the model to --install-to "
        "when it passes, else remove any there; then stop",
    )
    parser.add_argument("--install-to", type=Path, default=ROOT / "models")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.card:
        write_validation(args.models, args.out, seeds, args.variant)
        return 0
    if args.classical_only:
        for seed in seeds:
            classical(seed, args.n, args.work)
        return 0
    if args.decide:
        write_validation(args.models, args.out, seeds, args.variant)
        install = decide(args.models, args.out, seeds, args.install_to)
        print(f"{'installed in ' + str(args.install_to) if install else 'not installed'}")
        return 0
    net = FluidNet.find(args.models, args.variant, threads=args.threads)
    if net is None:
        parser.error(f"no {TASK} card in {args.models}")
    args.out.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        result = run_seed(seed, args.n, net, args.work)
        path = args.out / f"seed-{seed}.json"
        path.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
        print(row(result, "classical"), flush=True)
        print(row(result, "model"), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
