"""The hot folder a camera exports into.

A file is taken once its size and modification time have stayed the same for
``stable_seconds`` (a camera still writing it is left alone; ``*.part`` and hidden files are
never taken). An optional sidecar ``NAME.json`` next to ``NAME.jpg`` carries identity.
A Heidelberg ``.vol`` export is read and turned into the OPT object a camera would send
(``capture/vendor_oct.py``: header checked against the limits first; identity from the sidecar,
the station's selection or the export's own Patient ID), then ingested like one; the export
itself is moved like any file, and its SHA-256 is in the capture's audit event.
Taken files move to ``processed/``; refused ones to ``rejected/`` with ``NAME.reason.txt``
beside them (the reason, and the original name). A name too long to keep with a note beside
it (over ``NAME_KEEP_BYTES``) is moved under a generated name; its note records the original
(``NAME.reason.txt``, or ``NAME.name.txt`` for a taken file).

``processed/`` and ``rejected/`` and their day folders are opened without following links
(``O_NOFOLLOW``, every step relative to its parent's descriptor): one that is a symbolic link
or not a folder is replaced by a real folder (a link is removed, anything else renamed to a
hidden ``.NAME.displaced-…``), with a security alert; the appliance keeps running, since anyone
who can write to the camera share could otherwise stop it. Symbolic links, FIFOs, folders and
other odd entries in the inbox are never opened: each gets one notice (a log line and an audit
event) while it stays there.

A file that was stored but could not be moved, or that failed in an unexpected way, is held:
one notice, then it is left alone until it changes or the appliance restarts. When the
appliance is out of space, files stay where they are and are retried.
Copies in ``processed/`` are deleted ``keep_processed_days`` after they were taken (the stored
capture is the record; it follows the retention rules), each sweep one 110105 audit event;
``rejected/`` is never emptied by the appliance: nothing else holds those files.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import stat
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from appliance.audit import EventID, Outcome, events
from appliance.capture import nofollow, vendor_oct
from appliance.capture.ingest import Incoming, Ingestor, identity_from_fields
from appliance.domain import PatientInfo, Source
from appliance.errors import (
    ApplianceError,
    OutOfResources,
    RejectedInput,
    TooLarge,
    UnsupportedFormat,
)
from appliance.loops import BackgroundLoop

LOGGER = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".dcm", ".dicom", ""}
MAX_SIDECAR_BYTES = 64 * 1024
# Longest name (UTF-8 bytes) kept as it is: with "-NN" and ".reason.txt" it stays under
# NAME_MAX (255). Longer names are moved under a generated one.
NAME_KEEP_BYTES = 200
OUTPUTS = ("processed", "rejected")
NOTES = (".reason.txt", ".name.txt")
USER = "system:hotfolder"
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,10}")
_NOT_A_FOLDER = (errno.ELOOP, errno.ENOTDIR)


@dataclass
class _Seen:
    size: int
    mtime_ns: int
    since: float


def printable(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 written as ``\\xNN``."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


class HotFolder(BackgroundLoop):
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
        self._held: dict[str, tuple[int, int]] = {}  # name → (size, mtime_ns) left alone
        self._noticed: dict[str, str] = {}  # odd entry name → kind, announced once
        self._waiting: set[str] = set()  # files left for lack of space (warned once)
        super().__init__("hotfolder", self._pass, lambda: self.poll_seconds,
                         "hot folder scan failed", join_seconds=10, logger=LOGGER)  # fmt: skip
        self.inbox.mkdir(parents=True, exist_ok=True)
        with nofollow.Dir(self.inbox) as inbox_fd:
            for name in OUTPUTS:
                os.close(self._subfolder(inbox_fd, name, name))

    def _pass(self) -> None:
        self.scan()
        if self.keep_processed_days and time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + 3600
            self.prune_processed()

    def prune_processed(self, now: float | None = None) -> int:
        """Delete ``processed/`` copies taken more than ``keep_processed_days`` ago; audited.

        Taken files sit in one folder per UTC day (``processed/YYYYMMDD``); a day's folder goes
        once the whole day is older than the limit. Symbolic links are never followed: every
        folder is opened with ``O_NOFOLLOW`` relative to its parent.
        """
        if not self.keep_processed_days:
            return 0
        moment = datetime.fromtimestamp(time.time() if now is None else now, UTC)
        removed = 0
        with nofollow.Dir(self.inbox) as inbox_fd:
            top = self._subfolder(inbox_fd, "processed", "processed")
            try:
                for day in os.scandir(top):
                    try:
                        taken = datetime.strptime(day.name, "%Y%m%d").replace(tzinfo=UTC)
                    except ValueError:
                        continue
                    if not day.is_dir(follow_symlinks=False):
                        continue
                    if (moment - taken).total_seconds() < (self.keep_processed_days + 1) * 86400:
                        continue
                    removed += nofollow.empty_day(top, day.name)
            finally:
                os.close(top)
        if removed:
            self.ingestor.audit.log(
                events.deleted(
                    USER,
                    {
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
        odd: dict[str, str] = {}
        for entry in os.scandir(self.inbox):
            if entry.name in OUTPUTS:
                continue  # checked (and replaced if need be) whenever a file is moved
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(info.st_mode):
                files[entry.name] = info
                continue
            if stat.S_ISLNK(info.st_mode):
                links.add(entry.name)  # never followed
            if not entry.name.startswith("."):
                odd[entry.name] = nofollow.kind_of(info.st_mode)
        self._announce(odd)
        for gone in set(self._seen) - set(files):
            del self._seen[gone]
        for name in list(self._held):
            now_info = files.get(name)
            if now_info is None or self._held[name] != (now_info.st_size, now_info.st_mtime_ns):
                del self._held[name]  # gone or changed: taken afresh
        self._waiting &= set(files)
        handled = 0
        for name, info in sorted(files.items()):
            suffix = Path(name).suffix.lower()
            if (
                name.startswith(".")
                or suffix in (".part", ".json", ".tmp")
                or name.endswith(NOTES)
                or name in self._held
                or not self._stable(name, info, now)
            ):
                continue
            sidecar_name = Path(name).stem + ".json"
            sidecar: str | None = None
            if sidecar_name in files:
                if not self._stable(sidecar_name, files[sidecar_name], now):
                    continue
                sidecar = sidecar_name
            try:
                taken = self._take(name, info, sidecar, sidecar_is_link=sidecar_name in links)
            except Exception:  # one odd file must not stop the folder, nor be retried forever
                LOGGER.exception(
                    "hot folder: unexpected failure on one file; it stays in the inbox and is "
                    "left alone until it changes or the appliance restarts"
                )
                self._hold(name, info)
                taken = False
            if taken:
                handled += 1
                self._seen.pop(name, None)
                self._seen.pop(sidecar_name, None)
                self._waiting.discard(name)
        return handled

    def _stable(self, name: str, info: os.stat_result, now: float) -> bool:
        """True once size and mtime have stayed unchanged for ``stable_seconds``."""
        seen = self._seen.get(name)
        if seen is None or (seen.size, seen.mtime_ns) != (info.st_size, info.st_mtime_ns):
            self._seen[name] = _Seen(info.st_size, info.st_mtime_ns, now)
            return False
        return now - seen.since >= self.stable_seconds

    def _hold(self, name: str, info: os.stat_result) -> None:
        self._held[name] = (info.st_size, info.st_mtime_ns)

    def _take(
        self,
        name: str,
        info: os.stat_result,
        sidecar: str | None,
        *,
        sidecar_is_link: bool = False,
    ) -> bool:
        """Ingest one stable file. False means "not handled (now)"."""
        path = self.inbox / name
        suffix = Path(name).suffix.lower()
        vendor = suffix in vendor_oct.SUFFIXES
        detail: dict[str, object] = {"sidecar": sidecar is not None}
        try:
            try:
                if suffix in vendor_oct.REFUSED_SUFFIXES:
                    raise UnsupportedFormat(vendor_oct.REFUSED_SUFFIXES[suffix])
                if suffix not in IMAGE_SUFFIXES and not vendor:
                    raise RejectedInput(
                        "only JPEG, PNG, TIFF, DICOM and Heidelberg .vol files are taken from "
                        "the hot folder",
                        reason="unsupported_format",
                    )
                if sidecar_is_link:
                    raise RejectedInput(
                        "the sidecar is a symbolic link; identity is read only from real files",
                        reason="bad_sidecar",
                    )
                if info.st_size > self.max_bytes:
                    raise TooLarge(
                        f"the file is {info.st_size} bytes, over the {self.max_bytes}-byte limit"
                    )
                fields = _read_sidecar(self.inbox / sidecar) if sidecar is not None else None
                if vendor:
                    data, fields = self._convert(path, fields, detail), None
                else:
                    data = nofollow.read_regular(path, self.max_bytes)
            except RejectedInput as exc:
                said = {"format": vendor_oct.FORMAT} if vendor else {}
                self.ingestor.refuse(
                    Incoming(data=b"", source=Source.HOTFOLDER, user_id="hotfolder", detail=said),
                    exc,
                )
                raise
            capture = self.ingestor.ingest(
                Incoming(
                    data=data,
                    source=Source.HOTFOLDER,
                    user_id="hotfolder",
                    fields=fields,
                    detail=detail,
                )
            )
        except FileNotFoundError:  # the camera took it back since the scan: nothing to do
            return False
        except OutOfResources:
            if name not in self._waiting:
                self._waiting.add(name)
                LOGGER.warning("hot folder: out of space, leaving a file for later")
            return False
        except RejectedInput as exc:
            note = f"{exc.reason}: {exc.message}\n"
            self._file_away(name, info, sidecar, "rejected", note, capture_id=None)
            return True
        except ApplianceError as exc:
            LOGGER.error(
                "hot folder: could not take a file (%s); it stays in the inbox and is left alone "
                "until it changes or the appliance restarts",
                exc.message,
            )
            self._hold(name, info)
            return False
        LOGGER.info("hot folder: capture %d taken", capture.id)
        self._file_away(name, info, sidecar, "processed", "", capture_id=capture.id)
        return True

    def _convert(
        self, path: Path, fields: dict[str, object] | None, detail: dict[str, object]
    ) -> bytes:
        """A Heidelberg .vol as the OPT object a camera would send, its identity from the
        sidecar, else the station's selection, else the export's own Patient ID."""
        given = identity_from_fields(fields or {})
        chosen = self.ingestor.or_selection(given, detail)
        scan = vendor_oct.read_vol(path, self.ingestor.limits, self.max_bytes)
        study = (chosen.study_instance_uid, chosen.accession_number)
        header = vendor_oct.opt_header(scan, chosen.patient, study)
        # the study, given or the exam day's, must not be another patient's: checked against
        # the patient the OPT will name (a sidecar may give a study and no patient)
        if header.study_instance_uid:
            written = PatientInfo(patient_id=header.patient_id, issuer=header.issuer)
            self.ingestor.check_study_owner(header.study_instance_uid, written)
        detail.update(
            converted_from=vendor_oct.FORMAT,
            original_sha256=scan.sha256,
            original_bytes=scan.size_bytes,
        )
        return vendor_oct.opt_bytes(scan, header, given.laterality)

    def _file_away(
        self,
        name: str,
        info: os.stat_result,
        sidecar: str | None,
        folder: str,
        note: str,
        *,
        capture_id: int | None,
    ) -> None:
        """Move a handled file; one that cannot be moved is held with one notice, never
        handled again on the next scan (it was stored or refused already)."""
        try:
            self._move(name, sidecar, folder, note)
        except OSError as exc:
            self._hold(name, info)
            LOGGER.error(
                "hot folder: a handled file could not be moved to %s/ (%s); it stays in the "
                "inbox and is left alone until it changes or the appliance restarts",
                folder,
                exc.strerror or exc,
            )
            detail: dict[str, object] = {
                "hotfolder": "not_moved",
                "folder": folder,
                "name": printable(name),
                "error": exc.strerror or str(exc),
            }
            if capture_id is not None:
                detail["capture_id"] = capture_id
            self._audit(EventID.IMPORT, Outcome.MINOR_FAILURE, detail)

    def _move(self, name: str, sidecar: str | None, folder: str, note: str) -> None:
        day = datetime.now(UTC).strftime("%Y%m%d")
        with nofollow.Dir(self.inbox) as inbox_fd:
            top = self._subfolder(inbox_fd, folder, folder)
            try:
                day_fd = self._subfolder(top, day, f"{folder}/{day}")
            finally:
                os.close(top)
            try:
                kept = len(os.fsencode(name)) <= NAME_KEEP_BYTES
                target = _free_name(day_fd, name if kept else _generated(name))
                os.replace(name, target, src_dir_fd=inbox_fd, dst_dir_fd=day_fd)
                if sidecar is not None:
                    sidecar_target = _free_name(day_fd, Path(target).stem + ".json")
                    try:
                        os.replace(sidecar, sidecar_target, src_dir_fd=inbox_fd, dst_dir_fd=day_fd)
                    except FileNotFoundError:
                        pass  # removed meanwhile; the file itself is where it belongs
                original = f"original name: {json.dumps(printable(name), ensure_ascii=False)}\n"
                try:
                    if note:
                        nofollow.write_note(day_fd, target + ".reason.txt", note + original)
                    elif not kept:
                        nofollow.write_note(day_fd, target + ".name.txt", original)
                except OSError as exc:  # the file is where it belongs; say what is missing
                    LOGGER.error("hot folder: the note beside a moved file: %s", exc.strerror)
            finally:
                os.close(day_fd)

    def _subfolder(self, parent_fd: int, name: str, label: str) -> int:
        """A descriptor of the real folder ``name`` under ``parent_fd``, made if missing; a
        link or non-folder in its place is replaced (with a security alert), never followed."""
        for attempt in (1, 2):
            try:
                os.mkdir(name, dir_fd=parent_fd)
            except FileExistsError:
                pass
            try:
                return os.open(name, nofollow.DIR_FLAGS | os.O_NOFOLLOW, dir_fd=parent_fd)
            except OSError as exc:
                if exc.errno not in _NOT_A_FOLDER or attempt == 2:
                    raise
            self._replace_folder(parent_fd, name, label)
        raise AssertionError("unreachable")

    def _replace_folder(self, parent_fd: int, name: str, label: str) -> None:
        was = nofollow.kind_of(os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode)
        if was == "symlink":
            os.unlink(name, dir_fd=parent_fd)  # the link only; what it points at is untouched
            done = "the link was removed"
        else:
            aside = f".{name}.displaced-{time.time_ns()}"
            os.rename(name, aside, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
            done = f"it was renamed to {aside}"
        LOGGER.error(
            "hot folder: %s/ was a %s, not a folder; %s and a real folder made (never followed)",
            label,
            was,
            done,
        )
        self._audit(
            EventID.SECURITY_ALERT,
            Outcome.SERIOUS_FAILURE,
            {"hotfolder": "folder_replaced", "folder": label, "was": was},
        )

    def _announce(self, odd: dict[str, str]) -> None:
        """One notice per symlink, FIFO, folder or other odd entry while it stays."""
        for name, kind in sorted(odd.items()):
            if self._noticed.get(name) == kind:
                continue
            LOGGER.warning(
                "hot folder: a %s in the inbox is ignored (never opened or followed); only "
                "regular files are taken. See the audit log for its name.",
                kind,
            )
            self._audit(
                EventID.SECURITY_ALERT if kind == "symlink" else EventID.IMPORT,
                Outcome.MINOR_FAILURE,
                {"hotfolder": "ignored", "kind": kind, "name": printable(name)},
            )
        self._noticed = dict(odd)

    def _audit(self, event_id: EventID, outcome: Outcome, detail: dict[str, object]) -> None:
        try:
            self.ingestor.audit.log(events.hotfolder_notice(USER, event_id, outcome, detail))
        except Exception:  # the notice is also in the log; the folder keeps working
            LOGGER.exception("hot folder: could not audit a notice")


def _generated(name: str) -> str:
    """A short, safe name for one too long to keep: UTC time, a digest of the name, and its
    suffix when that is plain letters and digits."""
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:16]
    suffix = Path(name).suffix
    safe = suffix if _SUFFIX.fullmatch(suffix) else ""
    return f"{datetime.now(UTC):%H%M%S}-{digest}{safe}"


def _free_name(dir_fd: int, name: str) -> str:
    """``name``, or ``stem-N.suffix``: free, and with no note of that name beside it."""
    stem, suffix = Path(name).stem, Path(name).suffix
    candidate, counter = name, 1
    while any(nofollow.exists(dir_fd, candidate + extra) for extra in ("", *NOTES)):
        candidate = f"{stem}-{counter}{suffix}"
        counter += 1
    return candidate


def _read_sidecar(path: Path) -> dict[str, object]:
    try:
        raw = nofollow.read_regular(path, MAX_SIDECAR_BYTES)
    except TooLarge:
        raise RejectedInput("the sidecar JSON is too large", reason="bad_sidecar") from None
    except RejectedInput:
        raise RejectedInput(
            "the sidecar is not a regular file; identity is read only from real files",
            reason="bad_sidecar",
        ) from None
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # bad UTF-8, bad JSON, absurd nesting
        raise RejectedInput(f"the sidecar is not valid JSON: {exc}", reason="bad_sidecar") from None
    if not isinstance(value, dict):
        raise RejectedInput("the sidecar must be a JSON object", reason="bad_sidecar")
    return value
