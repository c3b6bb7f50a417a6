"""Measure every volume of a labelled OCT set and write the report folder.

``out/`` receives ``report.json`` (:func:`appliance.validate.oct_report.compute_oct_report`
plus ``dataset`` with the SHA-256 of every input file, ``measurement``, ``unreadable``,
``generated_at``), ``report.txt`` (the same figures and the targets, met or not, for people),
``predictions.csv`` (one line per volume, for re-analysis) and the ROC plots
``roc_oct_fluid_centre.png``, ``roc_oct_fluid_any.png``, ``roc_oct_quality.png`` when the
set has both classes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from appliance import __version__
from appliance.inference.oct.measure import (
    CLASSICAL_FLUID,
    FluidDetector,
    OctMeasurement,
    measure_oct,
)
from appliance.inference.oct.prepare import bin_volume
from appliance.quality.oct import assess_oct
from appliance.validate.oct_formats import read_oct_set
from appliance.validate.oct_report import (
    DEFAULT_CST_THRESHOLD_UM,
    DEFAULT_FLUID_THRESHOLD,
    OctResult,
    compute_oct_report,
)
from appliance.validate.oct_set import OctItem, OctSample
from appliance.validate.oct_text import render_text
from appliance.validate.plots import roc_png
from appliance.validate.run import atomic_write

LOGGER = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]  # (done, total, volume)
MEASUREMENT = {
    "name": "OCT classical baseline (appliance.inference.oct.measure_oct, "
    "appliance.quality.oct.assess_oct)",
    "version": __version__,
    "model_files": "none (pure numpy / OpenCV)",
    "fluid": CLASSICAL_FLUID,
    "status": "demonstration, not clinically validated",
}


def measurement(fluid: FluidDetector | None) -> dict[str, Any]:
    """What measured: the classical baseline, with the fluid found by ``fluid`` (an installed
    ``oct-fluid`` model, named with its card, variant and file hash) when given."""
    if fluid is None:
        return dict(MEASUREMENT)
    describe = getattr(fluid, "describe", None)
    return {
        **MEASUREMENT,
        "fluid": fluid.method,
        "model_files": describe() if callable(describe) else fluid.method,
    }


_ROCS = {  # block → (file, title, positive class)
    "fluid_centre": ("roc_oct_fluid_centre.png", "Fluid in the central subfield", "fluid"),
    "fluid_any": ("roc_oct_fluid_any.png", "Fluid anywhere in the scan", "fluid"),
    "quality": ("roc_oct_quality.png", "Ungradable OCT detection", "ungradable"),
}
_CSV = ("volume", "eye", "reference_cst_um", "cst_um", "ilm_mae_px", "rpe_mae_px",
        "reference_centre_fluid", "p_fluid_centre", "reference_any_fluid", "p_fluid_any",
        "reference_gradable", "quality_score", "quality_gradable", "quality_reasons")  # fmt: skip


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _boundary_error(truth: np.ndarray | None, measured: np.ndarray, rows: int) -> tuple[float, int]:
    if truth is None:
        return 0.0, 0
    valid = np.isfinite(truth) & np.isfinite(measured) & (truth >= 0) & (truth < rows)
    return float(np.abs(measured - truth)[valid].sum()), int(valid.sum())


def measure_item(
    item: OctItem, sample: OctSample, fluid: FluidDetector | None = None
) -> tuple[OctResult, OctMeasurement]:
    """Measure one volume as the appliance does (``fluid``: the installed fluid model, None:
    the classical detector) and compare its boundaries with the reference (the returned
    measurement is at the binned resolution)."""
    volume = sample.volume
    # exactly as the appliance measures (pipeline/oct.py): binned to the validated resolution,
    # boundaries compared in the volume's own rows and A-scans
    binned = bin_volume(volume, item.spacing_mm)
    m = measure_oct(binned.volume, binned.spacing_mm, item.eye, fluid)
    fovea = m.fovea_mm if all(np.isfinite(v) for v in m.fovea_mm) else None
    q = assess_oct(binned.volume, binned.spacing_mm, fovea)
    _, rows, ascans = volume.shape
    ilm, rpe = (
        np.stack([binned.to_original_ascans(r, ascans) for r in binned.to_original_rows(line)])
        for line in (m.ilm_px, m.rpe_px)
    )
    mask = sample.fluid_mask
    result = OctResult(
        cst_um=float(m.cst_um),
        p_centre=float(m.fluid.p_centre),
        p_any=float(m.fluid.p_any),
        quality_score=float(q.score),
        quality_gradable=bool(q.gradable),
        quality_reasons=tuple(q.reasons),
        axial_um=item.spacing_mm[1] * 1000.0,
        ilm_error_px=_boundary_error(sample.ilm_px, ilm, rows),
        rpe_error_px=_boundary_error(sample.rpe_px, rpe, rows),
        any_fluid_truth=None if mask is None else bool(mask.any()),
    )
    return result, m


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return "" if not np.isfinite(value) else f"{value:.7g}"
    return str(value)


def _predictions_csv(items: list[OctItem], results: list[OctResult]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(_CSV)
    for item, r in zip(items, results, strict=True):
        ilm = r.ilm_error_px[0] / r.ilm_error_px[1] if r.ilm_error_px[1] else None
        rpe = r.rpe_error_px[0] / r.rpe_error_px[1] if r.rpe_error_px[1] else None
        any_fluid = item.any_fluid if item.any_fluid is not None else r.any_fluid_truth
        values = (item.name, item.eye, item.cst_um, r.cst_um, ilm, rpe, item.centre_fluid,
                  r.p_centre, any_fluid, r.p_any, item.gradable, r.quality_score,
                  r.quality_gradable, " ".join(r.quality_reasons))  # fmt: skip
        writer.writerow([_cell(v) for v in values])
    return buffer.getvalue().encode()


def _plots(report: Mapping[str, Any], out: Path) -> list[str]:
    written = []
    for key, (name, title, positive) in _ROCS.items():
        block = report.get(key)
        if not block or not block.get("roc") or not block.get("auroc"):
            continue
        sens, spec = block["sensitivity"]["value"], block["specificity"]["value"]
        point = (1.0 - spec, sens) if sens is not None and spec is not None else None
        roc_png(out / name, title=f"ROC: {title}", roc=block["roc"], auroc=block["auroc"],
                operating_point=point, positive=positive)  # fmt: skip
        written.append(name)
    return written


def _dataset(root: Path, fmt: str, labels: Path, items: list[OctItem]) -> dict[str, Any]:
    files = []
    seen: set[Path] = set()
    for item in items:
        for path in item.files:
            if path not in seen:
                seen.add(path)
                files.append({"path": str(path), "sha256": sha256_file(path)})
    listing = "".join(
        f"{f['sha256']}  {f['path']}\n" for f in sorted(files, key=lambda f: f["path"])
    )
    return {
        "format": fmt,
        "dir": str(root),
        "labels": str(labels),
        "labels_sha256": sha256_file(labels) if labels.is_file() else None,
        "n_volumes": len(items),
        "files_sha256": hashlib.sha256(listing.encode()).hexdigest(),
        "files": files,
    }


def run_oct_validation(
    root: Path, fmt: str, out: Path, *, labels: Path | None = None,
    cst_threshold_um: float = DEFAULT_CST_THRESHOLD_UM,
    fluid_threshold: float = DEFAULT_FLUID_THRESHOLD,
    n_bootstrap: int = 1000, seed: int = 0, progress: Progress | None = None,
    fluid: FluidDetector | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Read the set, measure every volume, compute and write the report (module docstring).
    ``fluid``: the fluid model the appliance uses (``appliance validate`` passes the installed
    one); None measures fluid with the classical detector.

    A volume that cannot be read is listed in ``unreadable`` and left out; a measurement that
    fails stops the run with an error naming the volume (a silent skip would flatter it).
    """
    root = Path(root)
    items, where = read_oct_set(root, fmt, labels)
    dataset = _dataset(root, fmt, where, items)  # hashed before anything is measured
    kept: list[OctItem] = []
    results: list[OctResult] = []
    unreadable = []
    for i, item in enumerate(items, start=1):
        try:
            sample = item.load()
        except (OSError, ValueError, KeyError) as exc:
            LOGGER.warning("cannot read %s: %s", item.name, exc)
            unreadable.append({"volume": item.name, "reason": f"{type(exc).__name__}: {exc}"})
        else:
            try:
                result, _ = measure_item(item, sample, fluid)
            except Exception as exc:
                raise RuntimeError(f"measuring {item.name} failed: {exc}") from exc
            kept.append(item)
            results.append(result)
        if progress is not None:
            progress(i, len(items), item.name)
    report = compute_oct_report(kept, results, cst_threshold_um=cst_threshold_um,
                                fluid_threshold=fluid_threshold, n_bootstrap=n_bootstrap,
                                seed=seed)  # fmt: skip
    notes = sorted({note for item in kept for note in item.notes})
    report.update(
        unreadable={"count": len(unreadable), "volumes": unreadable},
        dataset={**dataset, "notes": notes},
        measurement=measurement(fluid),
        title=f"OCT validation on {root.name or root} ({fmt})",
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report["figures"] = _plots(report, out)
    text = json.dumps(report, indent=2, allow_nan=False, default=str)
    atomic_write(out / "predictions.csv", _predictions_csv(kept, results))
    atomic_write(out / "report.json", text.encode() + b"\n")
    atomic_write(out / "report.txt", render_text(json.loads(text)).encode())
    LOGGER.info("wrote the OCT validation report to %s", out)
    return report
