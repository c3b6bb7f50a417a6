"""``appliance worklist / echo``: the DICOM nodes the appliance talks to."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from appliance import config
from appliance.cli import common


def _nodes(settings: config.Settings) -> dict[str, Any]:
    from appliance.desks.admin import echo_nodes

    return dict(echo_nodes(settings))


def cmd_worklist(args: argparse.Namespace) -> int:
    from dataclasses import asdict
    from datetime import date

    from appliance.dicom.worklist import NodeUnreachable, query_worklist

    settings = common.settings(args)
    node = _nodes(settings).get("worklist")
    if node is None:
        print("no worklist configured (worklist_host, worklist_ae_title)", file=sys.stderr)
        return 2
    try:
        items = query_worklist(
            node,
            station_ae=settings.dicom_ae_title,
            date=args.date or date.today().strftime("%Y%m%d"),
        )
    except NodeUnreachable as exc:
        print(f"worklist: {exc.message}", file=sys.stderr)
        return 1
    if args.json:
        json.dump([asdict(item) for item in items], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for item in items:
            print(
                f"{item.start_time[:4] or '----'} {item.patient_id:<16} "
                f"{item.accession_number:<16} {item.description}"
            )
    return 0


def cmd_echo(args: argparse.Namespace) -> int:
    from appliance.dicom.worklist import NodeUnreachable, echo

    settings = common.settings(args)
    nodes = _nodes(settings)
    if args.name not in nodes:
        print(
            f"unknown node {args.name!r}; configured: {', '.join(nodes) or 'none'}", file=sys.stderr
        )
        return 2
    try:
        status = echo(nodes[args.name])
    except NodeUnreachable as exc:
        print(f"{args.name}: {exc.message}", file=sys.stderr)
        return 1
    print(f"{args.name}: C-ECHO status 0x{status:04X}")
    return 0 if status == 0 else 1


def add_parsers(sub: Any) -> None:
    worklist = sub.add_parser("worklist", help="today's Modality Worklist for this station")
    worklist.add_argument("--json", action="store_true")
    worklist.add_argument("--date", help="YYYYMMDD (default: today)")
    worklist.set_defaults(func=cmd_worklist)

    echo_parser = sub.add_parser(
        "echo", help="C-ECHO a configured node (a destination or 'worklist')"
    )
    echo_parser.add_argument("name")
    echo_parser.set_defaults(func=cmd_echo)
