"""Build the out-of-domain reference (``models/domain.json``) for a model set.

The guard itself lives in :mod:`appliance.inference.domain`; building its reference needs the
quality gate (the guard only sees photographs the gate passes), the decoder and the generator,
so it is a tool here, like :mod:`appliance.tools.drift_reference`::

    python -m appliance.tools.domain_reference --out models/domain.json [--images DIR] [--n 800]

By default it measures the generator's validation split (seed 2002, each camera's frame with
its longer side 576-1152 px, as the models were trained) and reports how
many photographs of the held-out test split (seed 3003) fall outside. Name the file, with the
SHA-256 it prints, in the DR model's card (``"domain": {"path", "sha256"}``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from appliance.inference.domain import features, fit


def _generated(seed: int, n: int, max_side: int) -> Iterable[np.ndarray]:
    from appliance.capture.decode import Limits, decode_rgb
    from appliance.synth.case import render_layers
    from appliance.synth.dataset import case_for

    for index in range(n):
        yield decode_rgb(render_layers(case_for(seed, index, None, max_side)).jpeg, Limits())


def _files(folder: Path) -> Iterable[np.ndarray]:
    from appliance.capture.decode import Limits, decode_rgb

    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".dcm"):
            yield decode_rgb(path.read_bytes(), Limits())


def measure(images: Iterable[np.ndarray]) -> list[np.ndarray]:
    """Features of the photographs the quality gate passes (the guard sees only those)."""
    from appliance.quality import assess

    return [features(rgb) for rgb in images if assess(rgb).gradable]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m appliance.tools.domain_reference",
        description="Build the out-of-domain reference for a model set from held-out photographs.",
    )
    parser.add_argument("--out", type=Path, required=True, help="where to write domain.json")
    parser.add_argument("--images", type=Path, help="a folder of in-domain photographs")
    parser.add_argument("--seed", type=int, default=2002, help="generator seed (validation split)")
    parser.add_argument("--n", type=int, default=800, help="generated photographs")
    parser.add_argument(
        "--max-side", type=int, default=1152, help="generated frames' longest side (px)"
    )
    parser.add_argument("--quantile", type=float, default=0.99)
    parser.add_argument("--check-seed", type=int, default=3003, help="held-out seed to report on")
    parser.add_argument("--check-n", type=int, default=400)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.images:
        rows = measure(_files(args.images))
        source = f"{len(rows)} gradable photographs from {args.images.name}"
    else:
        rows = measure(_generated(args.seed, args.n, args.max_side))
        source = (
            f"{len(rows)} gradable photographs of the generator's validation split "
            f"(seed {args.seed}, camera frames, longer side up to {args.max_side} px)"
        )
    ref = fit(rows, source, args.quantile)
    args.out.write_text(json.dumps(ref.to_json(), indent=1) + "\n", encoding="utf-8")
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f'name it in the DR card: "domain": {{"path": "{args.out.name}", "sha256": "{digest}"}}')
    held_out = _generated(args.check_seed, args.check_n, args.max_side)
    check = [ref.distance(r) for r in measure(held_out)]
    flagged = sum(d > ref.threshold for d in check)
    print(
        f"threshold {ref.threshold:.2f} (quantile {args.quantile} of {ref.n}); held-out seed "
        f"{args.check_seed}: {flagged} of {len(check)} gradable photographs out of domain "
        f"({100.0 * flagged / max(1, len(check)):.1f} %)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
