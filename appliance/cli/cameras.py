"""``appliance cameras``: camera models and their qualification for automated screening."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from appliance.cli.common import open_store


def cmd_cameras_list(args: argparse.Namespace) -> int:
    from appliance.pipeline import cameras

    _, store, _ = open_store(args)
    rows = cameras.cameras(store)
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for row in rows:
            print(f"{row['status']:<11} {row['photographs']:>6}  {row['model']}")
    return 0


def _dr_acceptance(settings: Any) -> dict[str, float]:
    from appliance.inference import find_cards

    for card in find_cards(settings.models_path):
        if card.task == "dr" and card.data.get("acceptance"):
            return dict(card.data["acceptance"])
    raise SystemExit("no DR model card with acceptance targets is installed")


def cmd_cameras_qualify(args: argparse.Namespace) -> int:
    from appliance.pipeline import cameras

    settings, store, trail = open_store(args)
    report = Path(args.report)
    report = report / "report.json" if report.is_dir() else report
    verdict = cameras.qualify(
        store, trail, args.model, report, _dr_acceptance(settings), f"cli:{args.by}"
    )
    print(json.dumps({"qualified": verdict.met, "figures": verdict.figures}, indent=2))
    for failure in verdict.failures:
        print(f"not met: {failure}", file=sys.stderr)
    return 0 if verdict.met else 1


def cmd_cameras_revoke(args: argparse.Namespace) -> int:
    from appliance.pipeline import cameras

    _, store, trail = open_store(args)
    if not cameras.revoke(store, trail, args.model, f"cli:{args.by}"):
        print(f"{args.model} is not qualified", file=sys.stderr)
        return 1
    return 0


def add_parsers(sub: Any) -> None:
    cams = sub.add_parser("cameras", help="camera models and their qualification").add_subparsers(
        dest="action", required=True
    )
    cam_list = cams.add_parser("list", help="camera models seen or qualified")
    cam_list.add_argument("--json", action="store_true")
    cam_list.set_defaults(func=cmd_cameras_list)
    cam_q = cams.add_parser(
        "qualify", help="qualify a camera model on an `appliance validate` report of its photos"
    )
    cam_q.add_argument("model", help='the camera model, "Manufacturer / Model"')
    cam_q.add_argument("--report", required=True, help="report.json (or its folder)")
    cam_q.add_argument("--by", required=True, help="who qualifies it (name, for the audit)")
    cam_q.set_defaults(func=cmd_cameras_qualify)
    cam_r = cams.add_parser("revoke", help="withdraw a camera model's qualification")
    cam_r.add_argument("model")
    cam_r.add_argument("--by", required=True)
    cam_r.set_defaults(func=cmd_cameras_revoke)
