"""User accounts, password hashes (argon2id), lockout and server-side web sessions.

A session is a random token held by the browser; only its SHA-256 is stored. A session ends at
logout, after the idle limit, or when its user is disabled — an ended session is refused even
if its cookie is replayed. Every login, failure, lockout and logout is an audit event (110114).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import cached_property
from typing import Any, NoReturn

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from appliance.audit import AuditEvent, AuditTrail, EventType, Outcome, events
from appliance.desks.signers import check_profile
from appliance.errors import ApplianceError, RejectedInput
from appliance.store import Store, Tx, utcnow

USERNAME = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{1,63}$")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # argon2 hashes all of it: a bounded input keeps a login cheap to refuse
TOUCH_EVERY = timedelta(seconds=20)  # last_seen is written at most this often per session


class Role(StrEnum):
    OPERATOR = "operator"
    CLINICIAN = "clinician"
    ADMIN = "admin"


@dataclass(frozen=True)
class User:
    id: int
    username: str
    role: Role
    active: bool
    locked_until: str | None = None
    last_login_at: str | None = None
    created_at: str = ""
    full_name: str = ""  # printed on what they sign, e.g. "Dr A. Grader"
    credentials: str = ""  # e.g. "MD, FRCOphth"

    @property
    def can_sign(self) -> bool:
        """A signature needs the signer's printed name and credentials (21 CFR 11.50)."""
        return bool(self.full_name.strip() and self.credentials.strip())


@dataclass(frozen=True)
class Session:
    id: int
    user: User
    created_at: str
    last_seen_at: str


class SignatureRefused(ApplianceError):
    """The password re-entered to sign was wrong, or the account may not sign now."""

    http_status = 403
    reason = "signature_refused"


class LoginRefused(ApplianceError):
    """Wrong name or password, locked or disabled account: one message for all of them."""

    http_status = 401
    reason = "login_refused"


def _now() -> datetime:
    return datetime.now(UTC)


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _user(row: dict[str, Any]) -> User:
    return User(
        id=int(row["id"]),
        username=str(row["username"]),
        role=Role(row["role"]),
        active=bool(row["active"]),
        locked_until=row.get("locked_until"),
        last_login_at=row.get("last_login_at"),
        created_at=str(row.get("created_at") or ""),
        full_name=str(row.get("full_name") or ""),
        credentials=str(row.get("credentials") or ""),
    )


class Accounts:
    def __init__(
        self,
        store: Store,
        audit: AuditTrail,
        *,
        idle_minutes: int = 15,
        lockout_failures: int = 5,
        lockout_minutes: int = 15,
    ) -> None:
        self.store = store
        self.audit = audit
        self.idle = timedelta(minutes=idle_minutes)
        self.lockout_failures = lockout_failures
        self.lockout = timedelta(minutes=lockout_minutes)
        self.hasher = PasswordHasher()  # argon2id, library defaults (RFC 9106 low-memory)

    @cached_property
    def _dummy_hash(self) -> str:
        """What an unknown or refused name is checked against (made at first need, not at
        start-up: one argon2 hash costs ~0.1 s)."""
        return self.hasher.hash(secrets.token_hex(16))

    # -- administration -----------------------------------------------------------------
    def add(
        self,
        username: str,
        role: str,
        password: str,
        *,
        actor: str,
        full_name: str = "",
        credentials: str = "",
    ) -> User:
        if not USERNAME.match(username):
            raise RejectedInput(
                "a user name starts with a letter and has 2-64 letters, digits, '.', '_' or '-'",
                reason="bad_username",
            )
        self._check_role(role)
        self._check_password(password)
        full_name, credentials = check_profile(full_name, credentials)
        with self.store.write() as tx:
            if tx.one("SELECT id FROM users WHERE username = ?", (username,)):
                raise RejectedInput(f"the user {username!r} already exists", reason="user_exists")
            now = utcnow()
            pk = tx.insert(
                "users",
                {
                    "username": username,
                    "role": role,
                    "password_hash": self.hasher.hash(password),
                    "full_name": full_name,
                    "credentials": credentials,
                    "created_at": now,
                    "updated_at": now,
                },
            )
            self._security(
                tx,
                actor,
                "user_added",
                {
                    "user": username,
                    "role": role,
                    "full_name": full_name,
                    "credentials": credentials,
                },
            )
        found = self.get(pk)
        assert found is not None
        return found

    def set_role(self, user_pk: int, role: str, *, actor: str) -> None:
        self._check_role(role)
        with self.store.write() as tx:
            user = self._row(tx, user_pk)
            if user["role"] == Role.ADMIN and role != Role.ADMIN:
                self._keep_an_admin(tx, user_pk)
            tx.execute(
                "UPDATE users SET role = ?, updated_at = ? WHERE id = ?", (role, utcnow(), user_pk)
            )
            self._security(tx, actor, "role_changed", {"user": user["username"], "role": role})

    def set_active(self, user_pk: int, active: bool, *, actor: str) -> None:
        with self.store.write() as tx:
            user = self._row(tx, user_pk)
            if not active and user["role"] == Role.ADMIN:
                self._keep_an_admin(tx, user_pk)
            tx.execute(
                "UPDATE users SET active = ?, failed_logins = 0, locked_until = NULL, "
                "updated_at = ? WHERE id = ?",
                (int(active), utcnow(), user_pk),
            )
            if not active:
                self._end_sessions(tx, user_pk, "disabled")
            self._security(
                tx,
                actor,
                "user_enabled" if active else "user_disabled",
                {"user": user["username"]},
            )

    def set_password(self, user_pk: int, password: str, *, actor: str) -> None:
        self._check_password(password)
        with self.store.write() as tx:
            user = self._row(tx, user_pk)
            tx.execute(
                "UPDATE users SET password_hash = ?, failed_logins = 0, locked_until = NULL, "
                "updated_at = ? WHERE id = ?",
                (self.hasher.hash(password), utcnow(), user_pk),
            )
            self._end_sessions(tx, user_pk, "password_changed")
            self._security(tx, actor, "password_set", {"user": user["username"]})

    def set_profile(self, user_pk: int, full_name: str, credentials: str, *, actor: str) -> None:
        """The name and credentials printed on what the user signs (audited)."""
        full_name, credentials = check_profile(full_name, credentials)
        with self.store.write() as tx:
            user = self._row(tx, user_pk)
            tx.execute(
                "UPDATE users SET full_name = ?, credentials = ?, updated_at = ? WHERE id = ?",
                (full_name, credentials, utcnow(), user_pk),
            )
            detail = {"user": user["username"], "full_name": full_name, "credentials": credentials}
            self._security(tx, actor, "profile_set", detail)

    def confirm_signature(self, user_pk: int, password: str, *, address: str, about: str) -> User:
        """Check the password re-entered to sign (21 CFR 11.200): the user, or SignatureRefused.

        A wrong password counts toward the login lockout; the failure that locks the account
        also ends its sessions. Every refusal is audited (``events.signature_refused``); the
        signature itself is audited by whoever records it. ``about``: what was to be signed.
        """
        row = self.store.one("SELECT * FROM users WHERE id = ?", (user_pk,))
        if row is None:
            raise SignatureRefused("There is no such user.")
        right = len(password) <= MAX_PASSWORD and self._verify(row["password_hash"], password)
        locked = bool(row["locked_until"]) and _parse(row["locked_until"]) > _now()
        cause = "disabled" if not row["active"] else "locked" if locked else ""
        cause = cause or ("" if right else "wrong_password")
        if not cause:
            return _user(row)
        detail: dict[str, Any] = {"cause": cause, "signing": about}
        with self.store.write() as tx:
            if cause == "wrong_password":
                failures, locked_until = self._count_failure(tx, row)
                detail["failures"] = failures
                if locked_until:
                    detail["locked_until"] = locked_until
                    self._end_sessions(tx, user_pk, "locked")
            self.audit.record(
                tx, events.signature_refused(events.Who(row["username"], address), detail)
            )
        if cause == "wrong_password" and "locked_until" not in detail:
            raise SignatureRefused("The password is wrong: not signed.")
        raise SignatureRefused(
            "Your account is locked after too many wrong passwords: not signed. "
            "Try again later, or ask an admin."
        )

    def get(self, user_pk: int) -> User | None:
        row = self.store.one("SELECT * FROM users WHERE id = ?", (user_pk,))
        return _user(row) if row else None

    def list(self) -> list[User]:
        return [_user(row) for row in self.store.query("SELECT * FROM users ORDER BY username")]

    def count(self, role: Role | None = None) -> int:
        if role is None:
            return int(self.store.scalar("SELECT count(*) FROM users") or 0)
        return int(
            self.store.scalar(
                "SELECT count(*) FROM users WHERE role = ? AND active = 1", (str(role),)
            )
            or 0
        )

    # -- login and sessions -------------------------------------------------------------
    def login(self, username: str, password: str, *, address: str) -> tuple[User, str]:
        """Check the password and open a new session; returns the user and the session token.

        Wrong, unknown, locked and disabled all raise the same ``LoginRefused`` message; the
        audit event keeps the real cause.
        """
        row = self.store.one("SELECT * FROM users WHERE username = ?", (username,))
        now = _now()
        # One password check on every path (unknown, disabled, locked, wrong, right), made
        # before any of them is told apart: the answer's timing says nothing about the account.
        hashed = row["password_hash"] if row is not None else self._dummy_hash
        right = self._verify(hashed, password) if len(password) <= MAX_PASSWORD else False
        if row is None:
            self._failed(None, username, address, "unknown_user")
        if not row["active"]:
            self._failed(row, username, address, "disabled")
        if row["locked_until"] and _parse(row["locked_until"]) > now:
            self._failed(row, username, address, "locked")
        if not right:
            self._failed(row, username, address, "wrong_password", count=True)
        token = secrets.token_urlsafe(32)
        with self.store.write() as tx:
            stamp = _stamp(now)
            tx.execute(
                "UPDATE users SET failed_logins = 0, locked_until = NULL, last_login_at = ? "
                "WHERE id = ?",
                (stamp, row["id"]),
            )
            if self.hasher.check_needs_rehash(row["password_hash"]):
                tx.execute(
                    "UPDATE users SET password_hash = ? WHERE id = ?",
                    (self.hasher.hash(password), row["id"]),
                )
            tx.insert(
                "web_sessions",
                {
                    "token_sha256": _digest(token),
                    "user_pk": row["id"],
                    "address": address,
                    "created_at": stamp,
                    "last_seen_at": stamp,
                },
            )
            self._authentication(
                tx, EventType.LOGIN, row["username"], address, {"role": row["role"]}
            )
        user = self.get(int(row["id"]))
        assert user is not None
        return user, token

    def resume(self, token: str, *, touch: bool = True) -> Session | None:
        """The live session for ``token``, or None; ends it (audited) when it has gone idle."""
        if not token:
            return None
        row = self.store.one(
            "SELECT s.id AS sid, s.created_at AS s_created, s.last_seen_at, s.ended_at, "
            "u.* FROM web_sessions s JOIN users u ON u.id = s.user_pk WHERE s.token_sha256 = ?",
            (_digest(token),),
        )
        if row is None or row["ended_at"] is not None:
            return None
        now = _now()
        if not row["active"]:
            self.end(token, "disabled")
            return None
        if now - _parse(row["last_seen_at"]) > self.idle:
            self.end(token, "idle")
            return None
        last_seen = row["last_seen_at"]
        if touch and now - _parse(last_seen) > TOUCH_EVERY:
            last_seen = _stamp(now)
            with self.store.write() as tx:
                tx.execute(
                    "UPDATE web_sessions SET last_seen_at = ? WHERE id = ? AND ended_at IS NULL",
                    (last_seen, row["sid"]),
                )
        return Session(
            id=int(row["sid"]),
            user=_user(row),
            created_at=row["s_created"],
            last_seen_at=last_seen,
        )

    def end(self, token: str, reason: str, *, address: str = "") -> bool:
        """End a session (logout, idle, disabled); True when it was still open."""
        with self.store.write() as tx:
            row = tx.one(
                "SELECT s.id, u.username FROM web_sessions s JOIN users u ON u.id = s.user_pk "
                "WHERE s.token_sha256 = ? AND s.ended_at IS NULL",
                (_digest(token),),
            )
            if row is None:
                return False
            tx.execute(
                "UPDATE web_sessions SET ended_at = ?, end_reason = ? WHERE id = ?",
                (utcnow(), reason, row["id"]),
            )
            self._authentication(tx, EventType.LOGOUT, row["username"], address, {"reason": reason})
        return True

    # -- who was refused a page, who was shown what --------------------------------------
    def record_access(self, event: AuditEvent) -> None:
        """A page refused (``events.access_denied``) or PHI shown (``events.viewed``)."""
        self.audit.log(event)

    # -- internals ----------------------------------------------------------------------
    def _verify(self, hashed: str, password: str) -> bool:
        try:
            return bool(self.hasher.verify(hashed, password))
        except (VerificationError, InvalidHashError):
            return False

    def _failed(
        self,
        row: dict[str, Any] | None,
        username: str,
        address: str,
        cause: str,
        *,
        count: bool = False,
    ) -> NoReturn:
        detail: dict[str, Any] = {"cause": cause}
        with self.store.write() as tx:
            if row is not None and count:
                _, locked_until = self._count_failure(tx, row)
                if locked_until:
                    detail["locked_until"] = locked_until
            # an unknown name may be a mistyped password: never write it to the trail
            user_id = username if row is not None else "unknown"
            self._authentication(
                tx, EventType.LOGIN, user_id, address, detail, Outcome.MINOR_FAILURE
            )
        raise LoginRefused("the user name or password is wrong, or the account is locked")

    def _count_failure(self, tx: Tx, row: dict[str, Any]) -> tuple[int, str | None]:
        """One more wrong password (login or signature); locks the account at the limit.
        Returns the failures counted (0 once it locked) and when the lock ends."""
        current = tx.one("SELECT failed_logins FROM users WHERE id = ?", (row["id"],))
        failures = int(current["failed_logins"] if current else 0) + 1
        locked_until = None
        if failures >= self.lockout_failures:
            locked_until = _stamp(_now() + self.lockout)
            failures = 0
        tx.execute(
            "UPDATE users SET failed_logins = ?, locked_until = ? WHERE id = ?",
            (failures, locked_until, row["id"]),
        )
        return failures, locked_until

    def _authentication(
        self,
        tx: Tx,
        event_type: EventType,
        user_id: str,
        address: str,
        detail: dict[str, Any],
        outcome: Outcome = Outcome.SUCCESS,
    ) -> None:
        """A login, failed login or logout (110114) in the caller's transaction."""
        self.audit.record(
            tx,
            events.authentication(event_type, events.Who(user_id, address), detail, outcome),
        )

    def _end_sessions(self, tx: Tx, user_pk: int, reason: str) -> None:
        tx.execute(
            "UPDATE web_sessions SET ended_at = ?, end_reason = ? "
            "WHERE user_pk = ? AND ended_at IS NULL",
            (utcnow(), reason, user_pk),
        )

    def _row(self, tx: Tx, user_pk: int) -> dict[str, Any]:
        row = tx.one("SELECT * FROM users WHERE id = ?", (user_pk,))
        if row is None:
            raise RejectedInput("no such user", reason="no_such_user")
        return row

    def _keep_an_admin(self, tx: Tx, user_pk: int) -> None:
        others = tx.one(
            "SELECT count(*) AS n FROM users WHERE role = 'admin' AND active = 1 AND id != ?",
            (user_pk,),
        )
        if not others or not others["n"]:
            raise RejectedInput(
                "this is the last active admin: add another admin first", reason="last_admin"
            )

    def _security(self, tx: Tx, actor: str, change: str, detail: dict[str, Any]) -> None:
        self.audit.record(
            tx,
            events.configuration_changed(events.Who(actor), change, detail),
        )

    @staticmethod
    def _check_role(role: str) -> None:
        if role not in {r.value for r in Role}:
            raise RejectedInput("role must be operator, clinician or admin", reason="bad_role")

    @staticmethod
    def _check_password(password: str) -> None:
        if len(password) < MIN_PASSWORD:
            raise RejectedInput(
                f"a password needs at least {MIN_PASSWORD} characters", reason="weak_password"
            )
        if len(password) > MAX_PASSWORD:
            raise RejectedInput(
                f"a password has at most {MAX_PASSWORD} characters", reason="weak_password"
            )
