"""install.sh --encrypt-device: LUKS2 on the data volume, in a --root tree.

There is no spare disk here (and no device mapper in a sandbox): a plain file stands in for
the device (install.sh accepts one only under --root). Where cryptsetup is installed, the
LUKS2 header, the key file and the recovery passphrase are REAL (cryptsetup works on a file);
only what needs the kernel (`cryptsetup open`, mkfs on the mapping, mount, the TPM) is a
PATH-injected fake that logs its arguments, as are findmnt/lsblk that then report the
mounted mapping as dm-crypt.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_tool

SCRIPTS = Path(__file__).resolve().parents[2] / "firmware_scripts"

FAKE = """#!/bin/sh
echo "{name} $*" >> "{log}"
{body}
"""
BODIES = {
    # real cryptsetup for luksFormat/luksAddKey/luksUUID (on the file); `open` needs the kernel
    # (and a fast key derivation for the test only: argon2id's default takes seconds and 1 GiB)
    "cryptsetup": 'if [ "$1" = open ]; then cat >/dev/null; exit 0; fi\n'
    'case "$1" in luksFormat|luksAddKey) op="$1"; shift; '
    'exec {real} "$op" --pbkdf pbkdf2 --pbkdf-force-iterations 1000 "$@" ;; esac\n'
    'exec {real} "$@"',
    "systemd-cryptenroll": 'echo "PASSWORD=${{PASSWORD:+set}}" >> "{log}"',
    "mkfs.ext4": "exit 0",
    "mount": "exit 0",
    # a mounted --source answers 1 (not mounted); --target answers the mapping
    "findmnt": 'case "$*" in *--source*) exit 1 ;; esac\necho /dev/mapper/retina-data',
    "lsblk": 'case "$*" in *"-o TYPE"*) printf "crypt\\npart\\ndisk\\n" ;; esac',
}


def fakes(folder: Path, real_cryptsetup: str = "/bin/false") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "calls.log"
    for name, body in BODIES.items():
        tool = folder / name
        tool.write_text(
            FAKE.format(name=name, log=log, body=body.format(real=real_cryptsetup, log=log))
        )
        tool.chmod(0o755)
    return folder


def install(root: Path, bin_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        [str(SCRIPTS / "install.sh"), "--root", str(root), "--no-pip", "--platform", "cpu", *extra],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip


def device(tmp_path: Path, mib: int = 32) -> Path:
    disk = tmp_path / "disk.img"
    with disk.open("wb") as out:
        out.truncate(mib * 2**20)
    return disk


def calls(bin_dir: Path) -> list[str]:
    return (bin_dir / "calls.log").read_text().splitlines()


def test_dry_run_prints_every_step_and_changes_nothing(tmp_path: Path) -> None:
    disk = device(tmp_path)
    bin_dir = fakes(tmp_path / "bin")
    root = tmp_path / "root"
    done = install(root, bin_dir, "--encrypt-device", str(disk), "--unlock", "keyfile", "--dry-run")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    steps = [
        f"would run: cryptsetup luksFormat --type luks2 --batch-mode --key-file=- {disk}",
        f"would write: {root}/etc/retina-appliance/luks.key (64 random bytes, mode 0400, root)",
        f"would run: cryptsetup luksAddKey --key-file=- {disk} "
        f"{root}/etc/retina-appliance/luks.key",
        f"would run: cryptsetup open --type luks2 --key-file=- {disk} retina-data",
        "would run: mkfs.ext4 -q -L retina-data /dev/mapper/retina-data",
        f"would append to {root}/etc/crypttab: retina-data UUID=<UUID of {disk}> "
        "/etc/retina-appliance/luks.key luks",
        f"would append to {root}/etc/fstab: /dev/mapper/retina-data /var/lib/retina-appliance "
        "ext4 defaults,nodev,nosuid,noexec 0 2",
        "would run: mount -o nodev,nosuid,noexec /dev/mapper/retina-data "
        f"{root}/var/lib/retina-appliance",
    ]
    positions = [out.find(step) for step in steps]
    assert all(p >= 0 for p in positions), [
        s for s, p in zip(steps, positions, strict=True) if p < 0
    ]
    assert positions == sorted(positions)  # in this order
    assert not root.exists()
    assert disk.read_bytes() == bytes(32 * 2**20)  # the device untouched
    assert not any(c.startswith(("cryptsetup", "mkfs", "mount")) for c in calls(bin_dir))
    tpm = install(root, bin_dir, "--encrypt-device", str(disk), "--unlock", "tpm2", "--dry-run")
    assert tpm.returncode == 0, tpm.stderr
    assert f"would run: systemd-cryptenroll --tpm2-device=auto --tpm2-pcrs=7 {disk}" in tpm.stdout
    assert "retina-data UUID=<UUID of" in tpm.stdout and "none luks,tpm2-device=auto" in tpm.stdout
    assert "luks.key" not in tpm.stdout


def test_a_device_holding_a_filesystem_is_refused_without_wipe(tmp_path: Path) -> None:
    mkfs = shutil.which("mkfs.ext4") or shutil.which("mkfs.ext4", path="/usr/sbin:/sbin")
    if mkfs is None:
        pytest.skip("mkfs.ext4 is not installed")
    require_tool("blkid")
    disk = device(tmp_path)
    subprocess.run([mkfs, "-q", "-F", str(disk)], check=True, capture_output=True)
    before = disk.read_bytes()
    bin_dir = fakes(tmp_path / "bin")
    root = tmp_path / "root"
    for extra in ((), ("--dry-run",)):
        done = install(root, bin_dir, "--encrypt-device", str(disk), *extra)
        assert done.returncode != 0
        assert "holds a 'ext4' signature: refusing to format it (give --wipe" in done.stderr
    assert disk.read_bytes() == before
    dry = install(root, bin_dir, "--encrypt-device", str(disk), "--wipe", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would run: wipefs -a {disk}" in dry.stdout
    assert disk.read_bytes() == before


def test_a_disk_with_a_partition_table_is_refused(tmp_path: Path) -> None:
    sfdisk = shutil.which("sfdisk") or shutil.which("sfdisk", path="/usr/sbin:/sbin")
    if sfdisk is None:
        pytest.skip("sfdisk is not installed")
    require_tool("blkid")
    disk = device(tmp_path)
    subprocess.run([sfdisk, "-q", str(disk)], input="label: gpt\n,\n", text=True, check=True,
                   capture_output=True)  # fmt: skip
    done = install(tmp_path / "root", fakes(tmp_path / "bin"), "--encrypt-device", str(disk),
                   "--dry-run")  # fmt: skip
    assert done.returncode != 0 and "holds a 'gpt' signature" in done.stderr


def test_a_mounted_device_is_refused_even_with_wipe(tmp_path: Path) -> None:
    bin_dir = fakes(tmp_path / "bin")
    (bin_dir / "lsblk").write_text("#!/bin/sh\necho\necho /boot\n")  # a partition is mounted
    done = install(tmp_path / "root", bin_dir, "--encrypt-device", str(device(tmp_path)),
                   "--wipe", "--dry-run")  # fmt: skip
    assert done.returncode != 0 and "is mounted: refusing to format it" in done.stderr


def test_refusals(tmp_path: Path) -> None:
    bin_dir = fakes(tmp_path / "bin")
    root = tmp_path / "root"
    missing = install(root, bin_dir, "--encrypt-device", str(tmp_path / "nope"), "--dry-run")
    assert missing.returncode != 0 and "is not a block device" in missing.stderr
    disk = device(tmp_path)
    both = install(root, bin_dir, "--encrypt-device", str(disk), "--no-encryption-i-understand")
    assert both.returncode != 0 and "exclude each other" in both.stderr
    data = root / "var/lib/retina-appliance"
    data.mkdir(parents=True)
    (data / "appliance.db").write_bytes(b"x")
    full = install(root, bin_dir, "--encrypt-device", str(disk), "--dry-run")
    assert full.returncode != 0 and "is not empty" in full.stderr
    bad = install(root, bin_dir, "--unlock", "fingerprint", "--dry-run")
    assert bad.returncode != 0 and "--unlock must be" in bad.stderr


@pytest.mark.parametrize("unlock", ["keyfile", "tpm2"])
def test_luks2_for_real_on_a_file(tmp_path: Path, unlock: str) -> None:
    """The real cryptsetup formats the stand-in device: LUKS2, the recovery passphrase shown
    once unlocks it, the key file (0400) unlocks it, crypttab/fstab/manifest say so."""
    real = require_tool("cryptsetup")
    disk = device(tmp_path)
    bin_dir = fakes(tmp_path / "bin", real)
    root = tmp_path / "root"
    done = install(root, bin_dir, "--encrypt-device", str(disk), "--unlock", unlock)
    assert done.returncode == 0, done.stderr
    shown = re.search(
        r"stored nowhere on this box\):\ninstall.sh:\ninstall.sh:\s+(\S+)\n", done.stderr
    )
    assert shown, done.stderr
    recovery = shown.group(1)
    assert len(recovery) == 44  # base64 of 32 random bytes
    assert subprocess.run([real, "isLuks", "--type", "luks2", str(disk)]).returncode == 0
    uuid = subprocess.run(
        [real, "luksUUID", str(disk)], capture_output=True, text=True, check=True
    ).stdout.strip()

    def unlocks(*key: str, stdin: str | None = None) -> bool:
        return subprocess.run(
            [real, "open", "--test-passphrase", *key, str(disk)],
            input=stdin, capture_output=True, text=True,
        ).returncode == 0  # fmt: skip

    assert unlocks("--key-file=-", stdin=recovery)
    assert not unlocks("--key-file=-", stdin="wrong passphrase")
    key = root / "etc/retina-appliance/luks.key"
    crypttab = (root / "etc/crypttab").read_text().splitlines()
    if unlock == "keyfile":
        assert key.stat().st_mode & 0o777 == 0o400 and key.stat().st_size == 64
        assert unlocks("--key-file", str(key))
        assert crypttab == [f"retina-data UUID={uuid} /etc/retina-appliance/luks.key luks"]
    else:
        assert not key.exists()
        assert crypttab == [f"retina-data UUID={uuid} none luks,tpm2-device=auto"]
        log = calls(bin_dir)
        assert f"systemd-cryptenroll --tpm2-device=auto --tpm2-pcrs=7 {disk}" in log
        assert "PASSWORD=set" in log  # the recovery passphrase reached it, not on the command line
    assert recovery not in "".join(calls(bin_dir))  # never on a command line
    assert (root / "etc/retina-appliance").stat().st_mode & 0o777 == 0o755  # retina reads the toml
    assert (root / "etc/fstab").read_text().splitlines() == [
        "/dev/mapper/retina-data /var/lib/retina-appliance ext4 defaults,nodev,nosuid,noexec 0 2"
    ]
    log = calls(bin_dir)
    assert f"cryptsetup open --type luks2 --key-file=- {disk} retina-data" in log
    assert "mkfs.ext4 -q -L retina-data /dev/mapper/retina-data" in log
    data = root / "var/lib/retina-appliance"
    assert f"mount -o nodev,nosuid,noexec /dev/mapper/retina-data {data}" in log
    for path in root.rglob("*"):  # the passphrase is written nowhere
        if path.is_file():
            assert recovery.encode() not in path.read_bytes(), path
    manifest = json.loads((root / "opt/retina-appliance/manifest.json").read_text())
    assert manifest["encrypted"] is True  # findmnt/lsblk (fakes) see the mapping as crypt
    assert manifest["encryption"]["device"] == str(disk)
    assert manifest["encryption"]["luks_uuid"] == uuid
    assert manifest["encryption"]["unlock"] == unlock
    assert "encryption_opt_out" not in manifest
    # a second run (no --encrypt-device) keeps the record and formats nothing
    header = disk.read_bytes()[: 16 * 2**20]
    again = install(root, bin_dir)
    assert again.returncode == 0, again.stderr
    assert disk.read_bytes()[: 16 * 2**20] == header
    assert (
        json.loads((root / "opt/retina-appliance/manifest.json").read_text())["encryption"]
        == manifest["encryption"]
    )
    # and a device that is already LUKS is refused without --wipe
    twice = install(tmp_path / "other", bin_dir, "--encrypt-device", str(disk), "--dry-run")
    assert twice.returncode != 0 and "'crypto_LUKS' signature" in twice.stderr


def test_the_development_opt_out_is_recorded(tmp_path: Path) -> None:
    root = tmp_path / "root"
    env = dict(os.environ, SUDO_USER="devtech")
    args = [str(SCRIPTS / "install.sh"), "--root", str(root), "--no-pip", "--platform", "cpu"]
    done = subprocess.run(
        [*args, "--no-encryption-i-understand"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "DEVELOPMENT box" in done.stderr
    manifest_path = root / "opt/retina-appliance/manifest.json"
    opt_out = json.loads(manifest_path.read_text())["encryption_opt_out"]
    assert opt_out["set_by"] == "install.sh --no-encryption-i-understand"
    assert opt_out["user"] == "devtech" and opt_out["at"]
    again = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 0, again.stderr
    assert (
        json.loads(manifest_path.read_text())["encryption_opt_out"] == opt_out
    )  # first record kept
    # health-check accepts it from the manifest as a warning; without it, a failure
    health = subprocess.run(
        ["python3", str(SCRIPTS / "health-check"), "--url", "http://127.0.0.1:9", "--timeout", "1",
         "--data-dir", str(root / "var/lib/retina-appliance"), "--manifest", str(manifest_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    report = json.loads(health.stdout)
    assert report["checks"]["encryption"]["ok"] is True
    assert report["checks"]["encryption"]["opt_out"]["user"] == "devtech"
    assert "encryption" in report["warnings"]


def test_backup_recipient(tmp_path: Path) -> None:
    root = tmp_path / "root"
    bin_dir = fakes(tmp_path / "bin")
    public = "age1" + "q" * 58
    done = install(root, bin_dir, "--backup-recipient", public)
    assert done.returncode == 0, done.stderr
    recipients = root / "etc/retina-appliance/backup-recipients.txt"
    assert recipients.read_text() == public + "\n" and recipients.stat().st_mode & 0o777 == 0o644
    assert install(root, bin_dir, "--backup-recipient", public).returncode == 0
    assert recipients.read_text() == public + "\n"  # not twice
    secret = install(root, bin_dir, "--backup-recipient", "AGE-SECRET-KEY-1" + "Q" * 58)
    assert secret.returncode != 0 and "PRIVATE key" in secret.stderr
