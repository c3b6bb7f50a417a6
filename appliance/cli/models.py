"""``appliance synth / validate``: synthetic photographs, and models measured on labelled ones."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from appliance.cli import common


def cmd_synth(args: argparse.Namespace) -> int:
    from appliance.synth import dataset

    return int(dataset.run(args))


def cmd_validate(args: argparse.Namespace) -> int:
    from appliance.validate import run_validation

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

    dataset.add_arguments(parser)


def add_parsers(sub: Any) -> None:
    synth = sub.add_parser("synth", help="write synthetic fundus photographs with labels.csv")
    _add_synth_arguments(synth)
    synth.set_defaults(func=cmd_synth)

    validate = sub.add_parser("validate", help="measure models against labelled images")
    validate.add_argument("--dataset", required=True, help="folder of images")
    validate.add_argument("--labels", help="label file (default: the format's usual name)")
    validate.add_argument(
        "--format",
        default="synth",
        choices=["synth", "aptos", "eyepacs", "messidor2", "idrid", "refuge", "eyeq"],
    )
    validate.add_argument("--report", required=True, help="output folder for report.json/.html")
    validate.add_argument("--models", help="models folder (default: the installed models)")
    validate.add_argument("--variant", choices=["int8", "fp32"], help="model file variant")
    validate.set_defaults(func=cmd_validate)
