"""``appliance captures / audit / db / outbox``: what the appliance holds."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from typing import Any

from appliance.cli import common


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


def add_capture_parsers(sub: Any) -> None:
    captures = sub.add_parser("captures", help="stored captures").add_subparsers(
        dest="action", required=True
    )
    listing = captures.add_parser("list", help="list captures and their quality verdicts")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_captures_list)


def add_parsers(sub: Any) -> None:
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
