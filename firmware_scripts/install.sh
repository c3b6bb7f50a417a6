#!/usr/bin/env bash
# Install the retinal screening appliance on a Jetson or an x86 box (GPU optional).
#
# Layout (A/B-ready, see update.sh):
#   /opt/retina-appliance/releases/<version>/{venv,models}   one folder per installed version
#   /opt/retina-appliance/current -> releases/<version>       the running version
#   /opt/retina-appliance/venv    -> current/venv             what the systemd unit starts
#   /opt/retina-appliance/models  -> current/models           models_dir in appliance.toml
#   /opt/retina-appliance/bin/    health-check, build-engines, backup.sh, update.sh
#   /opt/retina-appliance/manifest.json
#   /etc/retina-appliance/appliance.toml, /etc/retina-appliance/tls/{cert.pem,key.pem}
#   /var/lib/retina-appliance     data dir (database, images, audit.head, outbox) - never
#                                 touched by update.sh
#
# Encrypted data volume (LUKS2), once, on a spare partition or disk (see firmware_scripts/README.md):
#   install.sh --encrypt-device /dev/nvme0n1p3 [--wipe] [--unlock auto|tpm2|keyfile] --dry-run
# prints every step, then without --dry-run: cryptsetup luksFormat --type luks2 with a random
# recovery passphrase (shown ONCE, never stored), unlocking at boot bound to the TPM2
# (systemd-cryptenroll --tpm2-device=auto, when /dev/tpmrm0 exists) or else a key file
# /etc/retina-appliance/luks.key (0400 root; weaker: it lies on the same box), open, mkfs.ext4,
# /etc/crypttab + /etc/fstab (nodev,nosuid,noexec), mount on the data dir, manifest
# "encryption". A device holding a filesystem (or anything blkid knows) is refused unless
# --wipe is given; a mounted device and a non-empty data dir are always refused.
# Without --encrypt-device the script checks (findmnt, lsblk) whether the data dir is on
# dm-crypt, records "encrypted" in the manifest and warns; health-check FAILS on an
# unencrypted data dir unless the box was installed with --no-encryption-i-understand
# (a development box: recorded in the manifest with who and when).
#
# onnxruntime: x86-gpu installs the `gpu` extra (onnxruntime-gpu in place of onnxruntime).
# PyPI has NO aarch64 GPU build of onnxruntime: on a Jetson give the vendor wheel matching
# your JetPack with --ort-wheel (e.g. from NVIDIA's Jetson Zoo / the jetson-ai-lab index).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT=""
DRY_RUN=0
PLATFORM=""
SOURCE="$(cd "$SCRIPT_DIR/.." && pwd)"
ORT_WHEEL=""
NO_PIP=0
LISTEN="127.0.0.1"
SERVICE_USER="retina"
ADMIN=""
DICOM_PORT="11112"
ENCRYPT_DEVICE=""
WIPE=0
UNLOCK="auto"
NO_ENCRYPTION=0
BACKUP_RECIPIENT=""
MAPPER="retina-data"
TPM_DEVICE="/dev/tpmrm0"

usage() {
    cat <<'USAGE'
Usage: install.sh [options]

Installs the retinal screening appliance: service user, /opt/retina-appliance (venv, models),
/etc/retina-appliance (appliance.toml, self-signed TLS certificate), systemd units, journald
limits, and a manifest. Safe to run again (idempotent).

Options:
  --root DIR          install into DIR instead of / (never touches the host: no user, no
                      systemctl; the intended user is written into the manifest)
  --dry-run           print what would be done, change nothing
  --platform P        jetson | x86-gpu | cpu (default: detected)
  --venv-from DIR     checkout to `pip install` from (default: this script's checkout)
  --ort-wheel W       Jetson: path or URL of the vendor onnxruntime-gpu wheel (PyPI has no
                      aarch64 GPU build)
  --no-pip            create only the layout, no venv / pip (test mode, needs --root)
  --listen ADDR       web_host for the web UI/API (default 127.0.0.1)
  --dicom-port PORT   dicom_port (default 11112)
  --admin NAME        create the first web admin NAME unless an admin exists (password read
                      from standard input when it is not a terminal, else prompted twice)
  --encrypt-device DEV
                      put the data dir on a new LUKS2 volume on DEV (a spare partition or
                      disk): luksFormat, TPM2 or key-file unlocking, crypttab, fstab, mount.
                      Destroys DEV's contents: try it with --dry-run first
  --wipe              allow --encrypt-device on a device that holds a filesystem / signature
  --unlock M          auto | tpm2 | keyfile: how the volume unlocks at boot (auto: tpm2
                      when /dev/tpmrm0 exists, else a key file in /etc/retina-appliance)
  --no-encryption-i-understand
                      development box only: the data dir stays unencrypted; recorded in the
                      manifest (who, when), which health-check accepts as an opt-out
  --backup-recipient K
                      age public key (age1...) that backup.sh encrypts to, written to
                      /etc/retina-appliance/backup-recipients.txt (the private key stays off
                      the box)
  -h, --help          this help
USAGE
}

die() { echo "install.sh: error: $*" >&2; exit 1; }
note() { echo "install.sh: $*"; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --root) ROOT="${2:?--root needs a directory}"; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        --platform) PLATFORM="${2:?--platform needs a value}"; shift 2 ;;
        --venv-from) SOURCE="${2:?--venv-from needs a directory}"; shift 2 ;;
        --ort-wheel) ORT_WHEEL="${2:?--ort-wheel needs a path or URL}"; shift 2 ;;
        --no-pip) NO_PIP=1; shift ;;
        --listen) LISTEN="${2:?--listen needs an address}"; shift 2 ;;
        --dicom-port) DICOM_PORT="${2:?--dicom-port needs a port}"; shift 2 ;;
        --admin) ADMIN="${2:?--admin needs a user name}"; shift 2 ;;
        --encrypt-device) ENCRYPT_DEVICE="${2:?--encrypt-device needs a device}"; shift 2 ;;
        --wipe) WIPE=1; shift ;;
        --unlock) UNLOCK="${2:?--unlock needs auto, tpm2 or keyfile}"; shift 2 ;;
        --no-encryption-i-understand) NO_ENCRYPTION=1; shift ;;
        --backup-recipient) BACKUP_RECIPIENT="${2:?--backup-recipient needs an age public key}"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done

# The first admin's password is read before anything else can touch standard input.
ADMIN_PASSWORD=""
if [[ -n "$ADMIN" && "$DRY_RUN" == 0 ]]; then
    if [[ -t 0 ]]; then
        read -r -s -p "Password for web admin $ADMIN: " ADMIN_PASSWORD; echo
        read -r -s -p "Again: " again; echo
        [[ "$ADMIN_PASSWORD" == "$again" ]] || die "the passwords differ"
    else
        IFS= read -r ADMIN_PASSWORD || true
    fi
fi

if [[ -n "$ROOT" ]]; then
    [[ "$DRY_RUN" == 1 ]] || mkdir -p "$ROOT"
    ROOT="$(cd "$ROOT" 2>/dev/null && pwd || echo "$ROOT")"
    [[ "$ROOT" != "/" ]] || ROOT=""
fi
if [[ "$NO_PIP" == 1 && -z "$ROOT" ]]; then
    die "--no-pip is a test mode and needs --root DIR"
fi
if [[ -z "$ROOT" && "$DRY_RUN" == 0 && "$(id -u)" != 0 ]]; then
    die "run as root (or use --root DIR / --dry-run)"
fi
[[ -d "$SOURCE" && -f "$SOURCE/pyproject.toml" ]] || die "no checkout at $SOURCE (--venv-from)"
case "$UNLOCK" in
    auto|tpm2|keyfile) ;;
    *) die "--unlock must be auto, tpm2 or keyfile" ;;
esac
if [[ -n "$ENCRYPT_DEVICE" && "$NO_ENCRYPTION" == 1 ]]; then
    die "--encrypt-device and --no-encryption-i-understand exclude each other"
fi
if [[ -n "$BACKUP_RECIPIENT" ]]; then
    [[ "$BACKUP_RECIPIENT" != *SECRET* ]] \
        || die "--backup-recipient got a PRIVATE key: give the public key (age1...), keep the private key off the box"
    [[ "$BACKUP_RECIPIENT" =~ ^age1[0-9a-z]{20,}$ ]] \
        || die "--backup-recipient must be an age public key (age1...)"
fi

# -- platform ------------------------------------------------------------------------------
detect_platform() {
    local arch
    arch="$(uname -m)"
    if [[ "$arch" == "aarch64" && -f /etc/nv_tegra_release ]]; then
        echo jetson
    elif [[ "$arch" == "x86_64" ]] && command -v nvidia-smi >/dev/null 2>&1 \
        && nvidia-smi -L >/dev/null 2>&1; then
        echo x86-gpu
    else
        echo cpu
    fi
}
[[ -n "$PLATFORM" ]] || PLATFORM="$(detect_platform)"
case "$PLATFORM" in
    jetson|x86-gpu|cpu) ;;
    *) die "unknown platform '$PLATFORM' (jetson, x86-gpu or cpu)" ;;
esac
if [[ "$PLATFORM" == jetson && -z "$ORT_WHEEL" && "$NO_PIP" == 0 ]]; then
    die "Jetson needs --ort-wheel PATH_OR_URL: PyPI has no aarch64 GPU build of onnxruntime"
fi

VERSION="$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$SOURCE/appliance/__init__.py")"
[[ -n "$VERSION" ]] || die "cannot read __version__ from $SOURCE/appliance/__init__.py"

OPT="$ROOT/opt/retina-appliance"
RELEASE="$OPT/releases/$VERSION"
ETC="$ROOT/etc/retina-appliance"
DATA="$ROOT/var/lib/retina-appliance"
UNITS="$ROOT/etc/systemd/system"
JOURNALD="$ROOT/etc/systemd/journald.conf.d"
INSTALLED=()

case "$PLATFORM" in
    x86-gpu) ORT_CHOICE="onnxruntime-gpu (gpu lock, PyPI)"; LOCK_SET=gpu ;;
    jetson) ORT_CHOICE="vendor wheel: ${ORT_WHEEL:-none given}"; LOCK_SET=runtime ;;
    *) ORT_CHOICE="onnxruntime (CPU, PyPI)"; LOCK_SET=runtime ;;
esac
# The dependency lock this machine installs (recorded in the manifest with its SHA-256).
LOCK_FILE="$SOURCE/firmware_scripts/requirements/$LOCK_SET-$(uname -m).txt"

# run CMD...: execute, or print it under --dry-run
run() {
    if [[ "$DRY_RUN" == 1 ]]; then
        echo "would run: $*"
    else
        "$@"
    fi
}

# install_file SRC DEST MODE: copy when different
install_file() {
    local src="$1" dest="$2" mode="$3"
    INSTALLED+=("${dest#"$ROOT"}")
    if [[ -f "$dest" ]] && cmp -s "$src" "$dest"; then
        [[ "$DRY_RUN" == 1 ]] && echo "unchanged: $dest"
        chmod_if "$mode" "$dest"
        return 0
    fi
    run install -D -m "$mode" "$src" "$dest"
}
chmod_if() { [[ "$DRY_RUN" == 1 ]] || chmod "$1" "$2"; }

# link TARGET NAME: make NAME a symlink to TARGET (replacing an older link)
link() {
    local target="$1" name="$2"
    if [[ -L "$name" && "$(readlink "$name")" == "$target" ]]; then
        return 0
    fi
    run ln -sfn "$target" "$name"
}

note "platform: $PLATFORM, version $VERSION, onnxruntime: $ORT_CHOICE"
note "installing into ${ROOT:-/}$([[ "$DRY_RUN" == 1 ]] && echo ' (dry run: nothing is changed)')"

# -- service user ----------------------------------------------------------------------------
if [[ -z "$ROOT" ]]; then
    if id "$SERVICE_USER" >/dev/null 2>&1; then
        note "user $SERVICE_USER exists"
    else
        run useradd --system --home-dir /var/lib/retina-appliance --no-create-home \
            --shell /usr/sbin/nologin "$SERVICE_USER"
    fi
    # GPU device nodes (/dev/nvidia*, Jetson /dev/nvhost-*) belong to video/render.
    for group in video render; do
        if getent group "$group" >/dev/null 2>&1; then
            run usermod -aG "$group" "$SERVICE_USER"
        fi
    done
else
    note "--root: user '$SERVICE_USER' is not created; recorded in the manifest"
fi

# -- encrypted data volume (--encrypt-device) -------------------------------------------------
# Runs before anything is written into the data dir: the new volume is mounted on it.
ENC_DEVICE="" ENC_UUID="" ENC_UNLOCK="" ENC_CRYPTTAB="" ENC_FSTAB=""
encrypt_data_volume() {
    local dev="$ENCRYPT_DEVICE" mode="$UNLOCK" signature mapped key_file crypttab_line fstab_line
    local recovery="<random recovery passphrase, shown once>" uuid="<UUID of $dev>"
    # A block device; under --root (tests) a plain file stands in for one.
    if [[ ! -b "$dev" ]] && ! [[ -n "$ROOT" && -f "$dev" ]]; then
        die "--encrypt-device $dev is not a block device"
    fi
    command -v cryptsetup >/dev/null 2>&1 \
        || die "--encrypt-device needs cryptsetup (apt-get install cryptsetup)"
    if [[ "$mode" == auto ]]; then
        if [[ -e "$TPM_DEVICE" ]]; then mode=tpm2; else mode=keyfile; fi
    fi
    if [[ "$mode" == tpm2 ]]; then
        command -v systemd-cryptenroll >/dev/null 2>&1 \
            || die "--unlock tpm2 needs systemd-cryptenroll (systemd 248+); use --unlock keyfile"
    fi
    key_file="$ETC/luks.key"
    mapped="/dev/mapper/$MAPPER"
    if [[ -e "$mapped" ]]; then
        die "$mapped exists already: the data volume is set up (nothing to do) or in use"
    fi
    # Never format a mounted device, nor one that holds something, unless told to (--wipe).
    # (lsblk lists the mount points of the device AND its partitions: a whole disk counts.)
    if findmnt -n --source "$dev" >/dev/null 2>&1 \
        || [[ -n "$(lsblk -n -o MOUNTPOINT "$dev" 2>/dev/null | tr -d '[:space:]' || true)" ]]; then
        die "$dev (or a partition on it) is mounted: refusing to format it"
    fi
    signature="$(blkid -p -o value -s TYPE "$dev" 2>/dev/null || true)"
    if [[ -z "$signature" ]]; then  # a whole disk with a partition table
        signature="$(blkid -p -o value -s PTTYPE "$dev" 2>/dev/null || true)"
    fi
    if [[ -z "$signature" ]]; then
        signature="$(lsblk -n -d -o FSTYPE "$dev" 2>/dev/null | head -n1 || true)"
    fi
    if [[ -n "$signature" && "$WIPE" == 0 ]]; then
        die "$dev holds a '$signature' signature: refusing to format it (give --wipe to destroy it)"
    fi
    if [[ -d "$DATA" && -n "$(ls -A "$DATA" 2>/dev/null)" ]]; then
        die "the data dir $DATA is not empty: move its contents away first (the volume is mounted on it)"
    fi
    note "encrypting the data volume: $dev (LUKS2), unlock at boot: $mode, mapped as $mapped"
    if [[ "$DRY_RUN" == 0 ]]; then
        # 32 random bytes, base64: typed at the console to unlock when the TPM or key fails.
        recovery="$(openssl rand -base64 32 | tr -d '\n')"
    fi
    # with_recovery CMD...: CMD reads the recovery passphrase (no newline) on standard input.
    with_recovery() {
        if [[ "$DRY_RUN" == 1 ]]; then
            echo "would run: $* (recovery passphrase on standard input)"
        else
            printf '%s' "$recovery" | "$@"
        fi
    }
    if [[ -n "$signature" ]]; then
        run wipefs -a "$dev"
    fi
    with_recovery cryptsetup luksFormat --type luks2 --batch-mode --key-file=- "$dev"
    if [[ "$DRY_RUN" == 0 ]]; then
        uuid="$(cryptsetup luksUUID "$dev")"
    fi
    if [[ "$mode" == tpm2 ]]; then
        # Sealed to the TPM against PCR 7 (Secure Boot state): the disk moved to another
        # machine, or booted with Secure Boot changed, does not unlock without the passphrase.
        if [[ "$DRY_RUN" == 1 ]]; then
            echo "would run: systemd-cryptenroll --tpm2-device=auto --tpm2-pcrs=7 $dev (recovery passphrase in \$PASSWORD)"
        else
            PASSWORD="$recovery" systemd-cryptenroll --tpm2-device=auto --tpm2-pcrs=7 "$dev"
        fi
        crypttab_line="$MAPPER UUID=$uuid none luks,tpm2-device=auto"
    else
        if [[ "$DRY_RUN" == 1 ]]; then
            echo "would write: $key_file (64 random bytes, mode 0400, root)"
        else
            mkdir -p "$ETC"
            (umask 077 && head -c 64 /dev/urandom > "$key_file")
            chmod 0400 "$key_file"
            [[ -n "$ROOT" ]] || chown root:root "$key_file"
        fi
        with_recovery cryptsetup luksAddKey --key-file=- "$dev" "$key_file"
        crypttab_line="$MAPPER UUID=$uuid /etc/retina-appliance/luks.key luks"
    fi
    with_recovery cryptsetup open --type luks2 --key-file=- "$dev" "$MAPPER"
    run mkfs.ext4 -q -L retina-data "$mapped"
    fstab_line="$mapped /var/lib/retina-appliance ext4 defaults,nodev,nosuid,noexec 0 2"
    append_line "$ROOT/etc/crypttab" "$crypttab_line"
    append_line "$ROOT/etc/fstab" "$fstab_line"
    run mkdir -p "$DATA"
    run mount -o nodev,nosuid,noexec "$mapped" "$DATA"
    if [[ "$DRY_RUN" == 0 ]]; then
        cat >&2 <<SHOWN
install.sh: ****************************************************************************
install.sh:  LUKS RECOVERY PASSPHRASE for $dev (shown once, stored nowhere on this box):
install.sh:
install.sh:      $recovery
install.sh:
install.sh:  Write it down and keep it locked away, off the device. It unlocks the patient data
install.sh:  when the ${mode/keyfile/key file} cannot (TPM cleared, board replaced, key file lost).
install.sh: ****************************************************************************
SHOWN
    fi
    ENC_DEVICE="$dev" ENC_UUID="$uuid" ENC_UNLOCK="$mode" ENC_CRYPTTAB="$crypttab_line"
    ENC_FSTAB="$fstab_line"
}

# append_line FILE LINE: add LINE to FILE unless it is there already
append_line() {
    local file="$1" line="$2"
    if [[ -f "$file" ]] && grep -qxF -- "$line" "$file"; then
        return 0
    fi
    if [[ "$DRY_RUN" == 1 ]]; then
        echo "would append to $file: $line"
    else
        mkdir -p "$(dirname "$file")"
        printf '%s\n' "$line" >> "$file"
    fi
}

if [[ -n "$ENCRYPT_DEVICE" ]]; then
    encrypt_data_volume
fi

# -- directories -----------------------------------------------------------------------------
run mkdir -p "$RELEASE/models" "$OPT/bin" "$ETC/tls" "$DATA" "$UNITS" "$JOURNALD"
run chmod 0755 "$OPT"
run chmod 0700 "$DATA"
if [[ -z "$ROOT" ]]; then
    run chown "$SERVICE_USER:$SERVICE_USER" "$DATA"
fi

# -- models (hash-checked by the appliance at start against their cards) --------------------
for model in "$SOURCE"/models/*.card.json "$SOURCE"/models/*.onnx "$SOURCE"/models/domain.json; do
    [[ -f "$model" ]] || continue
    install_file "$model" "$RELEASE/models/$(basename "$model")" 0644
done

# -- venv and onnxruntime --------------------------------------------------------------------
PROVIDER_SMOKE="not checked (--no-pip)"
ORT_VERSION="not installed"
if [[ "$NO_PIP" == 0 ]]; then
    VENV="$RELEASE/venv"
    # Exactly the locked set for this machine (firmware_scripts/requirements/, with hashes).
    case "$PLATFORM" in
        x86-gpu) run "$SOURCE/firmware_scripts/install-venv" "$VENV" gpu --source "$SOURCE" ;;
        jetson) run "$SOURCE/firmware_scripts/install-venv" "$VENV" runtime --source "$SOURCE" --ort-wheel "$ORT_WHEEL" ;;
        *) run "$SOURCE/firmware_scripts/install-venv" "$VENV" runtime --source "$SOURCE" ;;
    esac
    if [[ "$DRY_RUN" == 0 ]]; then
        ORT_VERSION="$("$VENV/bin/python" -c 'import onnxruntime; print(onnxruntime.__version__)')"
        # Which provider a model REALLY runs on (a session is opened, not just listed).
        PROVIDER_SMOKE="$("$VENV/bin/python" - "$RELEASE/models" "$DATA/trt-cache" <<'PY'
import sys
from pathlib import Path

from appliance.inference import find_cards
from appliance.inference.runtime import ModelSession, choose_providers

cards = find_cards(Path(sys.argv[1]))
if not cards:
    print("no models")
else:
    card = cards[0]
    variant = "int8" if "int8" in card.variants() else card.variants()[0]
    session = ModelSession(card, variant, choose_providers(trt_cache=Path(sys.argv[2])))
    print(session.providers_in_use[0])
PY
)" || PROVIDER_SMOKE="smoke check failed"
        note "models run on: $PROVIDER_SMOKE"
        if [[ "$PLATFORM" != cpu && "$PROVIDER_SMOKE" == CPUExecutionProvider ]]; then
            echo "install.sh: WARNING: platform $PLATFORM but the models fall back to the CPU" >&2
        fi
    fi
fi
link "releases/$VERSION" "$OPT/current"
link "current/venv" "$OPT/venv"
link "current/models" "$OPT/models"

# -- scripts ---------------------------------------------------------------------------------
for script in health-check build-engines backup.sh update.sh; do
    install_file "$SCRIPT_DIR/$script" "$OPT/bin/$script" 0755
done

# -- data dir encryption check ---------------------------------------------------------------
ENCRYPTED=false
if [[ -d "$DATA" ]] && command -v findmnt >/dev/null 2>&1; then
    SOURCE_DEV="$(findmnt -n -o SOURCE --target "$DATA" 2>/dev/null | head -n1 || true)"
    SOURCE_DEV="${SOURCE_DEV%%[*}"
    if [[ "$SOURCE_DEV" == /dev/* ]] && command -v lsblk >/dev/null 2>&1 \
        && lsblk -s -n -o TYPE "$SOURCE_DEV" 2>/dev/null | grep -qx crypt; then
        ENCRYPTED=true
    fi
fi
if [[ "$ENCRYPTED" == false && "$NO_ENCRYPTION" == 1 ]]; then
    cat >&2 <<WARN
install.sh: WARNING  The data dir $DATA is NOT encrypted at rest. --no-encryption-i-understand:
install.sh: WARNING  this is a DEVELOPMENT box; the opt-out is recorded in the manifest (who,
install.sh: WARNING  when) and health-check reports it as a warning. Never hold real patient data here.
WARN
elif [[ "$ENCRYPTED" == false ]]; then
    cat >&2 <<WARN
install.sh: WARNING ***************************************************************
install.sh: WARNING  The data dir $DATA is NOT on an encrypted (dm-crypt/LUKS) volume.
install.sh: WARNING  Patient images would be stored unencrypted at rest, and health-check
install.sh: WARNING  FAILS until it is: run install.sh --encrypt-device DEV (see
install.sh: WARNING  firmware_scripts/README.md), or --no-encryption-i-understand on a dev box.
install.sh: WARNING ***************************************************************
WARN
fi

# -- TLS certificate (self-signed; replace with a site certificate when there is one) -------
if [[ -f "$ETC/tls/key.pem" && -f "$ETC/tls/cert.pem" ]]; then
    note "TLS certificate exists, kept"
else
    CN="$(hostname 2>/dev/null || echo retina-appliance)"
    # umask 077: the private key is never readable by others, not even for a moment.
    (
        umask 077
        run openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -days 825 -subj "/CN=$CN" -addext "subjectAltName=DNS:$CN,DNS:localhost,IP:127.0.0.1" \
            -keyout "$ETC/tls/key.pem" -out "$ETC/tls/cert.pem" 2>/dev/null
    )
fi
chmod_if 0640 "$ETC/tls/key.pem"  # group: the service user, which serves HTTPS with it
if [[ -z "$ROOT" && "$DRY_RUN" == 0 && -f "$ETC/tls/key.pem" ]]; then
    chown "root:$SERVICE_USER" "$ETC/tls/key.pem"
fi
chmod_if 0644 "$ETC/tls/cert.pem"
INSTALLED+=("/etc/retina-appliance/tls/cert.pem" "/etc/retina-appliance/tls/key.pem")

# -- backup recipient (public key only: the private key that decrypts backups stays off the box)
if [[ -n "$BACKUP_RECIPIENT" ]]; then
    append_line "$ETC/backup-recipients.txt" "$BACKUP_RECIPIENT"
    chmod_if 0644 "$ETC/backup-recipients.txt"
fi
[[ -f "$ETC/backup-recipients.txt" ]] && INSTALLED+=("/etc/retina-appliance/backup-recipients.txt")

# -- appliance.toml (kept when it exists: a technician may have set api_token etc.) --------
CONFIG="$ETC/appliance.toml"
INSTALLED+=("/etc/retina-appliance/appliance.toml")
if [[ -f "$CONFIG" ]]; then
    note "$CONFIG exists, kept (delete it to regenerate)"
elif [[ "$DRY_RUN" == 1 ]]; then
    echo "would write: $CONFIG (web_host = \"$LISTEN\", dicom_port = $DICOM_PORT)"
else
    # HTTPS whenever the UI is reachable from the network; the local kiosk uses loopback HTTP.
    TLS_LINES='# web_tls_cert = "/etc/retina-appliance/tls/cert.pem"   # HTTPS when both are set
# web_tls_key = "/etc/retina-appliance/tls/key.pem"'
    if [[ "$LISTEN" != 127.0.0.1 && "$LISTEN" != localhost && "$LISTEN" != ::1 ]]; then
        TLS_LINES='web_tls_cert = "/etc/retina-appliance/tls/cert.pem"
web_tls_key = "/etc/retina-appliance/tls/key.pem"'
    fi
    cat > "$CONFIG" <<TOML
# Retinal screening appliance settings; reference: docs/settings.md of the source tree.
# Paths are the ones on the device (this file is read by the installed service).
data_dir = "/var/lib/retina-appliance"
models_dir = "/opt/retina-appliance/models"
trt_cache_dir = "/var/lib/retina-appliance/trt-cache"
web_host = "$LISTEN"
web_port = 8080
dicom_port = $DICOM_PORT
log_level = "INFO"
# api_token = "..."   # uploads are refused until one is set
$TLS_LINES
TOML
    chmod 0640 "$CONFIG"
    if [[ -z "$ROOT" ]]; then
        chown "root:$SERVICE_USER" "$CONFIG"
    fi
fi

# -- first web admin --------------------------------------------------------------------------
# APPLIANCE_CLI lets the CI tree test (--no-pip) use an existing appliance command.
APP_CLI="${APPLIANCE_CLI:-$RELEASE/venv/bin/appliance}"
if [[ -n "$ADMIN" ]]; then
    if [[ "$DRY_RUN" == 1 ]]; then
        echo "would create the first web admin '$ADMIN' (unless an admin exists)"
    elif [[ ! -x "$APP_CLI" ]]; then
        die "--admin needs the installed appliance command ($APP_CLI)"
    else
        as_service() {
            if [[ -z "$ROOT" ]]; then
                runuser -u "$SERVICE_USER" -- env APPLIANCE_DATA_DIR="$DATA" "$@"
            else
                env APPLIANCE_DATA_DIR="$DATA" "$@"
            fi
        }
        USERS_JSON="$(as_service "$APP_CLI" --config "$CONFIG" users list --json)" \
            || die "could not list the web users"
        if [[ "$USERS_JSON" == *'"role": "admin"'* ]]; then
            note "a web admin exists, --admin $ADMIN skipped"
        else
            printf '%s\n' "$ADMIN_PASSWORD" \
                | as_service "$APP_CLI" --config "$CONFIG" users add "$ADMIN" --role admin \
                || die "could not create the first admin"
        fi
    fi
fi

# -- systemd units and journald limits -------------------------------------------------------
for unit in retina-appliance.service retina-health.service retina-health.timer \
    retina-health-failed.service retina-kiosk.service; do
    install_file "$SCRIPT_DIR/systemd/$unit" "$UNITS/$unit" 0644
done
install_file "$SCRIPT_DIR/journald/retina.conf" "$JOURNALD/retina.conf" 0644

if [[ -z "$ROOT" ]]; then
    run systemctl daemon-reload
    run systemctl restart systemd-journald
    run systemctl enable --now retina-appliance.service retina-health.timer
    # retina-kiosk.service stays disabled; see firmware_scripts/README.md.
fi

# -- manifest --------------------------------------------------------------------------------
MANIFEST="$OPT/manifest.json"
if [[ "$DRY_RUN" == 1 ]]; then
    echo "would write: $MANIFEST"
else
    python3 - "$MANIFEST" "$PLATFORM" "$ORT_CHOICE" "$ORT_VERSION" "$PROVIDER_SMOKE" \
        "$ENCRYPTED" "$VERSION" "$SERVICE_USER" "$( [[ -z "$ROOT" ]] && echo yes || echo no )" \
        "$LISTEN" "$LOCK_FILE" "$ORT_WHEEL" "$NO_ENCRYPTION" "${SUDO_USER:-$(id -un)}" \
        "$ENC_DEVICE" "$ENC_UUID" "$ENC_UNLOCK" "$ENC_CRYPTTAB" "$ENC_FSTAB" \
        "${INSTALLED[@]}" <<'PY'
import hashlib
import json
import os
import platform
import sys
from datetime import datetime, timezone

(path, plat, choice, ort_version, provider, encrypted, version, user, created, listen,
 lock, wheel, no_encryption, operator, enc_device, enc_uuid, enc_unlock, enc_crypttab,
 enc_fstab, *files) = sys.argv[1:]
now = datetime.now(timezone.utc).isoformat(timespec="seconds")
try:
    previous = json.load(open(path, encoding="utf-8"))
except (OSError, ValueError):
    previous = {}


def sha256(name: str) -> str | None:
    return hashlib.sha256(open(name, "rb").read()).hexdigest() if os.path.isfile(name) else None



manifest = {
    "platform": plat,
    "machine": platform.machine(),
    "onnxruntime": {"choice": choice, "version": ort_version, "provider_in_use": provider,
                    "vendor_wheel_sha256": sha256(wheel) if wheel else None},
    "dependency_lock": {"file": os.path.basename(lock), "sha256": sha256(lock)},
    "encrypted": encrypted == "true",
    "versions": {"appliance": version, "python": platform.python_version()},
    "service_user": {"name": user, "created": created == "yes"},
    "web_host": listen,
    "data_dir": "/var/lib/retina-appliance",
    "installed_files": sorted(set(files)),
    "installed_at": now,
}
# The LUKS volume set up by --encrypt-device (kept from the run that made it).
if enc_device:
    manifest["encryption"] = {
        "device": enc_device, "luks_uuid": enc_uuid, "type": "luks2",
        "mapper": "/dev/mapper/retina-data", "unlock": enc_unlock,
        "key_file": "/etc/retina-appliance/luks.key" if enc_unlock == "keyfile" else None,
        "crypttab": enc_crypttab, "fstab": enc_fstab, "formatted_at": now,
    }
elif previous.get("encryption"):
    manifest["encryption"] = previous["encryption"]
# The development opt-out: kept (with who and when it was first given) while the data dir
# is unencrypted, dropped once it is encrypted.
if encrypted != "true":
    if previous.get("encryption_opt_out"):
        manifest["encryption_opt_out"] = previous["encryption_opt_out"]
    elif no_encryption == "1":
        manifest["encryption_opt_out"] = {
            "set_by": "install.sh --no-encryption-i-understand", "user": operator, "at": now,
        }
with open(path, "w", encoding="utf-8") as out:
    json.dump(manifest, out, indent=2)
    out.write("\n")
PY
    chmod 0644 "$MANIFEST"
fi

cat <<'DONE'

install.sh: done.
  Health:  /opt/retina-appliance/bin/health-check   (also every 2 min: retina-health.timer)
  Engines: /opt/retina-appliance/bin/build-engines  (TensorRT boxes, once after install)
  Users:   first admin (unless --admin was given): sudo -u retina APPLIANCE_CONFIG=/etc/retina-appliance/appliance.toml
           /opt/retina-appliance/venv/bin/appliance users add NAME --role admin
           then add operators and clinicians in the web UI (Admin > Users).
DONE
