"""``appliance serve`` (the appliance itself) and ``appliance screen`` (files offline)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from appliance.cli import common

LOGGER = logging.getLogger("appliance.cli")


def cmd_serve(args: argparse.Namespace) -> int:
    from appliance.runtime import sdnotify
    from appliance.runtime.services import Services
    from web import create_app
    from web.server import make_server

    settings = common.settings(args)
    common.configure_logging(settings.log_level)
    services = Services(settings)
    services.start()
    try:
        server = make_server(settings, create_app(settings, services))
    except BaseException:
        services.stop()
        raise

    def shutdown(signum: int, frame: Any) -> None:
        LOGGER.info("signal %d: shutting down", signum)
        server.shutdown()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    scheme = "https" if server.tls is not None else "http"
    LOGGER.info("web UI on %s://%s:%d", scheme, settings.web_host, server.port)
    interval = sdnotify.watchdog_interval()
    watchdog = sdnotify.Watchdog(services.alive, interval) if interval else None
    if watchdog is not None:
        watchdog.start()
    sdnotify.notify("READY=1")
    try:
        server.serve()
    finally:
        sdnotify.notify("STOPPING=1")
        if watchdog is not None:
            watchdog.stop()
        services.stop()
    return 0


def cmd_screen(args: argparse.Namespace) -> int:
    from appliance.pipeline.offline import screen_files
    from appliance.runtime.services import limits_from, rules_from, thresholds_from

    settings = common.settings(args)
    args.variant = None
    screener = common.screener(args, settings)
    result = screen_files(
        [Path(name) for name in args.files],
        limits_from(settings),
        thresholds_from(settings),
        rules_from(settings),
        screener,
        Path(args.heatmaps) if args.heatmaps else None,
        oct_fluid=common.oct_fluid(args, settings),
    )
    images, outcome = result["images"], result["visit"]["outcome"]
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for entry in images:
            if "error" in entry:
                print(f"{entry['path']}: cannot analyse ({entry['message']})")
            elif entry.get("gradable"):
                print(f"{entry['path']}: gradable (quality {entry['quality']['score']:.2f})")
            else:
                print(f"{entry['path']}: NOT gradable — " + " ".join(entry["quality"]["guidance"]))
        print(outcome["text"])
        for prompt in outcome["prompts"]:
            print(f"  - {prompt}")
    return 1 if any("error" in entry for entry in images) else 0


def add_parsers(sub: Any) -> None:
    sub.add_parser(
        "serve", help="run the appliance (web UI, DICOM SCP, hot folder, worker)"
    ).set_defaults(func=cmd_serve)

    screen = sub.add_parser("screen", help="analyse image files offline as one patient's visit")
    screen.add_argument("files", nargs="+")
    screen.add_argument("--json", action="store_true", help="print JSON")
    screen.add_argument("--heatmaps", help="folder to write heatmap overlay PNGs into")
    screen.set_defaults(func=cmd_screen)
