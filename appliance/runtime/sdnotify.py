"""systemd notifications (``Type=notify``): ready, watchdog keep-alive, stopping.

Speaks the sd_notify datagram protocol directly (a few lines; no dependency). Outside systemd
``NOTIFY_SOCKET`` is unset and every call is a no-op. The watchdog is only fed while the
service answers its own liveness check, so a wedged process is restarted by systemd.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable

from appliance.loops import BackgroundLoop

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


class Watchdog(BackgroundLoop):
    """Feeds systemd's watchdog every half period while ``alive()`` returns True."""

    def __init__(self, alive: Callable[[], bool], interval: float) -> None:
        self.alive = alive
        super().__init__("sd-watchdog", self.beat, interval, "liveness check failed",
                         join_seconds=5, delay_first=True, logger=LOGGER)  # fmt: skip

    def beat(self) -> None:
        """One beat: fed only while the liveness check passes."""
        try:
            healthy = self.alive()
        except Exception:  # a failing check is a missed beat, never a crash
            LOGGER.exception("liveness check failed")
            healthy = False
        if healthy:
            notify("WATCHDOG=1")
        else:
            LOGGER.error("liveness check failed: not feeding the systemd watchdog")
