"""The hot folder a camera exports into.

A file is taken once its size and modification time have stayed the same for
``stable_seconds`` (a camera still writing it is left alone; ``*.part`` and hidden files are
never taken). An optional sidecar ``NAME.json`` next to ``NAME.jpg`` carries identity.
Taken files move to ``processed/``; refused ones to ``rejected/`` with ``NAME.reason.txt``
beside them. When the appliance is out of space, files stay where they are and are retried.
Copies in ``processed/`` are deleted ``keep_processed_days`` after they were taken (the stored
capture is the record; it follows the retention rules), each sweep one 110105 audit event;
``rejected/`` is never emptied by the appliance: nothing else holds those files.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from appliance.audit import Action, AuditEvent, EventID
from appliance.capture.ingest import Incoming, Ingestor
from appliance.domain import Source
from appliance.errors import ApplianceError, OutOfResources, RejectedInput, TooLarge

LOGGER = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".dcm", ".dicom", ""}
MAX_SIDECAR_BYTES = 64 * 1024


@dataclass
class _Seen:
    size: int
    mtime_ns: int
    since: float


class HotFolder:
    def __init__(
        self,
        ingestor: Ingestor,
        inbox: Path,
        *,
        stable_seconds: float = 2.0,
        poll_seconds: float = 0.5,
        max_bytes: int = 512 * 1024 * 1024,
        keep_processed_days: float = 0.0,
    ) -> None:
        self.ingestor = ingestor
        self.keep_processed_days = keep_processed_days  # 0: processed copies are kept
        self._next_prune = 0.0
        self.inbox = Path(inbox)
        self.processed = self.inbox / "processed"
        self.rejected = self.inbox / "rejected"
        self.stable_seconds = stable_seconds
        self.poll_seconds = poll_seconds
        self.max_bytes = max_bytes
        self._seen: dict[str, _Seen] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        for folder in (self.inbox, self.processed, self.rejected):
            folder.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="hotfolder", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.scan()
                if self.keep_processed_days and time.monotonic() >= self._next_prune:
                    self._next_prune = time.monotonic() + 3600
                    self.prune_processed()
            except Exception:
                LOGGER.exception("hot folder scan failed")
            self._stop.wait(self.poll_seconds)

    def prune_processed(self, now: float | None = None) -> int:
        """Delete ``processed/`` copies taken more than ``keep_processed_days`` ago; audited.

        Taken files sit in one folder per UTC day (``processed/YYYYMMDD``); a day's folder goes
        once the whole day is older than the limit. Symbolic links are never followed.
        """
        if not self.keep_processed_days:
            return 0
        moment = datetime.fromtimestamp(time.time() if now is None else now, UTC)
        removed = 0
        for day in os.scandir(self.processed):
            try:
                taken = datetime.strptime(day.name, "%Y%m%d").replace(tzinfo=UTC)
            except ValueError:
                continue
            if not day.is_dir(follow_symlinks=False):
                continue
            if (moment - taken).total_seconds() < (self.keep_processed_days + 1) * 86400:
                continue
            for entry in os.scandir(day.path):
                try:
                    if entry.is_file(follow_symlinks=False) or entry.is_symlink():
                        os.unlink(entry.path)
                        removed += 1
                except OSError as exc:
                    LOGGER.warning("a processed copy could not be deleted: %s", exc.strerror)
            try:
                os.rmdir(day.path)
            except OSError:
                pass  # not empty (e.g. a folder someone put there): left alone
        if removed:
            self.ingestor.audit.log(
                AuditEvent(
                    event_id=EventID.STUDY_DELETED,
                    action=Action.DELETE,
                    user_id="system:hotfolder",
                    detail={
                        "folder": "processed",
                        "files": removed,
                        "older_than_days": self.keep_processed_days,
                    },
                )
            )
        return removed

    def scan(self, now: float | None = None) -> int:
        """One pass over the inbox; returns how many files were taken or refused."""
        now = time.monotonic() if now is None else now
        files: dict[str, os.stat_result] = {}
        links: set[str] = set()
        for entry in os.scandir(self.inbox):
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(info.st_mode):
                files[entry.name] = info
            elif stat.S_ISLNK(info.st_mode):
                links.add(entry.name)  # never followed
        for gone in set(self._seen) - set(files):
            del self._seen[gone]
        handled = 0
        for name, info in sorted(files.items()):
            suffix = Path(name).suffix.lower()
            if (
                name.startswith(".")
                or suffix in (".part", ".json", ".tmp")
                or name.endswith(".reason.txt")
                or not self._stable(name, info, now)
            ):
                continue
            sidecar_name = Path(name).stem + ".json"
            sidecar: Path | None = None
            if sidecar_name in files:
                if not self._stable(sidecar_name, files[sidecar_name], now):
                    continue
                sidecar = self.inbox / sidecar_name
            try:
                taken = self._take(
                    name, info.st_size, sidecar, sidecar_is_link=sidecar_name in links
                )
            except Exception:  # one odd file must not stop the folder; it stays for a retry
                LOGGER.exception(
                    "hot folder: unexpected failure on one file; it stays in the inbox"
                )
                taken = False
            if taken:
                handled += 1
                self._seen.pop(name, None)
                self._seen.pop(sidecar_name, None)
        return handled

    def _stable(self, name: str, info: os.stat_result, now: float) -> bool:
        """True once size and mtime have stayed unchanged for ``stable_seconds``."""
        seen = self._seen.get(name)
        if seen is None or (seen.size, seen.mtime_ns) != (info.st_size, info.st_mtime_ns):
            self._seen[name] = _Seen(info.st_size, info.st_mtime_ns, now)
            return False
        return now - seen.since >= self.stable_seconds

    def _take(
        self, name: str, size: int, sidecar: Path | None, *, sidecar_is_link: bool = False
    ) -> bool:
        """Ingest one stable file. False means "leave it and try again later"."""
        path = self.inbox / name
        try:
            try:
                if Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                    raise RejectedInput(
                        "only JPEG, PNG, TIFF and DICOM files are taken from the hot folder",
                        reason="unsupported_format",
                    )
                if sidecar_is_link:
                    raise RejectedInput(
                        "the sidecar is a symbolic link; identity is read only from real files",
                        reason="bad_sidecar",
                    )
                if size > self.max_bytes:
                    raise TooLarge(
                        f"the file is {size} bytes, over the {self.max_bytes}-byte limit"
                    )
                fields = _read_sidecar(sidecar) if sidecar is not None else None
            except RejectedInput as exc:
                self.ingestor.refuse(
                    Incoming(data=b"", source=Source.HOTFOLDER, user_id="hotfolder"), exc
                )
                raise
            capture = self.ingestor.ingest(
                Incoming(
                    data=path.read_bytes(),
                    source=Source.HOTFOLDER,
                    user_id="hotfolder",
                    fields=fields,
                    detail={"sidecar": sidecar is not None},
                )
            )
        except OutOfResources:
            LOGGER.warning("hot folder: out of space, leaving a file for later")
            return False
        except RejectedInput as exc:
            self._move(path, sidecar, self.rejected, reason=f"{exc.reason}: {exc.message}\n")
            return True
        except ApplianceError:
            LOGGER.exception("hot folder: could not take a file; it stays in the inbox")
            return False
        LOGGER.info("hot folder: capture %d taken", capture.id)
        self._move(path, sidecar, self.processed)
        return True

    def _move(self, path: Path, sidecar: Path | None, folder: Path, reason: str = "") -> None:
        day = folder / datetime.now(UTC).strftime("%Y%m%d")
        day.mkdir(parents=True, exist_ok=True)
        target = _free_name(day, path.name)
        os.replace(path, target)
        if sidecar is not None and sidecar.exists():
            os.replace(sidecar, _free_name(day, target.stem + ".json"))
        if reason:
            (day / (target.name + ".reason.txt")).write_text(reason, encoding="utf-8")


def _read_sidecar(path: Path) -> dict[str, object]:
    if path.stat().st_size > MAX_SIDECAR_BYTES:
        raise RejectedInput("the sidecar JSON is too large", reason="bad_sidecar")
    try:
        value = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as exc:  # bad UTF-8, bad JSON, absurd nesting
        raise RejectedInput(f"the sidecar is not valid JSON: {exc}", reason="bad_sidecar") from None
    if not isinstance(value, dict):
        raise RejectedInput("the sidecar must be a JSON object", reason="bad_sidecar")
    return value


def _free_name(folder: Path, name: str) -> Path:
    target = folder / name
    counter = 1
    while target.exists():
        target = folder / f"{Path(name).stem}-{counter}{Path(name).suffix}"
        counter += 1
    return target
