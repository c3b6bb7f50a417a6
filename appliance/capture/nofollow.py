"""File operations inside a folder that never follow a symbolic link.

The hot folder is a share the camera (and anyone on that share) can write to: a name may be
swapped for a link, a FIFO or a folder between a scan and a read. Everything here works on a
folder's descriptor with ``O_NOFOLLOW`` (or ``follow_symlinks=False``), so nothing is ever read
or written outside the data directory through a link.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path

from appliance.errors import RejectedInput, TooLarge

LOGGER = logging.getLogger(__name__)

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def kind_of(mode: int) -> str:
    """A plain word for a directory entry's type."""
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISREG(mode):
        return "file"
    return "other"  # socket, device


class Dir:
    """``with Dir(path) as fd``: a folder's descriptor, closed afterwards."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> int:
        self.fd = os.open(self.path, DIR_FLAGS)
        return self.fd

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def empty_day(top_fd: int, day: str) -> int:
    """Delete a processed day folder's files (links included, never followed), then it."""
    removed = 0
    try:
        day_fd = os.open(day, DIR_FLAGS | os.O_NOFOLLOW, dir_fd=top_fd)
    except OSError:
        return 0
    try:
        for entry in os.scandir(day_fd):
            try:
                if entry.is_file(follow_symlinks=False) or entry.is_symlink():
                    os.unlink(entry.name, dir_fd=day_fd)
                    removed += 1
            except OSError as exc:
                LOGGER.warning("a processed copy could not be deleted: %s", exc.strerror)
    finally:
        os.close(day_fd)
    try:
        os.rmdir(day, dir_fd=top_fd)
    except OSError:
        pass  # not empty (e.g. a folder someone put there): left alone
    return removed


def exists(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def write_note(dir_fd: int, name: str, text: str) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(name, flags, 0o644, dir_fd=dir_fd)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)


def read_regular(path: Path, limit: int) -> bytes:
    """A regular file's bytes (at most ``limit``); a name swapped for a link or FIFO since
    the scan is refused, and so is a file that grew past the limit."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RejectedInput(
                "the file became a symbolic link; links are never followed", reason="not_a_file"
            ) from None
        raise
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise RejectedInput("only regular files are taken", reason="not_a_file")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"the file is over the {limit}-byte limit")
    return data
