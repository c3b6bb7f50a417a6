"""The SQLite database: WAL, ``synchronous=FULL``, migrations, one writer, many readers.

All writes go through :meth:`Store.write`, which serialises them on one connection with
``BEGIN IMMEDIATE`` and commits once; everything written inside one ``with`` block (a change
and the audit event that records it) lands together or not at all.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from appliance.store.migrations import MIGRATIONS

LOGGER = logging.getLogger(__name__)


def utcnow() -> str:
    """ISO 8601 UTC with microseconds; sorts as text."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


class Tx:
    """An open write transaction. Only valid inside ``with store.write() as tx``."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db
        self._after_commit: list[Callable[[], None]] = []
        self.memo: dict[str, Any] = {}  # per-transaction state for after-commit callbacks

    def insert(self, table: str, row: dict[str, Any]) -> int:
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        cursor = self.db.conn.execute(
            f"INSERT INTO {table} ({columns}) VALUES ({marks})", tuple(row.values())
        )
        return int(cursor.lastrowid or 0)

    def execute(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> sqlite3.Cursor:
        return self.db.conn.execute(sql, params)

    def one(self, sql: str, params: tuple[Any, ...] = ()) -> dict[str, Any] | None:
        rows = list(self.db.query(sql, params))
        return rows[0] if rows else None

    def after_commit(self, callback: Callable[[], None]) -> None:
        self._after_commit.append(callback)


class Store:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write_lock = threading.RLock()
        self._local = threading.local()
        self._writer = self._connect(readonly=False)
        self._migrate()

    def _connect(self, *, readonly: bool) -> sqlite3.Connection:
        if readonly:
            conn = sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, timeout=30, check_same_thread=False
            )
        else:
            conn = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def _migrate(self) -> None:
        conn = self._writer
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise RuntimeError(
                f"database {self.path} has schema version {version}, newer than this software "
                f"({len(MIGRATIONS)}); refusing to start"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            LOGGER.info("applying schema migration %d", number)
            with self._write_lock:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for statement in _split(script):
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version={number}")
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise

    @property
    def schema_version(self) -> int:
        return int(self._writer.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def write(self) -> Iterator[Tx]:
        """The one way to change the database."""
        with self._write_lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            tx = Tx(sqlite_utils.Database(conn, execute_plugins=False))
            try:
                yield tx
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            for callback in tx._after_commit:
                callback()

    def reader(self) -> sqlite_utils.Database:
        """A read-only connection for the calling thread."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite_utils.Database(self._connect(readonly=True), execute_plugins=False)
            self._local.db = db
        return db

    def query(
        self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()
    ) -> list[dict[str, Any]]:
        return list(self.reader().query(sql, params))

    def one(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> dict[str, Any] | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def scalar(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        row = self.reader().execute(sql, params).fetchone()
        return row[0] if row else None

    def integrity_check(self) -> list[str]:
        return [row[0] for row in self._writer.execute("PRAGMA integrity_check").fetchall()]

    def close(self) -> None:
        with self._write_lock:
            self._writer.close()
        db = getattr(self._local, "db", None)
        if db is not None:
            db.conn.close()
            self._local.db = None


def _split(script: str) -> list[str]:
    """Split a migration into statements; triggers keep their inner semicolons."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        raise ValueError(f"incomplete SQL statement in migration: {buffer.strip()[:60]}")
    return statements
