"""The input-statistics reference that drift monitoring compares live photographs with.

The reference is the distribution of the quality gate's brightness and sharpness (focus)
measurements over the models' held-out synthetic test set (generator seed 3003, 2000 images at
480x640, as in ``models/recipe``), each photograph decoded and assessed exactly as the pipeline
does (``decode_rgb`` → ``assess`` with the default thresholds). It is summarised as the deciles
of each measurement (ten equally filled bins, the usual basis of a population stability index)
and shipped as ``appliance/monitoring_reference.json``.

The same file carries the OCT signal-strength reference (``oct_metrics.signal_db``): the OCT
quality check's ``signal_db`` over held-out synthetic OCT volumes (generator seed 3203,
``spectralis49`` geometry: 49 B-scans of 496 x 512, every acquisition defect in the generator's
proportions), each written as the OPT object a camera sends and analysed exactly as the
pipeline does (``pipeline.oct.analyse_oct``). Rebuilding either part gives the same file; a part
not rebuilt is kept from the file at ``--out``::

    python -m appliance.tools.drift_reference [--part photographs|oct|all] [--n 2000]
        [--seed 3003] [--oct-n 200] [--oct-seed 3203] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

LOGGER = logging.getLogger(__name__)

SCHEMA = "appliance.monitoring.reference/1"
SEED = 3003  # models/recipe/build.py SEEDS["test"]: the held-out validation set
N = 2000
MAX_SIDE = 1152  # models/recipe/data.py MAX_SIDE: each camera's frame, longer side 576-1152
BINS = 10
CHECKED = 3  # photographs whose raw measurements the file keeps
METRICS = {
    "brightness": "Brightness: mean field luma (0-255)",
    "focus": "Sharpness: fine-over-coarse green detail ratio",
}
OCT_SEED = 3203  # held out: the OCT recipe trains on 1601/1602, validation uses 201-209
OCT_N = 200
OCT_GEOMETRY = "spectralis49"
OCT_METRICS = {"signal_db": "OCT signal strength: dB (bright tissue over background)"}
SHIPPED = Path(__file__).resolve().parents[1] / "monitoring_reference.json"


def measure(seed: int, index: int, max_side: int) -> dict[str, float]:
    """One held-out photograph, as the camera would export it, through decode and quality."""
    from appliance.capture.decode import Limits, decode_rgb
    from appliance.quality import QualityThresholds, assess
    from appliance.synth.case import render_layers
    from appliance.synth.dataset import case_for

    jpeg = render_layers(case_for(seed, index, None, max_side)).jpeg
    report = assess(decode_rgb(jpeg, Limits()), QualityThresholds())
    return {name: float(report.metrics[name]) for name in METRICS}


def measure_oct(seed: int, index: int) -> dict[str, float]:
    """One held-out OCT volume, as the camera would send it (an OPT object), through the
    pipeline's OCT analysis. A volume the analysis could not measure has no figures."""
    from appliance.capture.pixels import Limits
    from appliance.pipeline.oct import analyse_oct
    from appliance.synth.oct.dataset import oct_case_for
    from appliance.synth.oct.dicom import encode_opt, opt_dataset
    from appliance.synth.oct.render import render_oct

    case = oct_case_for(seed, index, OCT_GEOMETRY)
    rendered = render_oct(case)
    data = encode_opt(opt_dataset(rendered.volume, case.geometry.spacing_mm, case.eye))
    analysis = analyse_oct(data, Limits(), None)
    if analysis.quality is None:
        return {}
    return {name: float(analysis.quality.metrics[name]) for name in OCT_METRICS}


def summarise(
    values: dict[str, list[float]], metrics: dict[str, str] = METRICS, bins: int = BINS
) -> dict[str, Any]:
    """Decile edges and bin shares of each measurement (the PSI's expected distribution)."""
    out: dict[str, Any] = {}
    for name, label in metrics.items():
        data = np.asarray(values[name], dtype=float)
        edges = [round(float(e), 6) for e in np.quantile(data, np.arange(1, bins) / bins)]
        counts = np.bincount(np.searchsorted(edges, data, side="right"), minlength=bins)
        out[name] = {
            "label": label,
            "edges": edges,
            "proportions": [round(float(c) / len(data), 6) for c in counts],
            "mean": round(float(data.mean()), 6),
            "sd": round(float(data.std(ddof=1)), 6) if len(data) > 1 else 0.0,
            "p05": round(float(np.quantile(data, 0.05)), 6),
            "p50": round(float(np.quantile(data, 0.5)), 6),
            "p95": round(float(np.quantile(data, 0.95)), 6),
        }
    return out


def build(n: int = N, seed: int = SEED, max_side: int = MAX_SIDE) -> dict[str, Any]:
    values: dict[str, list[float]] = {name: [] for name in METRICS}
    for index in range(n):
        for name, value in measure(seed, index, max_side).items():
            values[name].append(value)
        if (index + 1) % 200 == 0:
            LOGGER.info("measured %d of %d", index + 1, n)
    return {
        "schema": SCHEMA,
        "source": (
            f"held-out synthetic test set (generator seed {seed}, images 0-{n - 1}, "
            f"camera frames, longer side {max_side // 2}-{max_side} px): the models' "
            "validation set, measured by the quality gate"
        ),
        "seed": seed,
        "n": n,
        "max_side": max_side,
        "built_by": "python -m appliance.tools.drift_reference",
        "metrics": summarise(values),
        # the first photographs' raw measurements: a test re-measures them to show the file
        # still matches the generator and the quality gate
        "first": [
            {name: round(values[name][i], 6) for name in METRICS} for i in range(min(n, CHECKED))
        ],
    }


def build_oct(n: int = OCT_N, seed: int = OCT_SEED) -> dict[str, Any]:
    """The OCT part of the reference file (top-level ``oct_*`` keys)."""
    values: dict[str, list[float]] = {name: [] for name in OCT_METRICS}
    first: list[dict[str, float]] = []
    for index in range(n):
        measured = measure_oct(seed, index)
        if len(first) < CHECKED:
            first.append({name: round(v, 6) for name, v in measured.items()})
        for name, value in measured.items():
            values[name].append(value)
        if (index + 1) % 20 == 0:
            LOGGER.info("measured %d of %d OCT volumes", index + 1, n)
    measured_n = len(values["signal_db"])
    return {
        "oct_source": (
            f"held-out synthetic OCT volumes (generator seed {seed}, volumes 0-{n - 1}, "
            f"{OCT_GEOMETRY}, every acquisition defect in the generator's proportions; "
            f"{measured_n} measured), each sent as an OPT object and analysed by the pipeline"
        ),
        "oct_seed": seed,
        "oct_n": measured_n,
        "oct_geometry": OCT_GEOMETRY,
        "oct_metrics": summarise(values, OCT_METRICS),
        "oct_first": first,  # the first volumes' raw figures ({} if not measured)
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("photographs", "oct", "all"), default="all")
    parser.add_argument("--n", type=int, default=N)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--oct-n", type=int, default=OCT_N)
    parser.add_argument("--oct-seed", type=int, default=OCT_SEED)
    parser.add_argument("--out", default=str(SHIPPED))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(args.out)
    kept: dict[str, Any] = json.loads(out.read_text(encoding="utf-8")) if out.is_file() else {}
    photographs = build(args.n, args.seed) if args.part != "oct" else kept
    oct_part = (
        build_oct(args.oct_n, args.oct_seed)
        if args.part != "photographs"
        else {k: v for k, v in kept.items() if k.startswith("oct_")}
    )
    if "schema" not in photographs:
        parser.error(f"{out} has no photograph part to keep: rebuild with --part all")
    base = {k: v for k, v in photographs.items() if not k.startswith("oct_")}
    reference = {**base, **oct_part}
    out.write_text(json.dumps(reference, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out} ({args.part})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
