"""One background thread that works, sleeps, wakes when told and stops cleanly.

The pipeline worker, the forwarder, storage commitment, retention, the hot folder and the
systemd watchdog each run one: ``step`` is a pass of their work; an exception in it is logged
(``failure``) and never ends the thread. After a pass the loop sleeps ``interval`` seconds (read
at each sleep, so a test may shorten it) unless ``until_idle`` is set and the pass found work,
then it goes again at once. ``notify`` ends a sleep early; ``stop`` ends the loop and waits up
to ``join_seconds`` for the pass under way.

Stages own their loops, so this module sits beside ``config`` and ``errors``: it imports
nothing from the appliance.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

LOGGER = logging.getLogger(__name__)


class BackgroundLoop:
    def __init__(
        self,
        name: str,
        step: Callable[[], object],
        *,
        interval: float | Callable[[], float],
        failure: str,
        join_seconds: float = 60.0,
        until_idle: bool = False,
        delay_first: bool = False,
        logger: logging.Logger = LOGGER,
    ) -> None:
        self.name = name
        self.step = step
        self.interval = interval
        self.failure = failure
        self.join_seconds = join_seconds
        self.until_idle = until_idle  # a pass that found work is followed at once by another
        self.delay_first = delay_first  # sleep before the first pass, not after it
        self.logger = logger  # the owner's, so its failures are logged under its name
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def stopping(self) -> bool:
        """True once ``stop`` was called: a long pass may end early."""
        return self._stop.is_set()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def notify(self) -> None:
        """End the current sleep: there is work."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.join_seconds)
            self._thread = None

    def _sleep(self) -> None:
        seconds = self.interval() if callable(self.interval) else self.interval
        self._wake.wait(seconds)
        self._wake.clear()

    def _run(self) -> None:
        if self.delay_first:
            self._sleep()
        while not self._stop.is_set():
            try:
                busy = self.step()
            except Exception:
                self.logger.exception(self.failure)
                busy = False
            if not (self.until_idle and busy) and not self._stop.is_set():
                self._sleep()
