"""systemd notifications (``Type=notify``): ready, watchdog keep-alive, stopping.

Speaks the sd_notify datagram protocol directly (a few lines; no dependency). Outside systemd
``NOTIFY_SOCKET`` is unset and every call is a no-op. The watchdog is only fed while the
service answers its own liveness check, so a wedged process is restarted by systemd.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable

LOGGER = logging.getLogger(__name__)


def notify(message: str) -> bool:
    """Send ``message`` (e.g. ``"READY=1"``) to systemd; False when not run by systemd."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        LOGGER.warning("sd_notify failed: %s", exc)
        return False
    return True


def watchdog_interval() -> float | None:
    """Half of systemd's WatchdogSec for this process, or None when no watchdog is set."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000


class Watchdog:
    """Feeds systemd's watchdog every half period while ``alive()`` returns True."""

    def __init__(self, alive: Callable[[], bool], interval: float) -> None:
        self.alive = alive
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sd-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                healthy = self.alive()
            except Exception:  # a failing check is a missed beat, never a crash
                LOGGER.exception("liveness check failed")
                healthy = False
            if healthy:
                notify("WATCHDOG=1")
            else:
                LOGGER.error("liveness check failed: not feeding the systemd watchdog")
