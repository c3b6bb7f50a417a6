#!/usr/bin/env bash
# Online backup of the appliance's data: a consistent SQLite copy made with Python's sqlite3
# backup API while the service runs, plus blobs/ (the images) and audit.head, into
# <dest>/retina-backup-<UTC timestamp>/. Nothing in the data dir is changed.
set -euo pipefail

DATA="/var/lib/retina-appliance"
DEST=""
ROOT=""
DRY_RUN=0
PYTHON="/opt/retina-appliance/venv/bin/python"

usage() {
    cat <<'USAGE'
Usage: backup.sh --dest DIR [--data-dir DIR] [--root DIR] [--dry-run]

Writes DIR/retina-backup-YYYYmmddTHHMMSSZ/ with appliance.db (SQLite online backup),
blobs/ and audit.head. Keep DIR on an encrypted medium: it holds patient images.

  --dest DIR       where the backup folder is created (required)
  --data-dir DIR   the appliance data dir (default /var/lib/retina-appliance, under --root)
  --root DIR       the appliance is installed under DIR (tests)
  --dry-run        print what would be done
  -h, --help       this help
USAGE
}
die() { echo "backup.sh: error: $*" >&2; exit 1; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --dest) DEST="${2:?--dest needs a directory}"; shift 2 ;;
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
[[ -x "$PYTHON" ]] || PYTHON="$(command -v python3)"
[[ -f "$DATA/appliance.db" ]] || die "no database at $DATA/appliance.db"

TARGET="$DEST/retina-backup-$(date -u +%Y%m%dT%H%M%SZ)"
if [[ "$DRY_RUN" == 1 ]]; then
    echo "would create: $TARGET"
    echo "would back up (sqlite3 online backup): $DATA/appliance.db -> $TARGET/appliance.db"
    echo "would copy: $DATA/blobs/ -> $TARGET/blobs/"
    echo "would copy: $DATA/audit.head -> $TARGET/audit.head"
    exit 0
fi
[[ ! -e "$TARGET" ]] || die "$TARGET exists"
(umask 077 && mkdir -p "$TARGET")
# audit.head first: the database copy is then at least as new as the head it is checked against.
if [[ -f "$DATA/audit.head" ]]; then
    cp -p "$DATA/audit.head" "$TARGET/audit.head"
fi
"$PYTHON" - "$DATA/appliance.db" "$TARGET/appliance.db" <<'PY'
import sqlite3
import sys

source = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
target = sqlite3.connect(sys.argv[2])
with target:
    source.backup(target)
check = target.execute("PRAGMA integrity_check").fetchone()[0]
target.close()
source.close()
if check != "ok":
    sys.exit(f"backup integrity_check: {check}")
PY
if [[ -d "$DATA/blobs" ]]; then
    cp -a "$DATA/blobs" "$TARGET/blobs"
fi
echo "backup.sh: backup written to $TARGET"
