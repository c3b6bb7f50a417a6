"""Image and object files, written atomically under names the appliance chooses.

A file is written to a temporary name in its final directory, fsynced, renamed into place and
the directory fsynced, so a crash leaves either the whole file or nothing. Names come from the
content hash (or a UID that passed :func:`safe_uid`), never from anything a client sent.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

from appliance.errors import OutOfResources

EXTENSIONS = {
    "application/dicom": "dcm",
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/tiff": "tif",
    "application/pdf": "pdf",
    "application/x-npy": "npy",  # numpy arrays (an OCT thickness map), np.save format
    "application/x-npz": "npz",  # numpy arrays by name (an OCT's layers), np.savez format
}
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def safe_uid(uid: str) -> bool:
    """True for a syntactically valid DICOM UID (digits and dots, at most 64 characters)."""
    return len(uid) <= 64 and _UID.fullmatch(uid) is not None and ".." not in uid


class BlobStore:
    def __init__(self, data_dir: Path, min_free_bytes: int = 0) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.min_free_bytes = min_free_bytes
        self.root = self.data_dir / "blobs"
        self.root.mkdir(parents=True, exist_ok=True)

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.data_dir).free

    def check_space(self, incoming: int = 0) -> None:
        free = self.free_bytes()
        if free - incoming < self.min_free_bytes:
            raise OutOfResources(
                f"storage is nearly full ({free // (1024 * 1024)} MiB free); "
                "the image was not stored — free space on the appliance and resend",
                reason="disk_full",
            )

    def put(self, data: bytes, media_type: str, digest: str | None = None) -> str:
        """Store ``data`` under its SHA-256; return its path relative to the data directory."""
        digest = digest or hashlib.sha256(data).hexdigest()
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ValueError("digest must be a SHA-256 hex string")
        relative = f"blobs/{digest[:2]}/{digest}.{EXTENSIONS[media_type]}"
        target = self.resolve(relative)
        if target.exists() and target.stat().st_size == len(data):
            return relative
        self.check_space(len(data))
        write_atomic(target, data)
        return relative

    def resolve(self, relative: str) -> Path:
        """The absolute path of a stored file; refuses anything outside the data directory."""
        path = (self.data_dir / relative).resolve()
        if not path.is_relative_to(self.data_dir):
            raise ValueError(f"path {relative!r} escapes the data directory")
        return path

    def read(self, relative: str) -> bytes:
        return self.resolve(relative).read_bytes()


def write_atomic(target: Path, data: bytes, *, durable: bool = True) -> None:
    """temp file → fsync → rename → fsync directory. Raises OutOfResources on a full disk.

    ``durable=False`` skips the fsyncs (still all-or-nothing, but may be lost on power loss).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    try:
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                if durable:
                    os.fsync(fh.fileno())
            os.replace(tmp, target)
        except OSError as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise OutOfResources(
                    "storage is full; the image was not stored — free space and resend",
                    reason="disk_full",
                ) from exc
            raise
        if not durable:
            return
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
