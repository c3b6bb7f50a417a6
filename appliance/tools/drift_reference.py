"""The input-statistics reference that drift monitoring compares live photographs with.

The reference is the distribution of the quality gate's brightness and sharpness (focus)
measurements over the models' held-out synthetic test set (generator seed 3003, 2000 images at
480x640, as in ``models/recipe``), each photograph decoded and assessed exactly as the pipeline
does (``decode_rgb`` → ``assess`` with the default thresholds). It is summarised as the deciles
of each measurement (ten equally filled bins, the usual basis of a population stability index)
and shipped as ``appliance/monitoring_reference.json``. Rebuilding it gives the same file::

    python -m appliance.tools.drift_reference [--n 2000] [--seed 3003] [--out FILE]
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


def summarise(values: dict[str, list[float]], bins: int = BINS) -> dict[str, Any]:
    """Decile edges and bin shares of each measurement (the PSI's expected distribution)."""
    out: dict[str, Any] = {}
    for name, label in METRICS.items():
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=N)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--out", default=str(SHIPPED))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    reference = build(args.n, args.seed)
    Path(args.out).write_text(json.dumps(reference, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({args.n} photographs)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
