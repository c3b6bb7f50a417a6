"""``appliance synth / validate``: synthetic photographs, and models measured on labelled ones."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from appliance.cli import common


def cmd_synth(args: argparse.Namespace) -> int:
    if args.oct:
        return _synth_oct(args)
    from appliance.synth import dataset

    return int(dataset.run(args))


def _synth_oct(args: argparse.Namespace) -> int:
    from appliance.synth.oct.dataset import write_oct_dataset

    labels = write_oct_dataset(Path(args.out), args.n, args.seed, args.geometry)
    with labels.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    quality = Counter(row["quality"] for row in rows)
    print(f"wrote {len(rows)} OCT volumes ({args.geometry}) and {labels}")
    print(f"ci_dme {sum(row['ci_dme'] == '1' for row in rows)} of {len(rows)}")
    print("quality " + " ".join(f"{q}:{quality[q]}" for q in ("good", "usable", "reject")))
    return 0


def _validate_oct(args: argparse.Namespace) -> int:
    from appliance.validate.oct_run import run_oct_validation

    fluid = None if args.oct_fluid == "classical" else common.oct_fluid(args, common.settings(args))
    report = run_oct_validation(
        Path(args.oct),
        args.oct_format,
        Path(args.report),
        labels=Path(args.labels) if args.labels else None,
        cst_threshold_um=args.cst_threshold_um,
        fluid_threshold=args.fluid_threshold,
        n_bootstrap=args.bootstrap,
        fluid=fluid,
    )
    summary = {t["key"]: {"value": t["value"], "met": t["met"]} for t in report["targets"]}
    print(json.dumps({"n": report["n"], "targets": summary}, default=str))
    print(f"report written to {Path(args.report) / 'report.txt'}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from appliance.validate import run_validation

    if args.oct:
        return _validate_oct(args)
    settings = common.settings(args)
    screener = common.screener(args, settings)
    if not screener.sessions:
        print("no screening model installed: nothing to validate", file=sys.stderr)
        return 2
    labels = Path(args.labels) if args.labels else None
    report = run_validation(
        Path(args.dataset),
        labels,
        args.format,
        screener.predictor(),
        Path(args.report),
        model_info={"models": screener.describe()},
    )
    print(json.dumps({key: report.get(key) for key in ("n", "imageability")}, default=str))
    print(f"report written to {Path(args.report) / 'report.html'}")
    return 0


def _add_synth_arguments(parser: argparse.ArgumentParser) -> None:
    from appliance.synth import dataset
    from appliance.synth.oct import GEOMETRIES

    dataset.add_arguments(parser)
    parser.add_argument(
        "--oct", action="store_true", help="write macular OCT volumes (docs/synth/oct.md) instead"
    )
    parser.add_argument(
        "--geometry", choices=sorted(GEOMETRIES), default="compact", help="OCT scan pattern"
    )


def _add_oct_arguments(validate: argparse.ArgumentParser) -> None:
    from appliance.validate.oct_formats import OCT_FORMATS
    from appliance.validate.oct_report import DEFAULT_CST_THRESHOLD_UM, DEFAULT_FLUID_THRESHOLD

    validate.add_argument("--oct-format", choices=OCT_FORMATS, default="synth")
    validate.add_argument(
        "--cst-threshold-um",
        type=float,
        default=DEFAULT_CST_THRESHOLD_UM,
        help="centre-involving DME when CST >= this (the device's rule-file value)",
    )
    validate.add_argument(
        "--fluid-threshold",
        type=float,
        default=DEFAULT_FLUID_THRESHOLD,
        help="fluid called when its score >= this",
    )
    validate.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    validate.add_argument(
        "--oct-fluid",
        choices=["installed", "classical"],
        default="installed",
        help="fluid by the installed oct-fluid model, as the appliance measures (default; the "
        "classical detector when none is installed), or by the classical detector",
    )


def add_parsers(sub: Any) -> None:
    synth = sub.add_parser("synth", help="write synthetic fundus photographs with labels.csv")
    _add_synth_arguments(synth)
    synth.set_defaults(func=cmd_synth)

    validate = sub.add_parser("validate", help="measure models against labelled images / OCT")
    what = validate.add_mutually_exclusive_group(required=True)
    what.add_argument("--dataset", help="folder of images")
    what.add_argument("--oct", metavar="DIR", help="folder of labelled OCT volumes")
    validate.add_argument("--labels", help="label file (default: the format's usual name)")
    validate.add_argument(
        "--format",
        default="synth",
        choices=["synth", "aptos", "eyepacs", "messidor2", "idrid", "refuge", "eyeq"],
    )
    validate.add_argument("--report", required=True, help="output folder for report.json/.html")
    validate.add_argument("--models", help="models folder (default: the installed models)")
    validate.add_argument("--variant", choices=["int8", "fp32"], help="model file variant")
    _add_oct_arguments(validate)
    validate.set_defaults(func=cmd_validate)
