"""``appliance users``: web user accounts from the command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from appliance.cli.common import settings


def _accounts(args: argparse.Namespace) -> Any:
    from appliance.audit import AuditTrail
    from appliance.desks.accounts import Accounts
    from appliance.store import Store

    data = settings(args).data_path
    data.mkdir(parents=True, exist_ok=True)  # the first admin is made on a fresh install
    store = Store(data / "appliance.db")
    return Accounts(store, AuditTrail(store, data / "audit.head"))


def _read_password() -> str:
    """Prompt twice on a terminal; otherwise the first line of standard input."""
    import getpass

    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if first != getpass.getpass("Password again: "):
            print("error: the passwords differ", file=sys.stderr)
            raise SystemExit(2)
        return first
    return sys.stdin.readline().rstrip("\r\n")


def _cli_actor() -> str:
    return f"cli:{os.environ.get('USER', 'unknown')}"


def cmd_users_add(args: argparse.Namespace) -> int:
    from appliance.errors import RejectedInput

    accounts = _accounts(args)
    try:
        user = accounts.add(
            args.name,
            args.role,
            _read_password(),
            actor=_cli_actor(),
            full_name=args.full_name,
            credentials=args.credentials,
        )
    except RejectedInput as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    print(f"user {user.username} added with role {user.role}")
    return 0


def cmd_users_list(args: argparse.Namespace) -> int:
    rows = [
        {
            "username": u.username,
            "role": str(u.role),
            "active": u.active,
            "locked_until": u.locked_until,
            "last_login_at": u.last_login_at,
            "full_name": u.full_name,
            "credentials": u.credentials,
        }
        for u in _accounts(args).list()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            state = "active" if row["active"] else "disabled"
            signer = ", ".join(p for p in (row["full_name"], row["credentials"]) if p)
            print(f"{row['username']:<24} {row['role']:<10} {state:<8} {signer}".rstrip())
    return 0


def cmd_users_password(args: argparse.Namespace) -> int:
    from appliance.errors import RejectedInput

    accounts = _accounts(args)
    found = [u for u in accounts.list() if u.username.lower() == args.name.lower()]
    if not found:
        print(f"error: no user {args.name!r}", file=sys.stderr)
        return 2
    try:
        accounts.set_password(found[0].id, _read_password(), actor=_cli_actor())
    except RejectedInput as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    print(f"password of {found[0].username} changed; their sessions are ended")
    return 0


def cmd_users_profile(args: argparse.Namespace) -> int:
    from appliance.errors import RejectedInput

    accounts = _accounts(args)
    found = [u for u in accounts.list() if u.username.lower() == args.name.lower()]
    if not found:
        print(f"error: no user {args.name!r}", file=sys.stderr)
        return 2
    user = found[0]
    full_name = user.full_name if args.full_name is None else args.full_name
    credentials = user.credentials if args.credentials is None else args.credentials
    try:
        accounts.set_profile(user.id, full_name, credentials, actor=_cli_actor())
    except RejectedInput as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    print(f"{user.username}: full name {full_name!r}, credentials {credentials!r}")
    return 0


def add_parsers(sub: Any) -> None:
    users = sub.add_parser("users", help="web user accounts").add_subparsers(
        dest="action", required=True
    )
    users_add = users.add_parser(
        "add", help="add a user (password prompted, or read from standard input)"
    )
    users_add.add_argument("name")
    users_add.add_argument("--role", required=True, choices=("operator", "clinician", "admin"))
    users_add.add_argument(
        "--full-name", default="", help="printed on what they sign (a clinician needs it to sign)"
    )
    users_add.add_argument("--credentials", default="", help='e.g. "MD, FRCOphth"')
    users_add.set_defaults(func=cmd_users_add)
    users_list = users.add_parser("list", help="list users, roles and state")
    users_list.add_argument("--json", action="store_true")
    users_list.set_defaults(func=cmd_users_list)
    users_password = users.add_parser(
        "password", help="set a user's password (prompted, or from standard input)"
    )
    users_password.add_argument("name")
    users_password.set_defaults(func=cmd_users_password)
    users_profile = users.add_parser(
        "profile", help="set the full name and credentials a user's signature prints"
    )
    users_profile.add_argument("name")
    users_profile.add_argument("--full-name", help="e.g. 'Dr A. Grader' (unchanged if omitted)")
    users_profile.add_argument("--credentials", help="e.g. 'MD, FRCOphth' (unchanged if omitted)")
    users_profile.set_defaults(func=cmd_users_profile)
