"""One background thread that works, sleeps, wakes when told and stops cleanly.

The pipeline worker, the forwarder, storage commitment, retention, the hot folder and the
systemd watchdog are each a ``BackgroundLoop``: ``step`` is one pass of their work; an
exception in it is logged (``failure``) and never ends the thread. After a pass the loop
sleeps ``interval`` seconds (a number, or a callable read at each sleep, so a test may
shorten it) unless ``until_idle`` is set and the pass found work: then it goes again at
once. ``notify`` ends a sleep early; ``stop`` ends the loop and waits up to ``join_seconds``
for the pass under way; ``start`` may follow a ``stop``.

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
        interval: float | Callable[[], float],
        failure: str,
        *,
        join_seconds: float = 60.0,
        until_idle: bool = False,
        delay_first: bool = False,
        logger: logging.Logger = LOGGER,
    ) -> None:
        self._loop_name = name
        self._loop_step = step
        self._loop_interval = interval
        self._loop_failure = failure
        self._loop_join_seconds = join_seconds
        self._loop_until_idle = until_idle  # a pass that found work is followed at once
        self._loop_delay_first = delay_first  # sleep before the first pass, not after it
        self._loop_logger = logger  # the owner's, so failures are logged under its name
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def stopping(self) -> bool:
        """True once ``stop`` was called: a long pass may end early."""
        return self._stop.is_set()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self._loop_name, daemon=True)
        self._thread.start()

    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def notify(self, *_: object) -> None:
        """End the current sleep: there is work (what the caller says of it is not needed)."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self._loop_join_seconds)
            self._thread = None

    def _sleep(self) -> None:
        interval = self._loop_interval
        self._wake.wait(interval() if callable(interval) else interval)
        self._wake.clear()

    def _run(self) -> None:
        if self._loop_delay_first:
            self._sleep()
        while not self._stop.is_set():
            try:
                busy = self._loop_step()
            except Exception:
                self._loop_logger.exception(self._loop_failure)
                busy = False
            if not (self._loop_until_idle and busy) and not self._stop.is_set():
                self._sleep()
