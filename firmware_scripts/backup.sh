#!/usr/bin/env bash
# Online, ENCRYPTED backup of the appliance's data: audit.head, a consistent SQLite copy made
# with Python's sqlite3 backup API while the service runs, and blobs/ (the images), as one tar
# stream encrypted with age to the recipient public key(s) in
# /etc/retina-appliance/backup-recipients.txt, written to
# <dest>/retina-backup-<UTC timestamp>.tar.age. Nothing in the data dir is changed.
#
# The plaintext is never written to disk: the database copy is made in memory and the tar
# stream goes through a pipe into age; only ciphertext reaches <dest>. The box holds the
# PUBLIC key only: the private key (age-keygen, on another machine) is kept off the device,
# so a lost backup medium - or the box itself - cannot decrypt a backup.
#
# Restore (on a machine holding the private key, e.g. backup-key.txt):
#   age -d -i backup-key.txt retina-backup-<ts>.tar.age | tar -x -C /restore
#   # -> /restore/audit.head, /restore/appliance.db, /restore/blobs/...
#   # stop the service, copy them into /var/lib/retina-appliance (owner retina, mode 0700
#   # dir), `appliance audit verify`, start it (firmware_scripts/README.md, section 3).
set -euo pipefail

DATA="/var/lib/retina-appliance"
DEST=""
ROOT=""
DRY_RUN=0
RECIPIENTS=""
PYTHON="/opt/retina-appliance/venv/bin/python"

usage() {
    cat <<'USAGE'
Usage: backup.sh --dest DIR [--recipients FILE] [--data-dir DIR] [--root DIR] [--dry-run]

Writes DIR/retina-backup-YYYYmmddTHHMMSSZ.tar.age: audit.head, appliance.db (SQLite online
backup) and blobs/ as a tar stream, encrypted with age to the public key(s) in FILE. No
plaintext is written to disk. Restore with the private key, kept off the device:
  age -d -i KEY retina-backup-....tar.age | tar -x -C RESTORE_DIR

  --dest DIR         where the backup file is written (required)
  --recipients FILE  age recipients file, public keys only (default
                     /etc/retina-appliance/backup-recipients.txt, under --root)
  --data-dir DIR     the appliance data dir (default /var/lib/retina-appliance, under --root)
  --root DIR         the appliance is installed under DIR (tests)
  --dry-run          print what would be done
  -h, --help         this help
USAGE
}
die() { echo "backup.sh: error: $*" >&2; exit 1; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --dest) DEST="${2:?--dest needs a directory}"; shift 2 ;;
        --recipients) RECIPIENTS="${2:?--recipients needs a file}"; shift 2 ;;
        --data-dir) DATA="${2:?--data-dir needs a directory}"; shift 2 ;;
        --root) ROOT="${2:?--root needs a directory}"; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done
[[ -n "$DEST" ]] || { usage >&2; die "--dest is required"; }
if [[ -n "$ROOT" && "$DATA" == /var/lib/retina-appliance ]]; then
    DATA="$ROOT/var/lib/retina-appliance"
fi
[[ -n "$RECIPIENTS" ]] || RECIPIENTS="$ROOT/etc/retina-appliance/backup-recipients.txt"
[[ -x "$PYTHON" ]] || PYTHON="$(command -v python3)"
[[ -f "$DATA/appliance.db" ]] || die "no database at $DATA/appliance.db"
command -v age >/dev/null 2>&1 || die "age is not installed (apt-get install age)"
[[ -f "$RECIPIENTS" ]] || die "no backup recipient at $RECIPIENTS: put the age PUBLIC key there
  (made on another machine with age-keygen; install.sh --backup-recipient age1...)"
# The private key must never be on the box: refuse a recipients file that holds one.
if grep -q 'AGE-SECRET-KEY' "$RECIPIENTS"; then
    die "$RECIPIENTS holds an age PRIVATE key: remove it from the box, keep only the public key"
fi
grep -q '^age1' "$RECIPIENTS" || die "$RECIPIENTS holds no age public key (age1...)"

TARGET="$DEST/retina-backup-$(date -u +%Y%m%dT%H%M%SZ).tar.age"
if [[ "$DRY_RUN" == 1 ]]; then
    echo "would read: $DATA/audit.head, then $DATA/appliance.db (sqlite3 online backup, in memory)"
    echo "would stream: tar of audit.head, appliance.db, blobs/ | age -R $RECIPIENTS -> $TARGET"
    exit 0
fi
umask 077
mkdir -p "$DEST"
[[ ! -e "$TARGET" ]] || die "$TARGET exists"
PARTIAL="$TARGET.partial"
trap 'rm -f "$PARTIAL"' EXIT
# Python writes the tar stream to the pipe; age encrypts it; only ciphertext touches the disk.
"$PYTHON" - "$DATA" <<'PY' | age -R "$RECIPIENTS" -o "$PARTIAL"
import io
import sqlite3
import sys
import tarfile
import time
from pathlib import Path

data = Path(sys.argv[1])
out = tarfile.open(fileobj=sys.stdout.buffer, mode="w|")


def add_bytes(name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    info.mode = 0o600
    info.mtime = int(time.time())
    out.addfile(info, io.BytesIO(payload))


# audit.head first: the database copy is then at least as new as the head it is checked against.
head = data / "audit.head"
if head.is_file():
    add_bytes("audit.head", head.read_bytes())
source = sqlite3.connect(f"{(data / 'appliance.db').resolve().as_uri()}?mode=ro", uri=True)
copy = sqlite3.connect(":memory:")
source.backup(copy)
source.close()
check = copy.execute("PRAGMA integrity_check").fetchone()[0]
if check != "ok":
    sys.exit(f"backup integrity_check: {check}")
add_bytes("appliance.db", copy.serialize())
copy.close()
blobs = data / "blobs"
if blobs.is_dir():
    out.add(blobs, arcname="blobs", recursive=True)
out.close()
sys.stdout.buffer.flush()
PY
mv "$PARTIAL" "$TARGET"
trap - EXIT
echo "backup.sh: encrypted backup written to $TARGET"
