"""``appliance``: the command line; a module per command group, the parser here."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from appliance import __version__, config
from appliance.cli import bench, cameras, common, dicom, models, records, run, users


def cmd_settings(args: argparse.Namespace) -> int:
    if args.markdown:
        sys.stdout.write(config.markdown())
        return 0
    settings = common.settings(args)
    for name, _, _ in config.declared():
        value = getattr(settings, name)
        shown = "***" if name == "api_token" and value else value
        print(f"{name} = {shown!r}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="appliance", description="Retinal screening appliance")
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument("--config", help="TOML settings file (default: $APPLIANCE_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)
    run.add_parsers(sub)
    records.add_capture_parsers(sub)
    cameras.add_parsers(sub)
    records.add_parsers(sub)
    users.add_parsers(sub)
    dicom.add_parsers(sub)
    _add_settings_parser(sub)
    models.add_parsers(sub)
    bench.add_parsers(sub)
    return parser


def _add_settings_parser(sub: Any) -> None:
    settings = sub.add_parser("settings", help="show the effective settings")
    settings.add_argument("--markdown", action="store_true", help="print the settings reference")
    settings.set_defaults(func=cmd_settings)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ValueError as exc:  # bad settings file or value
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
