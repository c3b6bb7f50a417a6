"""systemd notify protocol: `appliance serve` says READY, feeds the watchdog, says STOPPING."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.runtime import sdnotify
from tests.conftest import free_port


def _listen(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(60)
    return sock


def test_serve_notifies_ready_watchdog_and_stopping(tmp_path: Path) -> None:
    sock = _listen(tmp_path / "notify.sock")
    env = {
        **os.environ,
        "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
        "WATCHDOG_USEC": "400000",  # feed every 0.2 s
        "APPLIANCE_DATA_DIR": str(tmp_path / "data"),
        "APPLIANCE_WEB_PORT": str(free_port()),
        "APPLIANCE_DICOM_HOST": "127.0.0.1",
        "APPLIANCE_DICOM_PORT": str(free_port()),
        "APPLIANCE_MODELS_DIR": str(tmp_path / "no-models"),
        "APPLIANCE_MIN_FREE_DISK_MB": "0",
    }
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        seen = [sock.recv(256).decode() for _ in range(4)]
        assert seen[0] == "READY=1"
        assert seen[1:] == ["WATCHDOG=1"] * 3
        proc.send_signal(signal.SIGTERM)
        while (message := sock.recv(256).decode()) == "WATCHDOG=1":
            pass
        assert message == "STOPPING=1"
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()


def test_no_watchdog_beat_while_unhealthy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sock = _listen(tmp_path / "n.sock")
    sock.settimeout(0.5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "n.sock"))
    healthy = {"now": False}
    watchdog = sdnotify.Watchdog(lambda: healthy["now"], 0.05)
    try:
        watchdog.start()
        with pytest.raises(TimeoutError):
            sock.recv(64)
        healthy["now"] = True
        sock.settimeout(5)
        assert sock.recv(64) == b"WATCHDOG=1"
    finally:
        watchdog.stop()
        sock.close()


def test_watchdog_interval_and_no_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert sdnotify.notify("READY=1") is False
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert sdnotify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    assert sdnotify.watchdog_interval() == 1.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
    assert sdnotify.watchdog_interval() is None
