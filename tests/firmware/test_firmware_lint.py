"""Static checks of the provisioning scripts: shellcheck, systemd-analyze verify, --help."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_tool

SCRIPTS = Path(__file__).resolve().parents[2] / "firmware_scripts"
SHELL_SCRIPTS = sorted(SCRIPTS.glob("*.sh"))
PYTHON_SCRIPTS = [SCRIPTS / "health-check", SCRIPTS / "build-engines"]
UNITS = sorted((SCRIPTS / "systemd").glob("*.service")) + sorted(
    (SCRIPTS / "systemd").glob("*.timer")
)


def test_the_expected_scripts_exist() -> None:
    names = {p.name for p in SHELL_SCRIPTS}
    assert {"install.sh", "update.sh", "backup.sh"} <= names
    for script in SHELL_SCRIPTS + PYTHON_SCRIPTS:
        assert script.stat().st_mode & 0o111, f"{script.name} is not executable"
    for script in SHELL_SCRIPTS:
        assert "set -euo pipefail" in script.read_text()


def test_shellcheck_is_clean() -> None:
    shellcheck = require_tool("shellcheck")
    done = subprocess.run(
        [shellcheck, "--severity=style", *map(str, SHELL_SCRIPTS)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("script", SHELL_SCRIPTS + PYTHON_SCRIPTS, ids=lambda p: p.name)
def test_help(script: Path) -> None:
    command = [sys.executable, str(script)] if script in PYTHON_SCRIPTS else [str(script)]
    done = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "usage" in done.stdout.lower()


def test_units_verify(tmp_path: Path) -> None:
    """systemd-analyze verify on copies whose binaries and users exist on this machine."""
    analyze = require_tool("systemd-analyze")
    copies = []
    for unit in UNITS:
        text = unit.read_text()
        text = re.sub(r"^ExecStart=.*$", "ExecStart=/bin/true", text, flags=re.M)
        text = re.sub(r"^(User|Group)=.*$", r"\1=root", text, flags=re.M)
        copy = tmp_path / unit.name
        copy.write_text(text)
        copies.append(str(copy))
    done = subprocess.run(
        [analyze, "verify", "--man=no", *copies], capture_output=True, text=True, timeout=60
    )
    # verify may note unrelated host units; anything naming ours is a finding
    ours = [line for line in done.stderr.splitlines() if "retina-" in line]
    assert done.returncode == 0 and not ours, done.stderr


def test_appliance_unit_contents() -> None:
    text = (SCRIPTS / "systemd" / "retina-appliance.service").read_text()
    for line in (
        "User=retina",
        "ExecStart=/opt/retina-appliance/venv/bin/appliance "
        "--config /etc/retina-appliance/appliance.toml serve",
        "Restart=always",
        "RestartSec=2",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=no",
        "ReadWritePaths=/var/lib/retina-appliance",
        "CapabilityBoundingSet=",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallArchitectures=native",
        "UMask=0077",
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=60",
    ):
        assert re.search(rf"^{re.escape(line)}$", text, re.M), line
    timer = (SCRIPTS / "systemd" / "retina-health.timer").read_text()
    assert "OnUnitActiveSec=2min" in timer
    kiosk = (SCRIPTS / "systemd" / "retina-kiosk.service").read_text()
    assert "--kiosk" in kiosk and "http://127.0.0.1:8080/" in kiosk
