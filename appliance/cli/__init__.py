"""``appliance``: the command line."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from appliance import __version__, config
from appliance.cli import cameras, common, users

LOGGER = logging.getLogger(__name__)


# -- commands ---------------------------------------------------------------------------------
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
    screener = _screener(args, settings)
    result = screen_files(
        [Path(name) for name in args.files],
        limits_from(settings),
        thresholds_from(settings),
        rules_from(settings),
        screener,
        Path(args.heatmaps) if args.heatmaps else None,
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


def cmd_captures_list(args: argparse.Namespace) -> int:
    _, store, _ = common.open_store(args)
    rows = store.query(
        "SELECT c.id, c.source, c.media_type, c.received_at, c.status, c.status_reason, "
        "c.laterality, c.sop_instance_uid, c.content_sha256, q.gradable, q.score, q.reasons "
        "FROM captures c LEFT JOIN quality_reports q ON q.capture_pk = c.id ORDER BY c.id"
    )
    for row in rows:
        row["gradable"] = None if row["gradable"] is None else bool(row["gradable"])
        row["reasons"] = json.loads(row["reasons"]) if row["reasons"] else None
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for row in rows:
            verdict = {True: "gradable", False: "not gradable", None: "-"}[row["gradable"]]
            print(
                f"{row['id']:>6} {row['received_at']} {row['source']:<9} "
                f"{row['status']:<9} {verdict}"
            )
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    _, store, trail = common.open_store(args)
    result = trail.verify()
    if result.ok:
        print(f"audit trail intact: {result.checked} entries verified")
        return 0
    print(f"AUDIT TRAIL BROKEN at entry {result.first_bad_seq}: {result.problem}", file=sys.stderr)
    return 1


def cmd_audit_export(args: argparse.Namespace) -> int:
    from appliance.audit import export_jsonl

    _, _, trail = common.open_store(args)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            count = export_jsonl(trail, fh)
    else:
        count = export_jsonl(trail, sys.stdout)
    print(f"exported {count} audit events", file=sys.stderr)
    return 0


def cmd_db_check(args: argparse.Namespace) -> int:
    settings, store, _ = common.open_store(args)
    problems = [line for line in store.integrity_check() if line != "ok"]
    for row in store.query("SELECT id, file_path, content_sha256 FROM captures ORDER BY id"):
        path = (settings.data_path / row["file_path"]).resolve()
        if not path.is_relative_to(settings.data_path) or not path.is_file():
            problems.append(f"capture {row['id']}: file missing")
            continue
        if args.hashes and hashlib.sha256(path.read_bytes()).hexdigest() != row["content_sha256"]:
            problems.append(f"capture {row['id']}: file content does not match its hash")
    for problem in problems:
        print(problem, file=sys.stderr)
    print("database ok" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


def cmd_outbox_status(args: argparse.Namespace) -> int:
    from appliance.outbox import commitment, queue

    settings, store, _ = common.open_store(args)
    summary = queue.status(store)
    committing = {d.name for d in settings.destinations if d.storage_commitment}
    counts = commitment.summary(store)
    for name in sorted(committing | set(counts)):
        zero = {"committed": 0, "awaiting_commitment": 0, "not_committed": 0}
        summary.setdefault(name, {})["commitment"] = counts.get(name, zero)
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for destination, states in summary.items():
            commit = states.pop("commitment", None)
            line = ", ".join(f"{state} {info['count']}" for state, info in states.items())
            if commit is not None:
                line += "; " if line else ""
                line += ", ".join(f"{key.replace('_', ' ')} {n}" for key, n in commit.items())
            print(f"{destination}: {line}")
        if not summary:
            print("outbox empty")
    return 0


def cmd_outbox_retry(args: argparse.Namespace) -> int:
    from appliance.desks.admin import retry_dead

    _, store, trail = common.open_store(args)
    user = f"cli:{os.environ.get('USER', 'unknown')}"
    count = retry_dead(store, trail, args.destination, user=user)
    print(f"{count} dead-lettered job(s) queued again")
    return 0


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


def cmd_synth(args: argparse.Namespace) -> int:
    from appliance.synth import dataset

    return int(dataset.run(args))


def _screener(args: argparse.Namespace, settings: config.Settings) -> Any:
    from appliance.inference import Screener
    from appliance.inference.runtime import choose_providers

    models = Path(args.models) if getattr(args, "models", None) else settings.models_path
    providers = choose_providers(
        settings.model_providers, settings.trt_cache_path, settings.trt_fp16
    )
    return Screener.load(
        models, args.variant or settings.model_variant, providers, settings.model_threads
    )


def cmd_validate(args: argparse.Namespace) -> int:
    from appliance.validate import run_validation

    settings = common.settings(args)
    screener = _screener(args, settings)
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


def cmd_bench_models(args: argparse.Namespace) -> int:
    from appliance.tools.bench_models import bench_models

    settings = common.settings(args)
    models = Path(args.models) if args.models else settings.models_path
    return bench_models(models, runs=args.runs, threads=args.threads)


def cmd_bench_screen(args: argparse.Namespace) -> int:
    from appliance.tools.bench_screen import bench_screen

    return bench_screen(n=args.n, as_json=args.json)


def cmd_bench_ingest(args: argparse.Namespace) -> int:
    from appliance.tools.bench_ingest import bench_ingest

    return bench_ingest(n=args.n, width=args.width, height=args.height, rounds=args.rounds)


def cmd_bench_forward(args: argparse.Namespace) -> int:
    from appliance.tools.bench_forward import bench_forward

    return bench_forward(n=args.n, width=args.width, height=args.height, rounds=args.rounds)


# -- parser ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="appliance", description="Retinal screening appliance")
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument("--config", help="TOML settings file (default: $APPLIANCE_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser(
        "serve", help="run the appliance (web UI, DICOM SCP, hot folder, worker)"
    ).set_defaults(func=cmd_serve)

    screen = sub.add_parser("screen", help="analyse image files offline as one patient's visit")
    screen.add_argument("files", nargs="+")
    screen.add_argument("--json", action="store_true", help="print JSON")
    screen.add_argument("--heatmaps", help="folder to write heatmap overlay PNGs into")
    screen.set_defaults(func=cmd_screen)

    captures = sub.add_parser("captures", help="stored captures").add_subparsers(
        dest="action", required=True
    )
    listing = captures.add_parser("list", help="list captures and their quality verdicts")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_captures_list)

    cameras.add_parsers(sub)

    audit = sub.add_parser("audit", help="the audit trail").add_subparsers(
        dest="action", required=True
    )
    audit.add_parser(
        "verify", help="walk the hash chain; non-zero exit on the first bad entry"
    ).set_defaults(func=cmd_audit_verify)
    export = audit.add_parser("export", help="write the audit trail out")
    export.add_argument("--format", choices=["jsonl"], default="jsonl")
    export.add_argument("--out", help="file to write (default: standard output)")
    export.set_defaults(func=cmd_audit_export)

    db = sub.add_parser("db", help="database maintenance").add_subparsers(
        dest="action", required=True
    )
    check = db.add_parser("check", help="SQLite integrity_check and every capture's file present")
    check.add_argument(
        "--no-hashes", dest="hashes", action="store_false", help="skip re-hashing files"
    )
    check.set_defaults(func=cmd_db_check)

    outbox = sub.add_parser("outbox", help="the forwarding queue").add_subparsers(
        dest="action", required=True
    )
    outbox_status = outbox.add_parser("status", help="jobs per destination and state")
    outbox_status.add_argument("--json", action="store_true")
    outbox_status.set_defaults(func=cmd_outbox_status)
    outbox_retry = outbox.add_parser("retry", help="queue dead-lettered jobs again")
    outbox_retry.add_argument("--dead-letter", action="store_true", required=True)
    outbox_retry.add_argument("--destination", help="only this destination")
    outbox_retry.set_defaults(func=cmd_outbox_retry)

    users.add_parsers(sub)

    worklist = sub.add_parser("worklist", help="today's Modality Worklist for this station")
    worklist.add_argument("--json", action="store_true")
    worklist.add_argument("--date", help="YYYYMMDD (default: today)")
    worklist.set_defaults(func=cmd_worklist)

    echo_parser = sub.add_parser(
        "echo", help="C-ECHO a configured node (a destination or 'worklist')"
    )
    echo_parser.add_argument("name")
    echo_parser.set_defaults(func=cmd_echo)

    settings = sub.add_parser("settings", help="show the effective settings")
    settings.add_argument("--markdown", action="store_true", help="print the settings reference")
    settings.set_defaults(func=cmd_settings)

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

    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="action", required=True)
    bench_models = bench.add_parser("models", help="per-model latency, FP32 vs INT8")
    bench_models.add_argument("--models", help="models folder (default: the installed models)")
    bench_models.add_argument("--runs", type=int, default=50)
    bench_models.add_argument("--threads", type=int, default=2)
    bench_models.set_defaults(func=cmd_bench_models)
    bench_screen = bench.add_parser("screen", help="capture-to-result latency, RSS, start-up")
    bench_screen.add_argument("--n", type=int, default=30, help="photos per variant")
    bench_screen.add_argument("--json", action="store_true")
    bench_screen.set_defaults(func=cmd_bench_screen)
    ingest = bench.add_parser("ingest", help="C-STORE throughput: appliance SCP vs dcmtk storescp")
    ingest.add_argument("--n", type=int, default=50, help="OP files per round")
    ingest.add_argument("--width", type=int, default=1632)
    ingest.add_argument("--height", type=int, default=1224)
    ingest.add_argument("--rounds", type=int, default=3)
    ingest.set_defaults(func=cmd_bench_ingest)
    forward = bench.add_parser("forward", help="C-STORE to Orthanc: outbox vs dcmtk storescu")
    forward.add_argument("--n", type=int, default=50, help="OP files per round")
    forward.add_argument("--width", type=int, default=1632)
    forward.add_argument("--height", type=int, default=1224)
    forward.add_argument("--rounds", type=int, default=3)
    forward.set_defaults(func=cmd_bench_forward)
    return parser


def _add_synth_arguments(parser: argparse.ArgumentParser) -> None:
    from appliance.synth import dataset

    dataset.add_arguments(parser)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ValueError as exc:  # bad settings file or value
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
