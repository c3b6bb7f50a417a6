#!/usr/bin/env bash
# A/B update with automatic rollback.
#
# Installs a new version into /opt/retina-appliance/releases/<version> beside the running one,
# verifies every model file against its card (SHA-256), switches the `current` symlink
# atomically, restarts the service, runs the health check, and switches the symlink back (and
# restarts again) when the health check fails. The data dir /var/lib/retina-appliance (database,
# images, audit trail, outbox) is never touched, so queued outbox jobs survive both ways.
#
# Rollback by hand: ln -sfn releases/<old> /opt/retina-appliance/current.new &&
#   mv -T /opt/retina-appliance/current.new /opt/retina-appliance/current &&
#   systemctl restart retina-appliance
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SOURCE=""
ROOT=""
DRY_RUN=0
NO_PIP=0
PYTHON=""
HEALTH_CMD=""
HEALTH_TRIES=5
HEALTH_INTERVAL=6
ORT_WHEEL=""

usage() {
    cat <<'USAGE'
Usage: update.sh --from CHECKOUT [options]

  --from DIR            source checkout of the new version (default: this script's checkout)
  --root DIR            the appliance is installed under DIR (no systemctl, host untouched)
  --dry-run             print the steps, change nothing
  --no-pip              do not build a venv (test mode, needs --root)
  --python PY           interpreter that verifies the model cards (default: the new venv's)
  --ort-wheel W         Jetson: vendor onnxruntime-gpu wheel for the new venv
  --health-cmd CMD      health check command (default: bin/health-check --require-models)
  --health-tries N      attempts before rolling back (default 5)
  --health-interval S   seconds between attempts (default 6)
  -h, --help            this help
USAGE
}
die() { echo "update.sh: error: $*" >&2; exit 1; }
say() { echo "update.sh: $*"; }
run() {
    if [[ "$DRY_RUN" == 1 ]]; then
        echo "would run: $*"
    else
        "$@"
    fi
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --from) SOURCE="${2:?--from needs a directory}"; shift 2 ;;
        --root) ROOT="${2:?--root needs a directory}"; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        --no-pip) NO_PIP=1; shift ;;
        --python) PYTHON="${2:?--python needs an interpreter}"; shift 2 ;;
        --ort-wheel) ORT_WHEEL="${2:?--ort-wheel needs a path or URL}"; shift 2 ;;
        --health-cmd) HEALTH_CMD="${2:?--health-cmd needs a command}"; shift 2 ;;
        --health-tries) HEALTH_TRIES="${2:?}"; shift 2 ;;
        --health-interval) HEALTH_INTERVAL="${2:?}"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done
[[ -n "$SOURCE" ]] || SOURCE="$(cd "$SCRIPT_DIR/.." && pwd)"
[[ -f "$SOURCE/appliance/__init__.py" ]] || die "no checkout at $SOURCE"
[[ "$NO_PIP" == 0 || -n "$ROOT" ]] || die "--no-pip is a test mode and needs --root DIR"
if [[ -z "$ROOT" && "$DRY_RUN" == 0 && "$(id -u)" != 0 ]]; then
    die "run as root (or use --root DIR / --dry-run)"
fi

OPT="$ROOT/opt/retina-appliance"
VERSION="$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$SOURCE/appliance/__init__.py")"
[[ -n "$VERSION" ]] || die "cannot read __version__ in $SOURCE"
NEW="$OPT/releases/$VERSION"
[[ -L "$OPT/current" ]] || die "$OPT/current is missing: run install.sh first"
PREVIOUS="$(readlink "$OPT/current")"
PLATFORM="$(sed -n 's/.*"platform": "\([^"]*\)".*/\1/p' "$OPT/manifest.json" 2>/dev/null | head -n1)"
PLATFORM="${PLATFORM:-cpu}"
[[ -n "$PYTHON" ]] || PYTHON="$NEW/venv/bin/python"
if [[ -z "$HEALTH_CMD" && -z "$ROOT" ]]; then
    HEALTH_CMD="$OPT/venv/bin/python $OPT/bin/health-check --require-models"
fi

say "current: $PREVIOUS, new: releases/$VERSION, platform: $PLATFORM"
if [[ "$PREVIOUS" == "releases/$VERSION" ]]; then
    say "version $VERSION is already current; nothing to do"
    exit 0
fi

switch_to() {  # atomic symlink switch
    run ln -sfn "$1" "$OPT/current.new"
    run mv -T "$OPT/current.new" "$OPT/current"
}
restart() {
    if [[ -z "$ROOT" ]]; then
        run systemctl restart retina-appliance.service
    else
        say "--root: would restart retina-appliance.service"
    fi
}

# 1. install the new release beside the current one (staging folder, then renamed)
STAGE="$NEW.partial"
say "step 1: install $VERSION into $NEW"
run rm -rf "$STAGE"
run mkdir -p "$STAGE/models"
for model in "$SOURCE"/models/*.card.json "$SOURCE"/models/*.onnx "$SOURCE"/models/domain.json; do
    if [[ -f "$model" ]]; then run cp "$model" "$STAGE/models/"; fi
done
if [[ "$NO_PIP" == 0 ]]; then
    case "$PLATFORM" in
        x86-gpu) run "$SOURCE/firmware_scripts/install-venv" "$STAGE/venv" gpu --source "$SOURCE" ;;
        jetson)
            [[ -n "$ORT_WHEEL" ]] || die "Jetson: give the vendor wheel with --ort-wheel"
            run "$SOURCE/firmware_scripts/install-venv" "$STAGE/venv" runtime --source "$SOURCE" --ort-wheel "$ORT_WHEEL"
            ;;
        *) run "$SOURCE/firmware_scripts/install-venv" "$STAGE/venv" runtime --source "$SOURCE" ;;
    esac
fi
if [[ -e "$NEW" ]]; then
    run rm -rf "$NEW"
fi
run mv "$STAGE" "$NEW"
# A venv records its own path: it was built in the staging folder, so fix its scripts' paths.
if [[ "$NO_PIP" == 0 && "$DRY_RUN" == 0 ]]; then
    grep -rlF "$STAGE" "$NEW/venv/bin" 2>/dev/null | while read -r file; do
        sed -i "s|$STAGE|$NEW|g" "$file"
    done
fi

# 2. check every model file against its card
say "step 2: verify model hashes against their cards"
VERIFY='
import sys
from pathlib import Path
from appliance.inference import find_cards
cards = find_cards(Path(sys.argv[1]))
for card in cards:
    for variant in card.variants():
        card.verify(variant)
        print(f"  {card.name} {variant}: sha256 ok")
'
if [[ "$DRY_RUN" == 1 ]]; then
    echo "would run: $PYTHON -c <find_cards + card.verify> $NEW/models"
elif ! "$PYTHON" -c "$VERIFY" "$NEW/models"; then
    die "model verification failed; $NEW kept for inspection, current unchanged ($PREVIOUS)"
fi

# 3. switch and restart
say "step 3: switch current -> releases/$VERSION and restart"
switch_to "releases/$VERSION"
restart

# 4. health check, roll back on failure
say "step 4: health check ($HEALTH_TRIES tries)"
if [[ -z "$HEALTH_CMD" ]]; then
    say "--root without --health-cmd: health check skipped"
    exit 0
fi
if [[ "$DRY_RUN" == 1 ]]; then
    echo "would run: $HEALTH_CMD (on failure: switch current back to $PREVIOUS and restart)"
    exit 0
fi
for ((try = 1; try <= HEALTH_TRIES; try++)); do
    if bash -c "$HEALTH_CMD"; then
        say "healthy on $VERSION; previous release $PREVIOUS kept for rollback"
        exit 0
    fi
    say "health check $try/$HEALTH_TRIES failed"
    [[ "$try" == "$HEALTH_TRIES" ]] || sleep "$HEALTH_INTERVAL"
done
say "ROLLING BACK to $PREVIOUS"
switch_to "$PREVIOUS"
restart
echo "update.sh: update to $VERSION FAILED the health check; rolled back to $PREVIOUS" >&2
exit 1
